"""When the price method stops short: a fallback assignment, or a HiGHS proof.

* :func:`fallback`: ``greedy-balanced``'s assignment (through the registry) with the
  price bound at the last prices when it is feasible, else ``lp-round``.
* :func:`prove`: small problems whose gap stays above the target go to HiGHS,
  warm-started from the price method's assignment.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...problem import AssignmentProblem
from ...result import Status
from ..base import BackendOutput, SolveOptions
from .bound import upper_bound

__all__ = ["PROOF_SECONDS", "fallback", "prove"]

FloatArray = NDArray[np.float64]

#: Seconds a HiGHS proof may take at most.
PROOF_SECONDS = 5.0


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


def fallback(
    problem: AssignmentProblem,
    options: SolveOptions,
    why: str,
    stats: dict[str, Any],
    prices: FloatArray | None = None,
) -> BackendOutput:
    """When the price method found nothing: ``greedy-balanced`` (through the registry)
    with the price bound at the last prices when it is feasible, else ``lp-round``."""
    from ...verify import verify_assignment
    from ..options import LP_ROUND
    from ..registry import get_backend

    quick = get_backend("greedy-balanced").load()(problem, SolveOptions(seed=options.seed))
    if quick.x is not None and verify_assignment(problem, quick.x).ok:
        ub, err = upper_bound(problem, np.zeros(problem.n_experts) if prices is None else prices)
        quick.bound = ub
        quick.status = Status.FEASIBLE
        quick.stats.update(
            fallback=f"price: {why}; greedy-balanced, with the price bound",
            price_bound_error=err,
            price_stats=stats,
        )
        return quick
    extra = {s.name: s.default for s in LP_ROUND}
    out = get_backend("lp-round").load()(
        problem,
        SolveOptions(
            time_limit=options.time_limit,
            mip_gap=options.mip_gap,
            seed=options.seed,
            threads=options.threads,
            verbose=options.verbose,
            extra=extra,
        ),
    )
    out.stats["fallback"] = f"price: {why}; solved by lp-round"
    out.stats["price_stats"] = stats
    return out


def prove(
    problem: AssignmentProblem, options: SolveOptions, out: BackendOutput, deadline: float | None
) -> BackendOutput:
    """Small problems (the core is everyone): HiGHS on the whole problem, warm-started
    from the price method's assignment, for at most :data:`PROOF_SECONDS`; its answer
    (certified by the ``highs`` backend) replaces ours when it is at least as good,
    and the better of the two bounds is kept."""
    from ..options import HIGHS
    from ..registry import get_backend

    backend = get_backend("highs")
    if not backend.installed():
        return out
    left = PROOF_SECONDS if deadline is None else min(PROOF_SECONDS, _left(deadline) or 0.0)
    extra = {s.name: s.default for s in HIGHS}
    extra["warm_start"] = out.x
    t = time.perf_counter()
    got = backend.load()(
        problem,
        SolveOptions(
            time_limit=max(left, 1e-3),
            mip_gap=options.mip_gap,
            seed=options.seed,
            threads=options.threads,
            verbose=options.verbose,
            extra=extra,
        ),
    )
    out.stats["proof_time"] = time.perf_counter() - t
    out.stats["proof_status"] = got.status.value
    assert out.x is not None and out.bound is not None
    ours = problem.objective(out.x)
    if got.x is not None and got.status in (Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT):
        theirs = problem.objective(got.x)
        if theirs >= ours:
            bound = out.bound if got.bound is None else min(out.bound, float(got.bound))
            status = got.status if got.status is Status.OPTIMAL else Status.FEASIBLE
            return BackendOutput(status, x=got.x, bound=bound, stats=out.stats)
    if got.bound is not None and math.isfinite(float(got.bound)):
        out.bound = max(min(out.bound, float(got.bound)), ours)
    return out
