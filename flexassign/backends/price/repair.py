"""Greedy repair of a rounded core: moves that bring every load inside its bounds.

The fractional clients of the core LP, each rounded alone (:func:`.rounding.
round_clients`), leave a few experts a little out of bounds. An expert over its upper
bound sheds holders: each holder in the core may drop it (when its count allows) or
swap it for one of its other LP pairs whose expert has room and that its memory
budget allows; an expert under its lower bound gains clients the same way (an added
pair or a swap). Moves are taken cheapest first by their loss in adjusted score at
the LP's prices (one move per client per pass), until the load fits or no move is
left. The result is checked by the caller like any other assignment.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .trust import LevelSolution
from .view import View

__all__ = ["PASSES", "repair"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Passes over the experts out of bounds.
PASSES = 50


def _options(
    owner: IntArray, first: IntArray, last: IntArray, clients: IntArray
) -> tuple[IntArray, IntArray]:
    """Every (client position, pair index) for the pairs of ``clients`` (``first`` /
    ``last``: each client's range in the pairs sorted by client, ``owner``)."""
    lo, hi = first[clients], last[clients]
    size = hi - lo
    rep = np.repeat(np.arange(clients.size), size)
    off = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    return rep, lo[rep] + off


def repair(
    view: View, lp: LevelSolution, chosen: NDArray[np.bool_], tol: float
) -> NDArray[np.bool_] | None:
    """``chosen`` (a 0/1 value per LP pair) moved until every load fits its bounds,
    or ``None``."""
    pc, pe = lp.pair_client, lp.pair_expert
    rows = lp.clients[pc]
    w = view.w[rows]
    a = view.scores(rows, pe) - w * lp.prices[pe]
    order = np.argsort(pc, kind="stable")  # pairs grouped by client
    k = lp.clients.size
    first = np.searchsorted(pc[order], np.arange(k), side="left")
    last = np.searchsorted(pc[order], np.arange(k), side="right")
    x = chosen.copy()
    size = None if view.size is None else view.size[pe]
    budget = None if view.budget is None else view.budget[lp.clients]
    cap, kmin = view.cap[lp.clients], view.kmin[lp.clients]
    e = view.e
    for _ in range(PASSES):
        load = lp.frozen_load + np.bincount(pe[x], weights=w[x], minlength=e)
        over = np.where(np.isfinite(view.hi), load - view.hi, -np.inf)
        under = view.lo - load
        bad = np.flatnonzero((over > tol) | (under > tol))
        if bad.size == 0:
            return x
        count = np.bincount(pc[x], minlength=k)
        used = (
            None
            if size is None
            else np.bincount(pc[x], weights=size[x], minlength=k).astype(np.float64)
        )
        moved = False
        for ex in bad[np.argsort(-np.maximum(over[bad], under[bad]))].tolist():
            need = float(max(over[ex], under[ex]))
            shed = over[ex] > tol
            if shed:  # holders of ex: drop it or swap it for another pair
                hold = np.flatnonzero(x & (pe == ex))
                cl = pc[hold]
                rep, cand = _options(pc[order], first, last, cl)
                cand = order[cand]
                src = hold[rep]
                ok = ~x[cand] & (pe[cand] != ex)
                ok &= load[pe[cand]] + w[cand] <= view.hi[pe[cand]] + tol
                if used is not None and budget is not None and size is not None:
                    ok &= used[pc[cand]] - size[src] + size[cand] <= budget[pc[cand]] * (1 + 1e-12)
                loss = np.where(ok, a[src] - a[cand], np.inf)
                drop_ok = count[cl] > kmin[cl]
                src_all = np.concatenate([src, hold])
                dst_all = np.concatenate([cand, np.full(hold.size, -1)])
                loss_all = np.concatenate([loss, np.where(drop_ok, a[hold], np.inf)])
            else:  # clients with a pair on ex: add it, or swap another pair for it
                gain = np.flatnonzero(~x & (pe == ex))
                cl = pc[gain]
                rep, held = _options(pc[order], first, last, cl)
                held = order[held]
                dst = gain[rep]
                ok = x[held] & (load[pe[held]] - w[held] >= view.lo[pe[held]] - tol)
                if used is not None and budget is not None and size is not None:
                    ok &= used[pc[held]] - size[held] + size[dst] <= budget[pc[held]] * (1 + 1e-12)
                loss = np.where(ok, a[held] - a[dst], np.inf)
                add_ok = count[cl] < cap[cl]
                if used is not None and budget is not None and size is not None:
                    add_ok &= used[cl] + size[gain] <= budget[cl] * (1 + 1e-12)
                src_all = np.concatenate([held, np.full(gain.size, -1)])
                dst_all = np.concatenate([dst, gain])
                loss_all = np.concatenate([loss, np.where(add_ok, -a[gain], np.inf)])
            pick = np.argsort(loss_all, kind="stable")
            pick = pick[np.isfinite(loss_all[pick])]
            done: set[int] = set()
            for j in pick.tolist():
                if need <= tol:
                    break
                s_, d_ = int(src_all[j]), int(dst_all[j])
                c = int(pc[s_] if s_ >= 0 else pc[d_])
                if c in done:
                    continue
                other = d_ if shed else s_
                if other >= 0:  # the other expert must still have room / spare load
                    f = int(pe[other])
                    if shed and load[f] + w[other] > view.hi[f] + tol:
                        continue
                    if not shed and load[f] - w[other] < view.lo[f] - tol:
                        continue
                for j2, sign in ((s_, -1.0), (d_, 1.0)):
                    if j2 >= 0:
                        x[j2] = sign > 0
                        load[pe[j2]] += sign * w[j2]
                        count[c] += int(sign)
                        if used is not None and size is not None:
                            used[c] += sign * size[j2]
                done.add(c)
                need -= float(w[s_] if shed else w[d_])
                moved = True
        if not moved:
            return None
    return None
