"""The smallest view of a cold start, solved whole: the LP relaxation over every
client by column generation in one HiGHS object (:class:`.lp.CoreLP`, warm re-solves).

Columns start as every client's candidates. While an elastic column is in use (a load
bound the columns cannot meet) the clients whose switch to that expert costs least
get the pair; then every client's best choice at the LP's prices is priced out (its
pairs the LP lacks are added) until none is missing, so the prices are the view's LP
duals.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..base import SolveOptions
from .lp import CoreLP
from .trust import Infeasible, LevelSolution
from .view import Candidates, View, candidates, choose, price_out

__all__ = ["solve_whole"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: LP solves (column generation rounds) before the last prices are kept as they are.
ROUNDS = 12
_SLACK_TOL = 1e-9
#: An expert whose elastic column is in use gets pairs of about this many times the
#: missing load, and at least ``_LEAST`` clients.
_GROW = 8.0
#: Share of a sample level's clients that may miss a pair of their best choice.
_LOOSE = 0.05
_LEAST = 16


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


def _more_pairs(
    view: View,
    cand: Candidates,
    h: IntArray,
    prices: FloatArray,
    amount: FloatArray,
    used: IntArray,
    known: NDArray[np.bool_],
) -> tuple[IntArray, IntArray]:
    """Column generation for a whole view whose elastic columns are in use: per
    expert ``e`` in ``used``, the clients without the pair whose switch to ``e`` costs
    least per unit of weight (at ``prices``), about :data:`_GROW` times ``amount[e]`` of
    weight and at least :data:`_LEAST`."""
    n = view.n
    rows = np.arange(n)
    low = np.where(h > 0, cand.val[rows, np.maximum(h - 1, 0)], 0.0)
    low = np.where(h < view.cap, np.minimum(low, 0.0), low)
    out_c: list[IntArray] = []
    out_e: list[IntArray] = []
    for ex in used.tolist():
        lack = ~known[:, ex] & (view.cap > 0)
        if view.free is not None:
            lack &= view.free[view.index(rows), ex]
        cand_rows = np.flatnonzero(lack)
        if cand_rows.size == 0:
            continue
        a = view.fitness[view.index(cand_rows), ex] - view.w[cand_rows] * prices[ex]
        cost = (low[cand_rows] - a) / view.w[cand_rows]
        order = cand_rows[np.argsort(cost, kind="stable")]
        cw = np.cumsum(view.w[order])
        k = max(_LEAST, int(np.searchsorted(cw, _GROW * float(amount[ex]))) + 1)
        pick = order[:k]
        out_c.append(pick.astype(np.int64))
        out_e.append(np.full(pick.size, ex, dtype=np.int64))
    if not out_c:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_c), np.concatenate(out_e)


def solve_whole(
    view: View,
    prices: FloatArray,
    cand: Candidates,
    options: SolveOptions,
    stats: dict[str, Any],
    *,
    exact: bool = True,
    deadline: float | None = None,
) -> LevelSolution:
    """The LP relaxation of all of ``view`` (``cand``: candidates at ``prices``);
    ``exact=False`` (a sample level: only its prices matter) stops pricing out once
    fewer than :data:`_LOOSE` of the clients miss a pair."""
    lp = CoreLP(view, options)
    rows = np.arange(view.n)
    pc, slot = np.nonzero(cand.val > -np.inf)
    lp.add_clients(rows)
    lp.add_pairs(pc, cand.idx[pc, slot])
    lp.set_frozen(np.zeros(view.e))
    m = cand.idx.shape[1]
    tol = _SLACK_TOL * float(np.max(view.w, initial=1.0))
    _, h = choose(cand.val, view.cap, view.kmin)
    lp.crash(prices)  # a dual feasible basis at the starting prices
    for _ in range(ROUNDS):
        t = time.perf_counter()
        sol = lp.solve(_left(deadline))
        stats["lp_time"] = stats.get("lp_time", 0.0) + time.perf_counter() - t
        stats["lp_solves"] = stats.get("lp_solves", 0) + 1
        if sol.status != "optimal":
            raise RuntimeError(f"the whole LP was not solved ({sol.status})")
        used = np.flatnonzero(sol.slack > tol)
        if used.size or sol.short.size:
            c, e = _more_pairs(view, cand, h, sol.prices, sol.slack, used, lp.known)
            if sol.short.size:  # a knapsack client short of pairs: all of its own
                for r in sol.short.tolist():
                    free = np.arange(view.e)
                    if view.free is not None:
                        full = r if view.rows is None else int(view.rows[r])
                        free = np.flatnonzero(view.free[full])
                    c = np.concatenate([c, np.full(free.size, r, dtype=np.int64)])
                    e = np.concatenate([e, free])
            if lp.add_pairs(c, e) == 0:
                raise Infeasible("the LP relaxation is infeasible: the load bounds cannot be met")
            continue
        c, e = price_out(view, sol.prices, m, lp.known, mem=sol.mem)
        if not exact and np.unique(c).size < _LOOSE * view.n:
            break
        if c.size == 0 or lp.add_pairs(c, e) == 0:
            break
    return LevelSolution(
        prices=sol.prices,
        # (a sample level's candidates are not used: only its prices)
        cand=candidates(view, sol.prices, m) if exact else cand,
        frozen_rows=np.zeros(0, dtype=np.int64),
        frozen_experts=np.zeros(0, dtype=np.int64),
        frozen_load=np.zeros(view.e),
        clients=sol.clients,
        pair_client=sol.pair_client,
        pair_expert=sol.pair_expert,
        x=sol.x,
        mem=sol.mem,
        converged=not (used.size or sol.short.size),
    )
