r"""The price method (``method="price"``): weighted loads and memory budgets at scale.

For client-weighted loads or a memory knapsack the problem is a MIP, but its LP
relaxation is almost integral: at optimal expert prices nearly every client's best
choice is unambiguous, and a basic optimal solution has only about one or two
fractional clients per binding row. The method works on that structure:

1. **Prices.** From ``options["prices"]`` (``stats["expert_prices"]`` of an earlier
   round; prices that leave more than :data:`STALE_SHARE` of the load outside the
   bounds after a few tâtonnement steps are dropped: ``stats["stale_prices"]``) or,
   cold, from nested random samples of the clients (:data:`_SAMPLE_SHARE` each, down
   to :data:`SAMPLE_MIN` clients or ``_PER_EXPERT`` per expert). The smallest sample,
   and any of at most ``_WHOLE_SAMPLE`` times a core's starting size, is solved whole
   (:mod:`.whole`); every larger level starts from the prices of the one below.
2. **LP relaxation, level by level** (:mod:`.trust`): candidates (one blocked pass),
   a few damped tâtonnement steps (:mod:`.dual`, the best prices they visit), then
   core LPs inside a trust region of prices: clients whose choice cannot change
   inside the box are frozen, the rest form a core of a few thousand clients whose LP
   (HiGHS, one object, each box started from a dual feasible basis at its prices,
   :meth:`.lp.CoreLP.crash`) gives the box's best prices; the box moves until the
   prices settle inside it, which makes them the LP duals of the whole level.
3. **Assignment** (:mod:`.fix`): frozen clients keep their choice, the LP's integral
   clients theirs, fractional clients their largest LP values; moves over every
   client's candidate pairs (at most :data:`FIX_CLIENTS` clients: the LP's and those
   closest to changing), priced by what they cost the objective, bring every load
   inside its bounds, and gaining moves follow while the gap is above a quarter of
   the target. When that repair fails, the rounding MIP (:mod:`.rounding`) takes over.
4. **Bound** (:mod:`.bound`): the price (Lagrangian) bound at the final prices and
   memory duals, one blocked top-k pass with its float64 rounding bounded: valid for
   *any* prices (docs/problem.md), so the reported ``bound`` and ``gap`` are true
   whatever the steps above did. The result is ``FEASIBLE`` with its gap (``OPTIMAL``
   only when the bound meets the objective); problems of at most
   :data:`PROOF_PAIRS` pairs whose gap is above the target (``mip_gap``, default
   :data:`DEFAULT_GAP`) go to HiGHS for at most :data:`PROOF_SECONDS`.
5. **Never open-ended.** Without a ``time_limit`` the method keeps to :data:`BUDGET`
   seconds: an LP that would run past it stops, and ``greedy-balanced``'s assignment
   comes back with the price bound at the last prices (``stats["fallback"]``).

Options: ``prices`` (expert prices, ``flow``'s convention: a bonus per unit of load,
added to fitness as :math:`S_{ce} + w_c p_e`), ``prune_margin`` (candidates beyond
capacity, default 3), ``max_rounds`` (trust-region moves per sample level before the
level's LP is solved without a box, default :data:`~.trust.MAX_MOVES`).

Stats: ``expert_prices`` (pass them back next round), ``price_source``
(``"options"``, ``"sample"``, ``"zero"``), ``stale_prices``, ``levels`` (sample
sizes), ``core_sizes``, ``moves``, ``core_clients``, ``lp_solves``, ``lp_time``,
``repaired``, ``repair_time``, ``improved`` (objective the gaining moves added),
``round_time``, ``bound_time``, ``price_bound_error``, ``gap_target``,
``solve_time``; with the MIP fallback ``fractional_clients``, ``mip_clients``,
``mip_time``.

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

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...problem import AssignmentProblem
from ...result import Status
from ..base import BackendOutput, SolveOptions
from .bound import upper_bound
from .dual import loads, price_steps
from .fallback import PROOF_SECONDS
from .fallback import fallback as _fallback
from .fallback import prove as _prove
from .fix import improve, repair, start
from .rounding import relax_and_fix
from .trust import MAX_MOVES, Infeasible, LevelSolution, Struggle, solve_level
from .view import Candidates, View, candidates, choose, make_view, reprice
from .whole import solve_whole

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
#: The smallest sample level of a cold start has at least this many clients and
#: ``_PER_EXPERT`` per expert; it is solved whole. 500 and 2 rather than 1,000 and 4
#: (levels 512 -> 1,225 -> 3,500 on weighted 10,000 x 256): the LP relaxation's CPU
#: time over three tuning seeds 2.13 s instead of 2.35 s, 100,000 x 64 4.14 s
#: instead of 4.75 s (from zero prices the smallest level's LP costs the most).
SAMPLE_MIN = 500
_PER_EXPERT = 2
#: ... with a binding knapsack (the 100,000 x 64 cell: 34.1 s instead of 32.7 s over
#: two seeds with 500 and 2).
_KNAPSACK_MIN = 1000
_KNAPSACK_PER_EXPERT = 4
#: Each sample level keeps this share of the clients of the one above (a quarter with
#: a binding knapsack: the 100,000 x 64 cell 21 s instead of 24 s). Weighted
#: 10,000 x 256: 0.3, 0.42 and 0.5 cost more (0.3 restarted on one seed).
_SAMPLE_SHARE = 0.35
_KNAPSACK_SHARE = 0.25
#: Handed-over prices leaving more than this share of the load outside the bounds
#: (after the tâtonnement steps) are dropped for a cold start.
STALE_SHARE = 0.25
#: Tâtonnement steps on the smallest sample level's candidates before its LP (none:
#: on 10,000 x 256 with log-normal weights they left worse prices, 1.4 s instead of
#: 0.8 s for the level, and on 100,000 x 64 1.0 s instead of 0.8 s).
_STEPS = 0
#: ... on a level above a solved sample level (its prices are close already; the
#: steps keep the best prices they visit, :func:`.dual.price_steps`).
_TOP_STEPS = 4
#: ... on a sample level solved whole above the smallest (weighted 10,000 x 256: the
#: LP relaxation's CPU time over three tuning seeds 1.70-1.75 s instead of 1.88-1.94 s
#: with 4 steps, 2.5 s with none; 100,000 x 64 the same within noise).
_UP_STEPS = 2
#: ... on the whole problem from handed-over prices.
_WARM_STEPS = 8
#: ... before the smallest sample's LP when the top level's core grew past half of the
#: clients from the first prices (a low-rank 10,000 x 256 weighted problem: its core
#: reached every client, LPs of seconds each; with the steps it settled at 3,100).
_RETRY_STEPS = 4
#: Core clients a trust-region LP starts from: this many plus ``_CORE_PER_EXPERT`` per
#: expert (views up to that size are solved whole). 500 rather than 1,500: LP
#: relaxations of weighted 10,000 x 256 in 0.87 / 1.17 / 0.86 s instead of 1.01 /
#: 1.08 / 0.88 s (three seeds), 100,000 x 64 about 10% faster, the knapsack cell alike.
_CORE = 500
#: Trust-region moves on a sample level (its prices need not be exact; a low-rank
#: 10,000 x 256 weighted problem's 3,500-client level did not settle in 12, its LPs
#: growing to seconds each).
_SAMPLE_MOVES = 4
#: Views up to this many clients get fresh candidates after the tâtonnement steps.
_FRESH = 20000
#: Candidates beyond ``prune_margin`` for a view solved whole.
_WHOLE_MARGIN = 3
_CORE_PER_EXPERT = 8
#: Sample levels of at most this many times a core's starting size (:func:`_target`)
#: are solved whole (:mod:`.whole`): their trust-region cores held most of their
#: clients anyway. Weighted 10,000 x 256 (the 3,500-client level, 1.4 times): the LP
#: relaxation in 0.72 / 0.68 / 0.68 s instead of 1.09 / 0.71 / 1.21 s (seeds 1, 3, 4),
#: one LP at that level instead of up to four moves that did not settle.
_WHOLE_SAMPLE = 2.0
#: Seconds the method keeps to when no ``time_limit`` is given (an LP that would run
#: past it stops; the best assignment so far, or the fallback, comes back with its gap).
BUDGET = 60.0
#: Problems with at most this many pairs whose gap stays above the target go to HiGHS
#: (warm-started, at most ``PROOF_SECONDS``).
PROOF_PAIRS = 4096
#: Share of the gap budget the rounding MIP may leave.
_MIP_SHARE = 0.25
#: The repaired assignment is improved (:func:`.fix.improve`) while its gap is above
#: this share of the target.
_IMPROVE_AT = 0.25
#: Load tolerance of the repair, relative to the largest load bound (the verifier
#: allows 1e-9).
_FIX_TOL = 1e-11
#: Clients the repair may move at most: the LP's and the frozen ones whose choice is
#: closest to changing (1,000,000 x 64: all of them took 5 s, more than greedy).
FIX_CLIENTS = 40_000


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


def _target(view: View) -> int:
    return _CORE + _CORE_PER_EXPERT * view.e


def _levels(view: View, rng: np.random.Generator) -> list[View]:
    """The view and its nested random samples, largest first."""
    views = [view]
    if view.size is None:
        least, share = max(SAMPLE_MIN, _PER_EXPERT * view.e), _SAMPLE_SHARE
    else:
        least = max(_KNAPSACK_MIN, _KNAPSACK_PER_EXPERT * view.e)
        share = _KNAPSACK_SHARE
    while True:
        top = views[-1]
        k = max(round(share * top.n), least)
        if 2 * k > top.n:
            return views
        views.append(top.sample(rng, k / top.n))


def _level(
    view: View,
    prices: FloatArray,
    m: int,
    options: SolveOptions,
    stats: dict[str, Any],
    deadline: float | None,
    *,
    steps: int,
    whole: bool = False,
    cand: Candidates | None = None,
    max_core: int | None = None,
) -> LevelSolution:
    """Candidates, tâtonnement steps and the trust-region LPs of one view."""
    if whole:  # more candidates: fewer column generation rounds
        m = min(m + _WHOLE_MARGIN, view.e)
    if cand is None:
        cand = candidates(view, prices, m)
    target = _target(view)
    # the steps ignore memory budgets: with a binding knapsack they mislead (measured:
    # the 100,000 x 64 cell's last core 27k clients with them, 23k without)
    if steps and view.size is None:
        p2 = price_steps(view, cand, prices, steps=steps)
        if whole or view.n <= _FRESH:  # fresh candidates (cheap here)
            cand = candidates(view, p2, m)
        else:  # the core's candidates are refreshed by the trust region
            cand = reprice(cand, view.w, p2 - prices)
        prices = p2
    exact = view.rows is None
    if whole:
        return solve_whole(view, prices, cand, options, stats, exact=exact, deadline=deadline)
    return solve_level(
        view,
        prices,
        cand,
        options,
        stats,
        target=target,
        max_moves=stats.get("max_rounds", MAX_MOVES) if exact else _SAMPLE_MOVES,
        deadline=deadline,
        exact=exact,
        max_core=max_core,
    )


def _relax(
    view: View,
    m: int,
    given: FloatArray | None,
    options: SolveOptions,
    stats: dict[str, Any],
    deadline: float | None,
) -> LevelSolution:
    """The LP relaxation at the whole view, warm (handed prices) or through samples."""
    if given is not None:
        p0 = -given  # flow's convention (a bonus) -> a cost per unit of load
        cand = candidates(view, p0, m)
        prices = p0
        if view.size is None:  # (the steps ignore memory budgets)
            prices = price_steps(view, cand, p0, steps=_WARM_STEPS)
            cand = reprice(cand, view.w, prices - p0)
        held, _ = choose(cand.val, view.cap, view.kmin)
        share = _excess_share(view, loads(view, cand.idx, held))
        stats["price_source"] = "options"
        stats["initial_excess"] = share
        if share <= STALE_SHARE:
            return _level(view, prices, m, options, stats, deadline, steps=0, cand=cand)
        stats["stale_prices"] = f"{share:.0%} of the load outside the bounds"
    views = _levels(view, np.random.default_rng(options.seed))
    stats["price_source"] = "sample" if len(views) > 1 else "zero"
    stats["levels"] = [v.n for v in views[:0:-1]]
    try:
        return _cold(views, m, options, stats, deadline, _STEPS, view.n // 2)
    except Struggle as exc:  # sample prices the top level could not settle from
        stats["retried"] = str(exc)
        return _cold(views, m, options, stats, deadline, _RETRY_STEPS, None)


def _cold(
    views: list[View],
    m: int,
    options: SolveOptions,
    stats: dict[str, Any],
    deadline: float | None,
    first_steps: int,
    max_core: int | None,
) -> LevelSolution:
    """The LP relaxation of ``views[0]`` through its samples ``views[1:]``, the
    smallest first (``first_steps`` tâtonnement steps before it); raises
    :class:`~.trust.Struggle` when the top level's core grows past ``max_core``."""
    prices = np.zeros(views[0].e)
    for v in views[:0:-1]:
        whole = v is views[-1] or v.n <= _WHOLE_SAMPLE * _target(v)
        steps = first_steps if v is views[-1] else _TOP_STEPS if not whole else _UP_STEPS
        prices = _level(v, prices, m, options, stats, deadline, steps=steps, whole=whole).prices
        stats["price_time"] = time.perf_counter() - stats["t0"]
    steps = first_steps if len(views) == 1 else _TOP_STEPS
    return _level(
        views[0],
        prices,
        m,
        options,
        stats,
        deadline,
        steps=steps,
        whole=len(views) == 1,
        max_core=max_core,
    )


