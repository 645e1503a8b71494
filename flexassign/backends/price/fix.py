r"""Round, repair, improve: an assignment from the LP relaxation without a MIP.

The LP relaxation at its optimal prices :math:`\pi` leaves almost every client
integral; only about one client per binding load row is fractional. This module
turns it into an assignment over a *pair list*: every client's candidates at
:math:`\pi` (its best free experts, :mod:`.view`) plus its LP pairs.

1. **Round** (:func:`start`): frozen clients keep their choice at :math:`\pi`, the
   LP's integral clients theirs; a fractional client takes its largest LP values,
   as many as its LP count rounds to (with a memory knapsack: its best subset of
   its LP pairs within its budget, :func:`.rounding.round_clients`).
2. **Repair** (:func:`repair`): the experts left out of their bounds, largest
   violation first. An expert over its upper bound sheds holders (each may drop it or
   swap it for one of its other pairs whose expert has room), one under its lower
   bound gains clients (an added pair, or a swap from an expert with load to spare).
   Each move is priced by what it costs the objective, :math:`S_{cd} - S_{cs}`; the
   cheaper of the cheapest single move that covers the violation and the cheapest
   moves per unit of weight that together cover it is taken.
3. **Improve** (:func:`improve`): feasible moves that raise the objective (a swap, an
   added pair, a dropped one), best first, one per client per pass.

Every move keeps each client's count and memory budget and never pushes a load
past a bound it met; the caller verifies the result like any other assignment.
The loss against the LP (its value minus the objective) is what the gap adds to the
price bound's distance from the LP: on the 10,000 x 256 weighted benchmark cell about
1.7 of 21,938 after the repair, 1.5 after the improvement (gap 7e-5), in 0.1-0.3 s,
where the rounding MIP took 2 s and stopped at 2.4e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .rounding import FRAC_TOL, round_clients
from .trust import LevelSolution
from .view import Candidates, View, choose, slack

__all__ = ["Pairs", "improve", "repair", "start"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Passes over the experts out of bounds before the repair gives up.
REPAIR_PASSES = 40
#: Passes of improving moves.
IMPROVE_PASSES = 4


@dataclass
class Pairs:
    """Candidate pairs of every view client, sorted by client then expert.

    ``client`` (view-local) and ``expert`` per pair, ``score`` its fitness, ``held``
    whether the assignment takes it; ``first`` / ``last`` each client's range.
    """

    client: IntArray
    expert: IntArray
    score: FloatArray
    held: BoolArray
    first: IntArray
    last: IntArray
    out_rows: IntArray
    out_experts: IntArray
    base: FloatArray

    def loads(self, view: View) -> FloatArray:
        """Per-expert load of the held pairs and the clients left out."""
        h = self.held
        got = np.bincount(self.expert[h], weights=view.w[self.client[h]], minlength=view.e)
        return np.asarray(got + self.base, dtype=np.float64)


def start(view: View, lev: LevelSolution, limit: int | None = None) -> Pairs:
    """The pair list of ``view`` with the rounded LP ``lev`` held (step 1): every
    client, or (more than ``limit`` clients) the LP's and those of the frozen ones
    whose choice is closest to changing, up to ``limit``; the others keep their
    choice (``out_rows`` / ``out_experts``, load ``base``)."""
    e = view.e
    inside = np.ones(view.n, dtype=bool)
    if limit is not None and view.n > limit:
        inside[:] = False
        inside[lev.clients] = True
        free = np.flatnonzero(~inside)
        k = limit - int(inside.sum())
        if 0 < k < free.size:
            _, h = choose(lev.cand.val[free], view.cap[free], view.kmin[free])
            sub = Candidates(lev.cand.idx[free], lev.cand.val[free], lev.cand.out[free])
            gap = slack(sub, h, view.cap[free], view.kmin[free])
            inside[free[np.argpartition(gap, k - 1)[:k]]] = True
        elif k >= free.size:
            inside[:] = True
    keys = _keys(view, lev, inside)
    lp_keys = lev.clients[lev.pair_client] * e + lev.pair_expert
    pc, pe = keys // e, keys % e
    held = np.zeros(keys.size, dtype=bool)
    f_in = inside[lev.frozen_rows]
    held[np.searchsorted(keys, lev.frozen_rows[f_in] * e + lev.frozen_experts[f_in])] = True
    out_rows, out_experts = lev.frozen_rows[~f_in], lev.frozen_experts[~f_in]
    base = np.bincount(out_experts, weights=view.w[out_rows], minlength=e).astype(np.float64)
    x, owner = lev.x, lev.pair_client
    frac = (x > FRAC_TOL) & (x < 1 - FRAC_TOL)
    is_frac = np.zeros(lev.clients.size, dtype=bool)
    is_frac[owner[frac]] = True
    held[np.searchsorted(keys, lp_keys[(x > 0.5) & ~is_frac[owner]])] = True
    fc = np.flatnonzero(is_frac)
    if fc.size:
        got = round_clients(view, lev, fc, lev.prices) if view.size is not None else None
        if got is not None:
            take = got[1]
        else:  # each fractional client: its largest LP values, as many as sum(x) rounds to
            sel = np.flatnonzero(is_frac[owner] & (x > FRAC_TOL))
            sel = sel[np.lexsort((-x[sel], owner[sel]))]
            o = owner[sel]
            rank = np.arange(sel.size) - np.searchsorted(o, o, side="left")
            total = np.bincount(o, weights=x[sel], minlength=lev.clients.size)
            rows = lev.clients[o]
            want = np.clip(np.round(total[o]), view.kmin[rows], view.cap[rows])
            take = sel[rank < want]
        held[np.searchsorted(keys, lp_keys[take])] = True
    first = np.searchsorted(pc, np.arange(view.n), side="left")
    last = np.searchsorted(pc, np.arange(view.n), side="right")
    return Pairs(pc, pe, view.scores(pc, pe), held, first, last, out_rows, out_experts, base)


def _keys(view: View, lev: LevelSolution, inside: BoolArray) -> IntArray:
    """Sorted keys (client * E + expert) of every candidate pair of the clients
    ``inside`` and every LP pair (no hashing: ``np.unique`` took 0.7 s on 700,000
    pairs)."""
    e = view.e
    rows = np.flatnonzero(inside)
    idx = np.where(lev.cand.val[rows] > -np.inf, lev.cand.idx[rows], e)  # e: none
    idx.sort(axis=1)
    keys = (rows.astype(np.int64)[:, None] * (e + 1) + idx).ravel()
    keys = keys[idx.ravel() < e]
    keys = (keys // (e + 1)) * e + keys % (e + 1)  # sorted: rows, then experts
    lp = np.sort(lev.clients[lev.pair_client] * e + lev.pair_expert)
    pos = np.minimum(np.searchsorted(keys, lp), max(keys.size - 1, 0))
    extra = lp[keys[pos] != lp] if keys.size else lp
    if extra.size == 0:
        return keys
    return np.insert(keys, np.searchsorted(keys, extra), extra)


def _expand(first: IntArray, last: IntArray, clients: IntArray) -> tuple[IntArray, IntArray]:
    """Every (position in ``clients``, pair index) for the pairs of ``clients``."""
    size = last[clients] - first[clients]
    rep = np.repeat(np.arange(clients.size), size)
    off = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    return rep, first[clients][rep] + off


class _State:
    """Loads, counts and memory of an assignment, updated move by move."""

    def __init__(self, view: View, pairs: Pairs, tol: float) -> None:
        self.view, self.p, self.tol = view, pairs, tol
        self.w = view.w[pairs.client]
        self.load = pairs.loads(view)
        h = pairs.held
        self.count = np.bincount(pairs.client[h], minlength=view.n)
        ex = pairs.expert
        if view.e <= np.iinfo(np.uint16).max:  # a radix sort: 10x faster than on int64
            ex = ex.astype(np.uint16)
        self.by_expert = np.argsort(ex, kind="stable")
        bounds = np.searchsorted(pairs.expert[self.by_expert], np.arange(view.e + 1))
        self.e_first, self.e_last = bounds[:-1], bounds[1:]
        self.size = None if view.size is None else view.size[pairs.expert]
        self.used = None
        if self.size is not None:
            self.used = np.bincount(pairs.client[h], weights=self.size[h], minlength=view.n).astype(
                np.float64
            )

    def fits_memory(self, src: IntArray, dst: IntArray) -> BoolArray:
        """Whether dropping ``src`` (-1: none) and adding ``dst`` (-1: none) keeps
        each client within its memory budget."""
        if self.used is None or self.size is None or self.view.budget is None:
            return np.ones(src.size, dtype=bool)
        c = np.where(src >= 0, self.p.client[np.maximum(src, 0)], self.p.client[np.maximum(dst, 0)])
        delta = np.where(dst >= 0, self.size[np.maximum(dst, 0)], 0.0) - np.where(
            src >= 0, self.size[np.maximum(src, 0)], 0.0
        )
        budget = self.view.budget[c]
        return np.asarray((delta <= 0) | (self.used[c] + delta <= budget * (1 + 1e-12)), dtype=bool)

    def can(self, a: int, b: int) -> bool:
        """Whether the move (drop pair ``a``, take pair ``b``; -1: none) is still
        possible and keeps every bound it touches."""
        p, v, tol, load = self.p, self.view, self.tol, self.load
        if a >= 0 and (not p.held[a] or load[p.expert[a]] - self.w[a] < v.lo[p.expert[a]] - tol):
            return False
        if b >= 0 and (p.held[b] or load[p.expert[b]] + self.w[b] > v.hi[p.expert[b]] + tol):
            return False
        c = int(p.client[a] if a >= 0 else p.client[b])
        n_new = self.count[c] - (a >= 0) + (b >= 0)
        if not v.kmin[c] <= n_new <= v.cap[c]:
            return False
        return bool(self.fits_memory(np.array([a]), np.array([b]))[0])

    def apply(self, a: int, b: int) -> None:
        p = self.p
        c = int(p.client[a] if a >= 0 else p.client[b])
        for j, sign in ((a, -1.0), (b, 1.0)):
            if j >= 0:
                p.held[j] = sign > 0
                self.load[p.expert[j]] += sign * self.w[j]
                self.count[c] += int(sign)
                if self.used is not None and self.size is not None:
                    self.used[c] += sign * self.size[j]


def _moves(st: _State, ex: int, shed: bool) -> tuple[IntArray, IntArray, FloatArray]:
    """Moves that take load off (``shed``) or onto expert ``ex``: (drop, take, gain)."""
    p, v, tol = st.p, st.view, st.tol
    mine = st.by_expert[st.e_first[ex] : st.e_last[ex]]
    if shed:
        src = mine[p.held[mine]]
        cl = p.client[src]
        rep, dst = _expand(p.first, p.last, cl)
        s = src[rep]
        ok = ~p.held[dst] & (st.load[p.expert[dst]] + st.w[dst] <= v.hi[p.expert[dst]] + tol)
        drop_ok = st.count[cl] > v.kmin[cl]
        a = np.concatenate([s[ok], src[drop_ok]])
        b = np.concatenate([dst[ok], np.full(int(drop_ok.sum()), -1)])
    else:
        dst = mine[~p.held[mine]]
        cl = p.client[dst]
        rep, src = _expand(p.first, p.last, cl)
        d = dst[rep]
        ok = p.held[src] & (st.load[p.expert[src]] - st.w[src] >= v.lo[p.expert[src]] - tol)
        add_ok = st.count[cl] < v.cap[cl]
        a = np.concatenate([src[ok], np.full(int(add_ok.sum()), -1)])
        b = np.concatenate([d[ok], dst[add_ok]])
    keep = st.fits_memory(a, b)
    a, b = a[keep], b[keep]
    gain = np.where(b >= 0, p.score[np.maximum(b, 0)], 0.0) - np.where(
        a >= 0, p.score[np.maximum(a, 0)], 0.0
    )
    return a, b, gain


def _plan(st: _State, a: IntArray, b: IntArray, gain: FloatArray, need: float) -> list[int]:
    """Moves covering ``need`` of load: the cheapest single one that covers it, or the
    cheapest per unit of weight that together do, whichever loses less."""
    tol = st.tol
    wt = st.w[np.where(a >= 0, a, b)]
    cover = wt >= need - tol
    single = int(np.flatnonzero(cover)[np.argmax(gain[cover])]) if cover.any() else -1
    seq: list[int] = []
    seen: set[int] = set()
    acc = total = 0.0
    client = st.p.client[np.where(a >= 0, a, b)]
    for j in np.argsort(-gain / wt, kind="stable").tolist():
        c = int(client[j])
        if c in seen:
            continue
        seen.add(c)
        seq.append(j)
        acc += float(wt[j])
        total += float(gain[j])
        if acc >= need - tol:
            break
    if single >= 0 and (acc < need - tol or float(gain[single]) >= total):
        return [single]
    return seq


def repair(view: View, pairs: Pairs, tol: float) -> bool:
    """Move held pairs (in place) until every load is within its bounds (step 2);
    whether it got there."""
    st = _State(view, pairs, tol)
    for _ in range(REPAIR_PASSES):
        over = np.where(np.isfinite(view.hi), st.load - view.hi, -np.inf)
        under = view.lo - st.load
        bad = np.flatnonzero((over > tol) | (under > tol))
        if bad.size == 0:
            return True
        moved = False
        for ex in bad[np.argsort(-np.maximum(over[bad], under[bad]))].tolist():
            shed = bool(st.load[ex] - view.hi[ex] > tol)
            need = float(st.load[ex] - view.hi[ex] if shed else view.lo[ex] - st.load[ex])
            if need <= tol:
                continue
            a, b, gain = _moves(st, ex, shed)
            if a.size == 0:
                continue
            for j in _plan(st, a, b, gain, need):
                if st.can(int(a[j]), int(b[j])):
                    st.apply(int(a[j]), int(b[j]))
                    moved = True
        if not moved:
            break
    over = np.where(np.isfinite(view.hi), st.load - view.hi, -np.inf)
    return not bool(np.any((over > tol) | (view.lo - st.load > tol)))


def improve(view: View, pairs: Pairs, tol: float, passes: int = IMPROVE_PASSES) -> float:
    """Feasible moves that raise the objective (in place, step 3); the total gain."""
    p = pairs
    st = _State(view, pairs, tol)
    n = view.n
    gained = 0.0
    for _ in range(passes):
        h, pe, w = p.held, p.expert, st.w
        # pairs that may leave / enter at the current loads
        hh = np.flatnonzero(h & (st.load[pe] - w >= view.lo[pe] - tol))
        uu = np.flatnonzero(~h & (st.load[pe] + w <= view.hi[pe] + tol))
        ho, uo = p.client[hh], p.client[uu]
        n_un = np.bincount(uo, minlength=n)
        un_first = np.cumsum(n_un) - n_un
        k = n_un[ho]
        r2 = np.repeat(np.arange(hh.size), k)
        off = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
        add = uu[st.count[uo] < view.cap[uo]]
        drop = hh[st.count[ho] > view.kmin[ho]]
        a = np.concatenate([hh[r2], np.full(add.size, -1), drop])
        b = np.concatenate([uu[un_first[ho][r2] + off], add, np.full(drop.size, -1)])
        gain = np.where(b >= 0, p.score[np.maximum(b, 0)], 0.0) - np.where(
            a >= 0, p.score[np.maximum(a, 0)], 0.0
        )
        ok = gain > 1e-12
        a, b, gain = a[ok], b[ok], gain[ok]
        keep = st.fits_memory(a, b)
        a, b, gain = a[keep], b[keep], gain[keep]
        done: set[int] = set()
        moved = 0
        client = p.client[np.where(a >= 0, a, b)]
        for j in np.argsort(-gain, kind="stable").tolist():
            cj = int(client[j])
            if cj in done or not st.can(int(a[j]), int(b[j])):
                continue
            st.apply(int(a[j]), int(b[j]))
            done.add(cj)
            gained += float(gain[j])
            moved += 1
        if moved == 0:
            break
    return gained
