r"""The price method (``method="price"``): weighted loads and memory budgets at scale.

For client-weighted loads or a memory knapsack the problem is a MIP, but its LP
relaxation is almost integral: at optimal expert prices nearly every client's best
choice is unambiguous, and a basic optimal solution has only about one or two
fractional clients per binding row. The method works on that structure:

1. **Prices.** Start from ``options["prices"]`` (``stats["expert_prices"]`` of an
   earlier round) or, cold, from the same steps on nested random samples of the
   clients (a quarter each, load bounds scaled, down to :data:`SAMPLE_MIN` clients,
   whose core is everyone). One pass over the fitness matrix gives each client's
   ``k_max + prune_margin`` best *candidates* at the prices; damped weighted
   tâtonnement steps on the candidates (:mod:`.dual`) bring the loads near their
   bounds. Handed-over prices that leave more than :data:`STALE_SHARE` of the load
   outside the bounds are dropped for a cold start (``stats["stale_prices"]``).
2. **Core.** The clients whose choice the prices leave uncertain (smallest slack per
   unit of weight, or a memory budget that binds among their candidates) form the
   core; everyone else is frozen at its choice. The core's LP relaxation (HiGHS,
   :mod:`.core`) against the load the frozen clients leave gives new prices; a frozen
   client whose best choice at the new prices differs from its frozen one (a
   complementary-slackness failure that would cost bound) joins the core and the LP
   is solved again. An elastic slack in use opens more clients around its expert.
3. **Assignment.** Relax and fix (:mod:`.rounding`): the core LP's integral clients
   keep their LP choice, a small MIP (HiGHS, stopped at an absolute gap of a quarter
   of the allowed one) decides the fractional ones; frozen clients keep theirs.
4. **Bound.** :func:`~flexassign.backends._certify.price_bound` at the final prices
   (and the core's memory prices), evaluated in float64 with its rounding error:
   valid for *any* prices (weak Lagrangian duality, docs/problem.md), so the reported
   ``bound`` and ``gap`` are true whatever the steps above did. When the gap is above
   the target (``mip_gap``, default :data:`DEFAULT_GAP`) the core doubles and steps 2-4
   repeat, up to ``max_rounds``; the result is ``FEASIBLE`` with its gap (``OPTIMAL``
   only when the bound meets the objective).
5. **Never open-ended.** Without a ``time_limit`` the method keeps to :data:`BUDGET`
   seconds: a core LP that would run past it stops, and the best assignment so far
   comes back with its gap (or, if there is none, ``greedy-balanced``'s with the price
   bound at the last prices, ``stats["fallback"]``).

Options: ``prices`` (expert prices, ``flow``'s convention: a bonus per unit of load,
added to fitness as :math:`S_{ce} + w_c p_e`), ``prune_margin`` (candidates beyond
capacity, default 3), ``max_rounds`` (default 8).

Stats: ``expert_prices`` (pass them back next round), ``price_source``
(``"options"``, ``"sample"``), ``stale_prices``, ``levels`` (sample sizes),
``core_clients``, ``core_pairs``, ``rounds``, ``reopened`` (per round), ``lp_time``,
``mip_time``, ``bound_time``, ``price_bound_error``, ``gap_target``, ``solve_time``.

Examples
--------
>>> import numpy as np
>>> from flexassign import AssignmentProblem, solve_assignment
>>> rng = np.random.default_rng(0)
>>> w = np.round(rng.lognormal(3.0, 0.8, size=400)) + 1
>>> p = AssignmentProblem.balanced(rng.random((400, 8)), capacity=2, tolerance=0.1,
...                                client_weight=w)
>>> res = solve_assignment(p, method="price")
>>> res.success, res.gap <= 1e-4
(True, True)
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
from .dual import loads, price_steps
from .rounding import relax_and_fix
from .state import CoreSet, Infeasible, budget_breakers, excess_share
from .view import Candidates, View, candidates, choose, make_view, reprice

__all__ = [
    "BUDGET",
    "DEFAULT_GAP",
    "PROOF_PAIRS",
    "PROOF_SECONDS",
    "SAMPLE_MIN",
    "STALE_SHARE",
    "solve",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Relative gap the method stops at when ``mip_gap`` is not given.
DEFAULT_GAP = 1e-4
#: A cold start solves nested samples (a quarter each) while above this many clients
#: (or 16 per expert).
SAMPLE_MIN = 2000
#: Handed-over prices leaving more than this share of the load outside the bounds
#: (after the tâtonnement steps) are dropped for a cold start.
STALE_SHARE = 0.25
#: Tâtonnement steps on the candidates before the first core.
_STEPS = 12
#: The same on a sample level (its core LP follows at once).
_LEVEL_STEPS = 6
#: Core LP rounds per sample level, and the frozen clients' total gain (relative to the
#: objective) below which its prices count as the level's LP duals.
_LEVEL_ROUNDS = 3
_LEVEL_GAIN = 1e-5
#: Each sample level keeps this share of the clients of the one above.
_SAMPLE_SHARE = 0.125
#: First core: this many times the share of load outside the bounds, of the clients,
#: and at least ``_CORE_MIN_PER_EXPERT`` per expert plus ``_CORE_MIN``.
_CORE_EXCESS = 4.0
_CORE_MIN = 200
_CORE_MIN_PER_EXPERT = 4
#: ... and at most this many times that minimum (a large first core costs a slow LP;
#: a small one grows by warm re-solves).
_CORE_MAX_FACTOR = 4
#: Frozen clients' total Lagrangian gain at the new prices below this share of the gap
#: budget: no further LP round, the rounding runs.
_GAIN_SHARE = 0.25
#: Seconds the method keeps to when no ``time_limit`` is given (a core LP that would run
#: past it stops; the best assignment so far, or the fallback, comes back with its gap).
BUDGET = 60.0
#: Problems with at most this many pairs whose gap stays above the target go to HiGHS
#: (warm-started, at most ``PROOF_SECONDS``): the core is everyone there anyway.
PROOF_PAIRS = 4096
PROOF_SECONDS = 5.0
#: A round that does not bring the gap below this share of the last one is the last.
_PROGRESS = 0.8
#: Share of the gap budget the rounding MIP may leave.
_MIP_SHARE = 0.25


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


def _first_core(run: CoreSet) -> None:
    view = run.view
    share = excess_share(view, loads(view, run.cand.idx, run.held))
    least = _CORE_MIN + _CORE_MIN_PER_EXPERT * view.e
    k = max(least, min(math.ceil(_CORE_EXCESS * share * view.n), _CORE_MAX_FACTOR * least))
    run.core |= budget_breakers(view, run.cand, run.held)
    run.open_smallest(min(k, view.n))


def _level_prices(
    view: View, prices: FloatArray, m: int, options: SolveOptions, deadline: float | None = None
) -> FloatArray:
    """Prices for a sample level: candidates, steps, and core LP rounds (frozen clients
    whose choice the new prices change join the core, largest gain first) until the
    prices are the level's LP duals or ``_LEVEL_ROUNDS`` ran; no rounding."""
    cand = candidates(view, prices, m)
    p = price_steps(view, cand, prices, steps=_LEVEL_STEPS)
    cand = reprice(cand, view.w, p - prices)
    run = CoreSet(view, cand, options, {})
    if view.n <= max(SAMPLE_MIN, 16 * view.e):
        run.core[:] = True
    else:
        _first_core(run)
    try:
        for _ in range(_LEVEL_ROUNDS):
            run.lp(deadline)
            assert run.prices is not None
            gain, new = run.refresh(run.prices, m)
            scale = max(abs(run.frozen_value()), 1.0)
            bad = np.flatnonzero(gain > 1e-12 * scale)
            if bad.size == 0 or float(gain.sum()) <= _LEVEL_GAIN * scale:
                break
            run.adopt(new, np.flatnonzero(run.core))
            run.core[bad] = True
            run.adopt(new, bad)
    except (Infeasible, RuntimeError):
        return p if run.prices is None else run.prices
    return p if run.prices is None else run.prices