def _excess_share(view: View, load: FloatArray) -> float:
    over = np.where(np.isfinite(view.hi), np.maximum(load - view.hi, 0.0), 0.0)
    under = np.maximum(view.lo - load, 0.0)
    total = float(np.dot(view.w, view.cap)) or 1.0
    return float(over.sum() + under.sum()) / total


def _assemble(
    problem: AssignmentProblem, view: View, lev: LevelSolution, pairs: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Fixed pairs, frozen clients' choices and the core's rounded pairs."""
    n, e = problem.shape
    x = np.zeros((n, e), dtype=bool) if problem.fixed is None else problem.fixed.copy()
    x[view.index(lev.frozen_rows), lev.frozen_experts] = True
    take = np.flatnonzero(pairs)
    x[view.index(lev.clients[lev.pair_client[take]]), lev.pair_expert[take]] = True
    return x


def _options(extra: Any) -> tuple[int, int, FloatArray | None]:
    margin = int(extra.get("prune_margin") or 3)
    rounds = int(extra.get("max_rounds") or MAX_MOVES)
    prices = extra.get("prices")
    if prices is not None:
        prices = np.asarray(prices, dtype=np.float64)
    return max(1, margin), max(1, rounds), prices


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    margin, rounds, given = _options(options.extra)
    target = DEFAULT_GAP if options.mip_gap is None else float(options.mip_gap)
    stats: dict[str, Any] = {"gap_target": target, "t0": t0, "max_rounds": rounds}
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
    try:
        lev = _relax(view, m, given, options, stats, deadline)
    except Infeasible as exc:
        stats.pop("t0", None)
        return BackendOutput(Status.INFEASIBLE, message=f"price method: {exc}", stats=stats)
    except RuntimeError as exc:  # an LP ran out of time
        stats.pop("t0", None)
        stats["stopped"] = str(exc)
        return _fallback(problem, options, str(exc), stats)
    stats.pop("t0", None)
    stats["relax_time"] = time.perf_counter() - t0
    stats["core_clients"] = int(lev.clients.size)
    stats["lp_converged"] = lev.converged
    t = time.perf_counter()
    lp_value = float(view.scores(lev.frozen_rows, lev.frozen_experts).sum()) + float(
        np.dot(lev.x, view.scores(lev.clients[lev.pair_client], lev.pair_expert))
    )
    scale = max(abs(lp_value), 1.0)
    stats["lp_value"] = lp_value
    mem = None if lev.mem is None else _full(problem, view, lev.mem)
    ub, err = upper_bound(problem, lev.prices, mem)
    stats["bound_time"] = time.perf_counter() - t
    t = time.perf_counter()
    x = _fix(problem, view, lev, ub, target, stats)
    n, e = problem.shape
    repaired = None if x is None else problem.objective(x)
    short = repaired is not None and ub - repaired > target * max(abs(repaired), 1.0)
    # the rounding MIP when the repair failed, or (weighted loads, above the size of the
    # HiGHS proof below) left the gap above the target; not with a knapsack, whose gaps
    # sit above the default target (2.8e-4 on 100,000 x 64): the MIP would run every time
    second = short and n * e > PROOF_PAIRS and view.size is None
    if x is None or second:
        pairs = relax_and_fix(
            view,
            lev,
            options,
            abs_gap=_MIP_SHARE * target * scale,
            time_limit=_left(deadline),
            stats=stats,
        )
        if pairs is not None:
            y = _assemble(problem, view, lev, pairs)
            y_obj = problem.objective(y)
            if repaired is None or y_obj > repaired:
                x, repaired = y, y_obj
        if x is None:
            why = "the rounding found nothing feasible"
            return _fallback(problem, options, why, stats, lev.prices)
    stats["round_time"] = time.perf_counter() - t
    obj = problem.objective(x) if repaired is None else repaired
    stats["price_bound_error"] = err
    stats["expert_prices"] = -lev.prices
    stats["solve_time"] = time.perf_counter() - t0
    status = Status.OPTIMAL if ub <= obj else Status.FEASIBLE
    out = BackendOutput(status, x=x, bound=ub, stats=stats)
    gap = max(ub - obj, 0.0) / max(abs(obj), 1.0)
    if gap > target and n * e <= PROOF_PAIRS:
        out = _prove(problem, options, out, deadline)
    return out


def _fix(
    problem: AssignmentProblem,
    view: View,
    lev: LevelSolution,
    ub: float,
    target: float,
    stats: dict[str, Any],
) -> NDArray[np.bool_] | None:
    """Round, repair and (while the gap to ``ub`` is above half of ``target``)
    improve (:mod:`.fix`); ``None`` when the repair cannot meet the load bounds."""
    t = time.perf_counter()
    pairs = start(view, lev, FIX_CLIENTS)
    finite = np.concatenate([np.abs(view.lo), np.abs(view.hi[np.isfinite(view.hi)])])
    tol = _FIX_TOL * max(1.0, float(finite.max(initial=0.0)))
    ok = repair(view, pairs, tol)
    stats["repaired"] = ok
    stats["repair_time"] = time.perf_counter() - t
    if not ok:
        return None
    fixed = 0.0 if problem.fixed is None else float(problem.fitness[problem.fixed].sum())
    obj = fixed + float(pairs.score[pairs.held].sum())
    obj += float(view.scores(pairs.out_rows, pairs.out_experts).sum())
    if max(ub - obj, 0.0) > _IMPROVE_AT * target * max(abs(obj), 1.0):
        stats["improved"] = improve(view, pairs, tol)
    n, e = problem.shape
    x = np.zeros((n, e), dtype=bool) if problem.fixed is None else problem.fixed.copy()
    h = pairs.held
    x[view.index(pairs.client[h]), pairs.expert[h]] = True
    x[view.index(pairs.out_rows), pairs.out_experts] = True
    return x


def _full(problem: AssignmentProblem, view: View, mem: FloatArray) -> FloatArray:
    """Per-client memory prices of the view on the whole problem's rows."""
    out = np.zeros(problem.n_clients)
    out[view.index(np.arange(view.n))] = mem
    return out
