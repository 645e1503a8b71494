r"""Relax and fix: the core LP's integral clients keep their LP choice, a small MIP
decides the fractional ones.

A basic optimal solution of the core LP has only about one or two fractional clients
per binding load or memory row, so the MIP that rounds them is tiny. It runs against
the load everybody else leaves and stops at an absolute gap (a share of the whole
problem's gap budget). If it is infeasible (or its elastic slacks stay in use), the
core clients that hold one of the experts involved are freed too, up to
:data:`ATTEMPTS` times, the last time the whole core.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..base import SolveOptions
from .core import build_core, solve_core
from .repair import repair
from .trust import LevelSolution
from .view import View

__all__ = ["ATTEMPTS", "FRAC_TOL", "relax_and_fix", "round_clients"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: An LP value within this of 0 or 1 counts as integral (a basic column near a bound
#: counts as fractional: its rounding would move weight w_c times it).
FRAC_TOL = 1e-9
#: MIP attempts, each with more core clients freed (the last: the whole core).
ATTEMPTS = 4
#: Elastic slack (load units, relative to the largest weight) that counts as in use.
_SLACK_TOL = 1e-6


#: Seconds a rounding MIP may take (its best assignment is kept; the gap says the rest).
_MIP_SECONDS = 2.0
#: LP pairs per client that its rounding alone considers.
SLOTS = 8
#: Fractional clients the first rounding MIP frees at most (those with a pair on an
#: expert that their rounding alone leaves out of bounds).
FREE_MAX = 600
#: A repaired rounding that loses at most this many times the MIP's absolute gap
#: (against the LP) is kept without a MIP.
_KEEP = 2.0


def _subsets(p: int, k: int) -> NDArray[np.bool_]:
    """Every subset of ``p`` slots with at most ``k`` members, as rows of a mask."""
    rows = [c for j in range(k + 1) for c in itertools.combinations(range(p), j)]
    out = np.zeros((len(rows), p), dtype=bool)
    for i, c in enumerate(rows):
        out[i, list(c)] = True
    return out


def round_clients(
    view: View, lp: LevelSolution, clients: IntArray, prices: FloatArray
) -> tuple[IntArray, IntArray] | None:
    """Each of ``clients`` (positions in ``lp.clients``) rounded alone: its best
    subset of its LP pairs with positive value (at most :data:`SLOTS`, largest
    first) by adjusted score at ``prices`` that meets its count and memory
    budget. Returns the chosen (position, pair index) or ``None`` if some client has
    no such subset."""
    pc, x = lp.pair_client, lp.x
    sel = np.isin(pc, clients) & (x > FRAC_TOL)
    idx = np.flatnonzero(sel)
    order = np.lexsort((-x[idx], pc[idx]))
    idx = idx[order]
    owner = pc[idx]
    start = np.searchsorted(owner, clients)
    rank = np.arange(idx.size) - start[np.searchsorted(clients, owner)]
    keep = rank < SLOTS
    idx, owner, rank = idx[keep], owner[keep], rank[keep]
    n_c = clients.size
    slot_pair = np.full((n_c, SLOTS), -1)
    slot_pair[np.searchsorted(clients, owner), rank] = idx
    has = slot_pair >= 0
    rows = lp.clients[clients]
    ex = np.where(has, lp.pair_expert[np.maximum(slot_pair, 0)], 0)
    val = view.scores(np.repeat(rows, SLOTS), ex.ravel()).reshape(n_c, SLOTS)
    val = np.where(has, val - view.w[rows][:, None] * prices[ex], -np.inf)
    k = int(view.cap[rows].max(initial=0))
    masks = _subsets(SLOTS, min(k, SLOTS))
    count = masks.sum(axis=1)
    value = np.where(masks[None, :, :], val[:, None, :], 0.0).sum(axis=2)
    ok = ~np.any(masks[None, :, :] & ~has[:, None, :], axis=2)
    ok &= (count[None, :] <= view.cap[rows][:, None]) & (count[None, :] >= view.kmin[rows][:, None])
    if view.size is not None and view.budget is not None:
        used = np.where(has, view.size[ex], 0.0) @ masks.T.astype(np.float64)
        ok &= used <= view.budget[rows][:, None] * (1 + 1e-12)
    value = np.where(ok, value, -np.inf)
    best = np.argmax(value, axis=1)
    if not np.all(np.isfinite(value[np.arange(n_c), best])):
        return None
    take = masks[best] & has
    r, c = np.nonzero(take)
    return clients[r], slot_pair[r, c]


def relax_and_fix(
    view: View,
    lp: LevelSolution,
    options: SolveOptions,
    *,
    abs_gap: float,
    time_limit: float | None,
    stats: dict[str, Any],
) -> NDArray[np.bool_] | None:
    """A 0/1 value for every pair of the core LP ``lp``, or ``None``."""
    frozen_load = lp.frozen_load
    e = view.e
    pc, pe, x_lp = lp.pair_client, lp.pair_expert, lp.x
    k = lp.clients.size
    w = view.w[lp.clients]
    frac_pair = (x_lp > FRAC_TOL) & (x_lp < 1 - FRAC_TOL)
    free = np.zeros(k, dtype=bool)
    free[pc[frac_pair]] = True
    stats["fractional_clients"] = int(free.sum())
    rounded = (x_lp > 0.5) & ~free[pc]
    if not free.any():
        return x_lp > 0.5
    tol = _SLACK_TOL * float(np.max(view.w))
    alone = round_clients(view, lp, np.flatnonzero(free), lp.prices)
    fallback = None
    if alone is None:
        rounded = x_lp > 0.5
    else:
        rounded[alone[1]] = True
        load = frozen_load + np.bincount(pe[rounded], weights=w[pc[rounded]], minlength=e)
        out_of = (np.where(np.isfinite(view.hi), load - view.hi, -np.inf) > tol) | (
            view.lo - load > tol
        )
        stats["alone_out_of_bounds"] = int(out_of.sum())
        if not out_of.any():
            return rounded
        fallback = repair(view, lp, rounded, tol)
        stats["repaired"] = fallback is not None
        if fallback is not None:
            score = view.scores(lp.clients[pc], pe)
            loss = float(np.dot(score, x_lp)) - float(score[fallback].sum())
            stats["repair_loss"] = loss
            if loss <= _KEEP * abs_gap:
                return fallback
        else:  # the MIP frees the fractional clients with a pair on an expert out of bounds
            near = np.zeros(k, dtype=bool)
            near[pc[out_of[pe]]] = True
            free &= near
        if free.sum() > FREE_MAX:
            if fallback is not None:  # too many for one small MIP: keep the repair
                return fallback
            pick = np.random.default_rng(0).choice(np.flatnonzero(free), FREE_MAX, replace=False)
            free[:] = False
            free[pick] = True
    attempts = 1 if fallback is not None else ATTEMPTS
    got = _mip(view, lp, free, rounded, options, abs_gap, time_limit, tol, stats, attempts)
    if fallback is None or got is None:
        return got if fallback is None else fallback
    score = view.scores(lp.clients[pc], pe)
    return got if float(score[got].sum()) > float(score[fallback].sum()) else fallback


def _mip(
    view: View,
    lp: LevelSolution,
    free: NDArray[np.bool_],
    rounded: NDArray[np.bool_],
    options: SolveOptions,
    abs_gap: float,
    time_limit: float | None,
    tol: float,
    stats: dict[str, Any],
    attempts: int = ATTEMPTS,
) -> NDArray[np.bool_] | None:
    """Relax and fix by MIPs (at most ``attempts``): the clients ``free`` (positions
    in ``lp.clients``) solved against the load of the others' ``rounded`` pairs,
    freeing more clients after each failure (the last attempt: all of them)."""
    frozen_load = lp.frozen_load
    e = view.e
    pc, pe = lp.pair_client, lp.pair_expert
    w = view.w[lp.clients]
    t0 = time.perf_counter()
    for attempt in range(attempts):
        if attempt == ATTEMPTS - 1:
            free[:] = True
        fixed = rounded & ~free[pc]
        load = frozen_load + np.bincount(pe[fixed], weights=w[pc[fixed]], minlength=e)
        mine = free[pc]
        pos = np.cumsum(free) - 1
        sub = build_core(view, lp.clients[free], pos[pc[mine]], pe[mine], load)
        left = None if time_limit is None else max(time_limit - (time.perf_counter() - t0), 1e-3)
        last = attempt == ATTEMPTS - 1
        cap = _MIP_SECONDS if left is None else min(left, _MIP_SECONDS)
        sol = solve_core(
            sub, e, options, integer=True, abs_gap=abs_gap, time_limit=cap, elastic=last
        )
        stats.setdefault("mip_clients", []).append(int(free.sum()))
        short = sol.deficit is not None and float(sol.deficit.max(initial=0)) > 1e-9
        if (
            sol.x is not None
            and sol.slack is not None
            and not short
            and float(sol.slack.max(initial=0)) <= tol
        ):
            out = fixed.copy()
            out[np.flatnonzero(mine)] = sol.x > 0.5
            return out
        if free.all():
            return None
        _grow(free, pc, pe, rounded, mine, e, attempt)
    return None


def _grow(
    free: NDArray[np.bool_],
    pc: IntArray,
    pe: IntArray,
    rounded: NDArray[np.bool_],
    mine: NDArray[np.bool_],
    e: int,
    attempt: int,
) -> None:
    """Free (in place) core clients that hold an expert the freed ones could use: at
    most twice as many as are free (at least 64), drawn at random."""
    touched = np.zeros(e, dtype=bool)
    touched[pe[mine]] = True
    holders = np.zeros(free.size, dtype=bool)
    holders[pc[rounded & touched[pe]]] = True
    grow = np.flatnonzero(holders & ~free)
    limit = max(2 * int(free.sum()), 64)
    if grow.size > limit:
        grow = np.random.default_rng(attempt).choice(grow, size=limit, replace=False)
    free[grow] = True
