"""MIP backend: :func:`scipy.optimize.milp`, the zero-extra-dependency exact method.

The model is the shared sparse one from
:func:`~flexassign.backends.linear.build_linear_model` (soft load bounds add slack
columns there), with the objective normalised (offset and power-of-two scale,
:func:`~flexassign.backends._normalise.normalise_objective`, a dominant shared offset
through the count phase first; the claim is checked afterwards,
``stats["bound_check"]``). SciPy drives its bundled
HiGHS. Settings: ``time_limit`` (the whole call; SciPy gets what building left), ``mip_gap``
(``mip_rel_gap``; by default 1e-9, so that ``OPTIMAL`` means proven optimal),
``verbose`` (``disp``). SciPy's ``milp`` accepts no warm start, no seed and no thread
count: it has no backend options, and ``threads`` is reported in ``stats`` as ignored.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..problem import AssignmentProblem
from ._common import EXACT_GAP, mip_output, model_stats, prepare_model, solver_time_left
from ._guard import SCIPY_MIN_RESOLUTION, certify
from .base import BackendOutput, SolveOptions

__all__ = ["solve"]


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    from scipy.optimize import Bounds, LinearConstraint, milp

    t0 = time.perf_counter()
    prepared = prepare_model(problem, options, t0)
    if isinstance(prepared, BackendOutput):
        return prepared
    model, norm = prepared
    constraints = LinearConstraint(model.A, model.row_lo, model.row_hi)
    milp_options: dict[str, Any] = {"disp": bool(options.verbose), "presolve": True}
    # prove optimality (HiGHS's default 1e-4 gap is not "optimal") unless asked otherwise
    milp_options["mip_rel_gap"] = EXACT_GAP if options.mip_gap is None else float(options.mip_gap)
    budget = solver_time_left("scipy.optimize.milp", options, t0, model, norm)
    if isinstance(budget, BackendOutput):
        return budget
    left, t_build = budget
    if left is not None:
        milp_options["time_limit"] = left  # building counted against the limit
    res = milp(
        -norm.c,
        integrality=model.integrality,
        bounds=Bounds(model.col_lo, model.col_hi),
        constraints=constraints,
        options=milp_options,
    )
    t_solve = time.perf_counter() - t0 - t_build
    stats = model_stats(
        model,
        norm,
        build_time=t_build,
        solve_time=t_solve,
        solver_status=f"{int(res.status)}: {res.message}",
    )
    if options.threads is not None:
        stats["threads_ignored"] = True
    dual = getattr(res, "mip_dual_bound", None)
    bound = norm.upper(-float(dual)) if dual is not None and np.isfinite(dual) else None
    if getattr(res, "mip_node_count", None) is not None:
        stats["nodes"] = int(res.mip_node_count)
    gap = getattr(res, "mip_gap", None)
    if gap is not None:
        stats["solver_gap"] = float(gap)
    x = None if res.x is None else model.to_assignment(problem.shape, np.asarray(res.x))
    # milp's status: 0 optimal (within mip_rel_gap), 1 time/iteration limit,
    # 2 infeasible, 3 unbounded (impossible with 0/1 columns), 4 other
    outcome = {0: "optimal", 1: "limit", 2: "infeasible"}.get(int(res.status), "error")
    out = mip_output(
        solver="scipy.optimize.milp",
        outcome=outcome,
        x=x,
        bound=bound,
        gap=None if gap is None else float(gap),
        integer=bool(model.integrality.any()),
        detail=f"status {res.status}: {res.message}",
        stats=stats,
    )
    return certify(
        problem,
        model,
        norm.c,
        norm.exponent,
        out,
        options,
        solver="scipy.optimize.milp",
        t0=t0,
        min_resolution=SCIPY_MIN_RESOLUTION,
    )