def _cold_prices(
    view: View,
    m: int,
    rng: np.random.Generator,
    options: SolveOptions,
    levels: list[int],
    deadline: float | None = None,
) -> FloatArray:
    """Prices from nested random samples, smallest first (zero for a small view)."""
    if view.n <= max(SAMPLE_MIN, 16 * view.e):
        return np.zeros(view.e)
    sub = view.sample(rng, _SAMPLE_SHARE)
    p = _cold_prices(sub, m, rng, options, levels, deadline)
    levels.append(sub.n)
    return _level_prices(sub, p, m, options, deadline)


def _assemble(
    problem: AssignmentProblem, run: CoreSet, pairs: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Fixed pairs, frozen clients' choices and the core's rounded pairs."""
    n, e = problem.shape
    x = np.zeros((n, e), dtype=bool) if problem.fixed is None else problem.fixed.copy()
    view = run.view
    r, c = np.nonzero(run.held & ~run.core[:, None])
    x[view.index(r), run.cand.idx[r, c]] = True
    lp = run.lp_sol
    assert lp is not None
    take = np.flatnonzero(pairs)
    x[view.index(lp.clients[lp.pair_client[take]]), lp.pair_expert[take]] = True
    return x


def _options(extra: Any) -> tuple[int, int, FloatArray | None]:
    margin = int(extra.get("prune_margin") or 3)
    rounds = int(extra.get("max_rounds") or 8)
    prices = extra.get("prices")
    if prices is not None:
        prices = np.asarray(prices, dtype=np.float64)
    return max(1, margin), max(1, rounds), prices


def _fallback(
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


def _start(
    view: View,
    m: int,
    given: FloatArray | None,
    options: SolveOptions,
    stats: dict[str, Any],
    deadline: float | None = None,
) -> tuple[FloatArray, Candidates]:
    """Starting prices and the candidates at them (handed over, or cold)."""
    if given is not None:
        p0 = -given  # flow's convention (a bonus) -> a cost per unit of load
        cand = candidates(view, p0, m)
        prices = price_steps(view, cand, p0, steps=_STEPS)
        cand = reprice(cand, view.w, prices - p0)
        held, _ = choose(cand.val, view.cap, view.kmin)
        share = excess_share(view, loads(view, cand.idx, held))
        stats["price_source"] = "options"
        stats["initial_excess"] = share
        if share <= STALE_SHARE:
            return prices, cand
        stats["stale_prices"] = f"{share:.0%} of the load outside the bounds"
    levels: list[int] = []
    p0 = _cold_prices(view, m, np.random.default_rng(options.seed), options, levels, deadline)
    stats["price_source"] = "sample" if levels else "zero"
    stats["levels"] = levels
    cand = candidates(view, p0, m)
    prices = price_steps(view, cand, p0, steps=_STEPS)
    return prices, reprice(cand, view.w, prices - p0)


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    margin, max_rounds, given = _options(options.extra)
    target = DEFAULT_GAP if options.mip_gap is None else float(options.mip_gap)
    stats: dict[str, Any] = {"gap_target": target}
    view = make_view(problem)
    if np.any(view.kmin > view.cap):
        return BackendOutput(
            Status.INFEASIBLE,
            message="a client must take more experts than it may (min_experts)",
            stats=stats,
        )
    m = min(int(view.cap.max(initial=0)) + margin, view.e)
    # never open-ended: without a time_limit the method keeps to BUDGET seconds
    budget_s = BUDGET if options.time_limit is None else float(options.time_limit)
    deadline = t0 + budget_s
    _, cand = _start(view, m, given, options, stats, deadline)
    stats["price_time"] = time.perf_counter() - t0
    run = CoreSet(view, cand, options, stats)
    _first_core(run)
    best: tuple[float, NDArray[np.bool_], float] | None = None
    reopened: list[int] = []
    rounds = 0
    try:
        while rounds < max_rounds:
            rounds += 1
            run.lp(deadline)
            assert run.prices is not None and run.lp_sol is not None
            assert run.lp_frozen is not None
            gain, new = run.refresh(run.prices, m)
            scale = max(abs(run.frozen_value()), 1.0)
            budget = target * scale
            bad = np.flatnonzero(gain > 1e-12 * scale)
            if bad.size and float(gain.sum()) > _GAIN_SHARE * budget and rounds < max_rounds:
                # open the largest gains until what stays frozen would cost little
                order = bad[np.argsort(-gain[bad], kind="stable")]
                rest = float(gain.sum()) - np.cumsum(gain[order])
                bad = order[: int(np.searchsorted(-rest, -_GAIN_SHARE * budget * 0.5)) + 1]
                run.adopt(new, np.flatnonzero(run.core))
                run.core[bad] = True
                run.adopt(new, bad)
                reopened.append(int(bad.size))
                continue
            t = time.perf_counter()
            pairs = relax_and_fix(
                view,
                run.lp_sol,
                run.lp_frozen,
                options,
                abs_gap=_MIP_SHARE * budget,
                time_limit=_left(deadline),
                stats=stats,
            )
            stats["mip_time"] = stats.get("mip_time", 0.0) + time.perf_counter() - t
            if pairs is not None:
                x = _assemble(problem, run, pairs)
                obj = problem.objective(x)
                t = time.perf_counter()
                ub, err = upper_bound(problem, run.prices, run.mem)
                stats["bound_time"] = stats.get("bound_time", 0.0) + time.perf_counter() - t
                if best is None or obj > best[0]:
                    best = (obj, x, min(ub, best[2]) if best else ub)
                    stats["expert_prices"] = -run.prices
                    stats["price_bound_error"] = err
                else:
                    best = (best[0], best[1], min(best[2], ub))
                gap = max(best[2] - best[0], 0.0) / max(abs(best[0]), 1.0)
                history = stats.setdefault("gap_rounds", [])
                stalled = bool(history) and gap > _PROGRESS * history[-1]
                history.append(gap)
                if gap <= target or stalled or run.core.all():
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    break
            run.adopt(new, np.flatnonzero(run.core))
            grow = max(int(run.core.sum()), 64)
            run.open_smallest(grow)
            reopened.append(grow)
    except Infeasible as exc:
        if best is None:
            return BackendOutput(Status.INFEASIBLE, message=f"price method: {exc}", stats=stats)
    except RuntimeError as exc:  # a core LP ran out of time: keep what there is
        stats["stopped"] = str(exc)
    stats.update(
        rounds=rounds,
        reopened=reopened,
        core_clients=int(run.core.sum()),
        solve_time=time.perf_counter() - t0,
    )
    if best is None:
        return _fallback(
            problem, options, f"no feasible assignment in {rounds} rounds", stats, run.prices
        )
    obj, x, ub = best
    status = Status.OPTIMAL if ub <= obj else Status.FEASIBLE
    out = BackendOutput(status, x=x, bound=ub, stats=stats)
    gap = max(ub - obj, 0.0) / max(abs(obj), 1.0)
    n, e = problem.shape
    if gap > target and n * e <= PROOF_PAIRS:
        out = _prove(problem, options, out, deadline)
    return out


def _prove(
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
