"""``flow-warm``'s open set: the frozen and open clients, the exact solve, the checks.

The state (:class:`_State`) holds every client's candidates and price-induced choice;
*open* clients are solved exactly with OR-Tools on their candidate arcs
(:func:`_solve_open`), new prices come from the compressed residual graph
(:func:`_potentials`), and the re-checks decide which clients the certificate still
needs; the remaining functions open more clients or arcs when a round cannot be placed
or certified. See :mod:`flexassign.backends.flow.warm` for the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .residual import min_swap_costs
from .warm_data import (
    _BIG,
    _BLOCK,
    _NEG,
    _best_off,
    _compiled_pass,
    _Data,
    _Fallback,
    _slack,
    _top,
)


@dataclass
class _State:
    data: _Data
    p: np.ndarray  # (E,) int64 prices relative to O
    top_idx: np.ndarray  # (n, m1) frozen clients' sorted candidates
    h: np.ndarray  # (n,) frozen clients' choice: top_idx[c, :h[c]]
    slack: np.ndarray  # (n,) lower bound on a frozen client's slack at prices p
    is_open: np.ndarray  # (n,) bool
    m: int  # candidates per open client, at most
    margin: int  # candidates beyond a client's own capacity
    # open clients: candidate arcs (client, expert) and a bound on their best pruned u
    arc_c: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    arc_e: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    outside: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rechecked: int = 0

    def frozen_load(self) -> np.ndarray:
        e = self.data.e
        frozen = ~self.is_open
        load = np.zeros(e, dtype=np.int64)
        for t in range(int(self.h.max(initial=0))):
            r = frozen & (self.h > t)
            load += np.bincount(self.top_idx[r, t], minlength=e)
        return load

    def open_rows(self, rows: np.ndarray, top: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Open clients: candidates are their top ``m`` experts at the current prices
        (``top``: those rows' ``_top`` at the current prices, when already known)."""
        if rows.size == 0:
            return
        e = self.data.e
        self.is_open[rows] = True
        m1 = min(e, self.m + 1)
        idx, val = _top(self.data, self.p, rows, m1) if top is None else top
        k = self.m if m1 > self.m else m1
        # each client's own capacity plus the margin (at most k candidates)
        ki = np.minimum(self.data.cap[rows] + self.margin, k)
        ok = (np.arange(k)[None, :] < ki[:, None]) & (val[:, :k] > _NEG // 2)
        self.arc_c = np.concatenate([self.arc_c, np.repeat(rows, ok.sum(axis=1))])
        self.arc_e = np.concatenate([self.arc_e, idx[:, :k][ok].astype(np.int64)])
        if m1 > k:
            out = val[np.arange(rows.size), ki]
        else:
            out = np.where(ki < k, val[np.arange(rows.size), np.minimum(ki, k - 1)], float(_NEG))
        self.outside[rows] = out


@dataclass
class _Sub:
    rows: np.ndarray  # open clients (sorted)
    ac: np.ndarray  # arc client (position in rows)
    ae: np.ndarray  # arc expert
    cost: np.ndarray  # arc integer cost C
    flow: np.ndarray  # 0/1 on the arcs
    art_expert: np.ndarray  # (E,) artificial units of minimum load
    art_client: np.ndarray  # (r,) artificial units of client minimum


def _solve_open(st: _State, fload: np.ndarray) -> _Sub:
    """Min-cost flow over the open clients' candidate arcs, against the bounds left."""
    from ortools.graph.python import min_cost_flow

    d = st.data
    e = d.e
    order = np.lexsort((st.arc_e, st.arc_c))
    st.arc_c, st.arc_e = st.arc_c[order], st.arc_e[order]
    rows, ac = np.unique(st.arc_c, return_inverse=True)
    ac = ac.reshape(-1)
    r = rows.size
    cap, kmin = d.cap[rows], d.kmin[rows]
    lo = np.maximum(d.lo - fload, 0)
    hi = d.hi - fload
    cost = d.cost(st.arc_c, st.arc_e)
    peak = int(np.abs(cost).max(initial=0))
    big_m = 2 * (e + 2) * (peak + 1) + 1
    src, sink = 0, r + e + 1
    optional = int((cap - kmin).sum())
    extra = int(lo.sum())
    tails = np.concatenate(
        [
            np.zeros(r, dtype=np.int64),
            1 + ac,
            1 + r + np.arange(e),
            [src],
            np.zeros(e, dtype=np.int64),
            1 + np.arange(r),
        ]
    )
    heads = np.concatenate(
        [
            1 + np.arange(r),
            1 + r + st.arc_e,
            np.full(e, sink),
            [sink],
            1 + r + np.arange(e),
            np.full(r, sink),
        ]
    )
    caps = np.concatenate(
        [cap - kmin, np.ones(ac.size, dtype=np.int64), hi - lo, [optional + extra], lo, kmin]
    )
    costs = np.concatenate(
        [
            np.zeros(r, dtype=np.int64),
            -cost,
            np.zeros(e + 1, dtype=np.int64),
            np.full(e + r, big_m, dtype=np.int64),
        ]
    )
    supplies = np.zeros(r + e + 2, dtype=np.int64)
    supplies[src] = optional + extra
    supplies[1 : r + 1] = kmin
    supplies[1 + r : 1 + r + e] = -lo
    supplies[sink] = -(optional + extra + int(kmin.sum()) - extra)
    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(
        tails.astype(np.int64), heads.astype(np.int64), caps.astype(np.int64), costs
    )
    smcf.set_nodes_supplies(np.arange(r + e + 2), supplies)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise _Fallback(f"SimpleMinCostFlow returned status {status} on the open clients")
    flows = smcf.flows(arcs)
    a = r + ac.size
    b = a + e + 1
    return _Sub(
        rows=rows,
        ac=ac,
        ae=st.arc_e,
        cost=cost,
        flow=flows[r:a],
        art_expert=flows[b : b + e],
        art_client=flows[b + e :],
    )


def _potentials(st: _State, sub: _Sub, loads: np.ndarray) -> np.ndarray:
    """Greatest potentials (experts, then O) below ``(p, 0)`` in the compressed residual
    graph of the open clients; raises ``_Fallback`` on a negative cycle."""
    d = st.data
    e = d.e
    hub = e
    W = np.full((e + 1) * (e + 1), _BIG, dtype=np.int64)
    held = sub.flow > 0
    hc, he, ch = sub.ac[held], sub.ae[held], sub.cost[held]
    oc, oe, co = sub.ac[~held], sub.ae[~held], sub.cost[~held]
    r = sub.rows.size
    used = np.bincount(hc, minlength=r)
    # expert -> expert through a client: held e, open e' (cost C_ce - C_ce')
    min_swap_costs(W, e + 1, r, (hc, he, ch), (oc, oe, co))
    # O -> expert: a client with room takes an open candidate (cost -C)
    room = used < d.cap[sub.rows]
    ok = room[oc]
    np.minimum.at(W, hub * (e + 1) + oe[ok], -co[ok])
    # expert -> O: a client above its minimum drops a held expert (cost C)
    above = used > d.kmin[sub.rows]
    ok = above[hc]
    np.minimum.at(W, he[ok] * (e + 1) + hub, ch[ok])
    # expert arcs of cost 0: more load (e -> O) below U, less load (O -> e) above L
    more = np.flatnonzero(loads < d.hi)
    less = np.flatnonzero(loads > d.lo)
    W[more * (e + 1) + hub] = np.minimum(W[more * (e + 1) + hub], 0)
    W[hub * (e + 1) + less] = np.minimum(W[hub * (e + 1) + less], 0)
    Wm = W.reshape(e + 1, e + 1)
    np.fill_diagonal(Wm, _BIG)
    dist = np.concatenate([st.p, [0]]).astype(np.int64)
    for _ in range(e + 3):
        new = np.minimum(dist, (dist[:, None] + Wm).min(axis=0))
        if np.array_equal(new, dist):
            return dist
        dist = new
    raise _Fallback("negative cycle in the open clients' residual graph")


def _held_min(st: _State, rows: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The largest fall of ``delta`` over each frozen client's held experts: their
    smallest ``delta`` if negative, else 0 (also when it holds none)."""
    out = np.zeros(rows.size, dtype=np.int64)
    hk = st.h[rows]
    for t in range(int(hk.max(initial=0))):
        has = hk > t
        d = delta[st.top_idx[rows, t]]
        out = np.where(has & (d < out), d, out)
    return out


def _recheck_frozen(st: _State, rows: np.ndarray) -> np.ndarray:
    """Exact slack of frozen clients at the current prices; returns those that fail."""
    d = st.data
    if rows.size == 0:
        return rows
    st.rechecked += int(rows.size)
    if _compiled_pass(d):  # best u off the held experts compiled, the held ones here
        hk = st.h[rows]
        held_idx = st.top_idx[rows, : int(hk.max(initial=0))].astype(np.int64)
        held = np.arange(held_idx.shape[1])[None, :] < hk[:, None]
        high = _best_off(d, rows, st.p, held_idx, np.where(held, 0, _NEG))
        if high is not None:
            high = np.where(high > _NEG, high, float(_NEG))  # every expert held: -inf
            u = d.cost(rows[:, None], held_idx) + st.p[held_idx]
            low = np.where(held, u, _BIG).min(axis=1, initial=_BIG).astype(np.float64)
            s = _slack(low, high, hk, d.cap[rows], d.kmin[rows])
            st.slack[rows] = s
            return rows[s < 0]
    fails = []
    step = max(1, _BLOCK // d.e)
    for r0 in range(0, rows.size, step):
        rr = rows[r0 : r0 + step]
        u = d.u(rr, st.p)
        hk = st.h[rr]
        kk = int(hk.max(initial=0))
        held = np.zeros(u.shape, dtype=bool)
        for t in range(kk):
            sel = np.flatnonzero(hk > t)
            held[sel, st.top_idx[rr[sel], t]] = True
        low = np.where(held, u, _BIG).min(axis=1)
        high = np.where(held, _NEG, u).max(axis=1)
        s = _slack(low, high, hk, d.cap[rr], d.kmin[rr])
        st.slack[rr] = s
        fails.append(rr[s < 0])
    return np.concatenate(fails)


def _recheck_open(st: _State, sub: _Sub, rows_pos: np.ndarray, tau: np.ndarray) -> int:
    """Exact check of open clients' pruned arcs; adds the ones that fail. Returns count."""
    d = st.data
    rows = sub.rows[rows_pos]
    st.rechecked += int(rows.size)
    new_c, new_e = [], []
    step = max(1, _BLOCK // d.e)
    for r0 in range(0, rows.size, step):
        rr = rows[r0 : r0 + step]
        u = d.u(rr, st.p)
        # the arcs (sorted by client) of these rows are already candidates
        a0 = np.searchsorted(st.arc_c, rr[0])
        a1 = np.searchsorted(st.arc_c, rr[-1], side="right")
        pos = np.searchsorted(rr, st.arc_c[a0:a1])
        mine = rr[np.minimum(pos, rr.size - 1)] == st.arc_c[a0:a1]
        u[pos[mine], st.arc_e[a0:a1][mine]] = _NEG
        bad = u > tau[r0 : r0 + step, None]
        bc, be = np.nonzero(bad)
        new_c.append(rr[bc])
        new_e.append(be.astype(np.int64))
        u[bad] = _NEG
        st.outside[rr] = u.max(axis=1)
    added = sum(int(c.size) for c in new_c)
    if added:
        st.arc_c = np.concatenate([st.arc_c, *new_c])
        st.arc_e = np.concatenate([st.arc_e, *new_e])
    return added


def _expert_candidates(st: _State, need: int) -> None:
    """Give every expert its ``need`` best clients by u as arcs (all clients open), so
    that lower load bounds can be met without artificial units."""
    d = st.data
    n, e = d.n, d.e
    if need <= 0:
        return
    if need >= n:
        _missing_arcs(st, np.arange(n), None)
        return
    best_r = np.zeros((0, e), dtype=np.int64)
    best_v = np.zeros((0, e))
    step = max(need, _BLOCK // e)
    for r0 in range(0, n, step):
        u = np.concatenate([best_v, d.u(slice(r0, r0 + step), st.p)])
        rows = np.concatenate(
            [
                best_r,
                np.broadcast_to(
                    np.arange(r0, min(n, r0 + step))[:, None], (u.shape[0] - best_r.shape[0], e)
                ),
            ]
        )
        if u.shape[0] > need:
            part = np.argpartition(-u, need - 1, axis=0)[:need]
            best_v = np.take_along_axis(u, part, axis=0)
            best_r = np.take_along_axis(rows, part, axis=0)
        else:
            best_v, best_r = u, rows
    ok = best_v > _NEG // 2
    cols = np.broadcast_to(np.arange(e)[None, :], ok.shape)
    key = np.unique(np.concatenate([st.arc_c * e + st.arc_e, best_r[ok] * e + cols[ok]]))
    st.arc_c, st.arc_e = key // e, key % e


def _first_per_group(group: np.ndarray, key: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Positions of the ``k[g]`` smallest ``key`` within each ``group`` value ``g``."""
    order = np.lexsort((key, group))
    g = group[order]
    start = np.searchsorted(g, g, side="left")
    rank = np.arange(g.size) - start
    return order[rank < k[g]]


def _open_holders(st: _State, experts: np.ndarray, excess: np.ndarray) -> None:
    """Open the frozen holders of overloaded experts with the smallest slack."""
    want = np.zeros(st.data.e, dtype=np.int64)
    want[experts] = np.maximum(excess[experts], 0) * 2 + 8
    rows, exps = [], []
    frozen = ~st.is_open
    for t in range(int(st.h.max(initial=0))):
        r = np.flatnonzero(frozen & (st.h > t))
        ex = st.top_idx[r, t].astype(np.int64)
        keep = want[ex] > 0
        rows.append(r[keep])
        exps.append(ex[keep])
    r_all = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if r_all.size == 0:
        raise _Fallback("frozen clients overload an expert")
    e_all = np.concatenate(exps)
    pick = _first_per_group(e_all, st.slack[r_all], want)
    st.open_rows(np.unique(r_all[pick]))


def _missing_arcs(st: _State, rows: np.ndarray, experts: np.ndarray | None) -> int:
    """Add the free arcs of open ``rows`` (to ``experts``, or all) not yet candidates."""
    d = st.data
    if rows.size == 0:
        return 0
    u = d.u(rows, st.p)
    free = u > _NEG // 2
    if experts is not None:
        keep = np.zeros(d.e, dtype=bool)
        keep[experts] = True
        free &= keep[None, :]
    a0 = np.searchsorted(st.arc_c, rows[0])
    a1 = np.searchsorted(st.arc_c, rows[-1], side="right")
    pos = np.searchsorted(rows, st.arc_c[a0:a1])
    mine = rows[np.minimum(pos, rows.size - 1)] == st.arc_c[a0:a1]
    free[pos[mine], st.arc_e[a0:a1][mine]] = False
    bc, be = np.nonzero(free)
    st.arc_c = np.concatenate([st.arc_c, rows[bc]])
    st.arc_e = np.concatenate([st.arc_e, be.astype(np.int64)])
    return int(bc.size)


def _widen(st: _State, rows: np.ndarray, loads: np.ndarray) -> None:
    """Open clients short of their minimum: all their arcs, else room on their experts."""
    if _missing_arcs(st, rows, None):
        return
    full = np.flatnonzero(loads >= st.data.hi)
    if full.size == 0:
        raise _Fallback("an open client cannot reach its minimum")
    _open_holders(st, full, np.ones(st.data.e, dtype=np.int64))


def _open_takers(st: _State, experts: np.ndarray, deficit: np.ndarray) -> None:
    """Open the frozen clients that could move to under-loaded experts most cheaply
    (and give open clients arcs to them). One pass over the frozen rows."""
    d = st.data
    added = _missing_arcs(st, np.flatnonzero(st.is_open), experts)
    frozen = np.flatnonzero(~st.is_open)
    want = np.zeros(d.e, dtype=np.int64)
    want[experts] = deficit[experts] * 2 + 8
    kk = int(want.max(initial=0))
    best_r = np.zeros((0, experts.size), dtype=np.int64)
    best_c = np.zeros((0, experts.size))
    step = max(1, _BLOCK // d.e)
    for r0 in range(0, frozen.size, step):
        rr = frozen[r0 : r0 + step]
        u = d.u(rr, st.p)
        hk = st.h[rr]
        held_min = np.full(rr.size, float(_BIG))
        takes = np.zeros((rr.size, experts.size), dtype=bool)
        for t in range(int(hk.max(initial=0))):
            sel = hk > t
            ex = st.top_idx[rr, t]
            held_min = np.where(sel, np.minimum(held_min, u[np.arange(rr.size), ex]), held_min)
            takes |= sel[:, None] & (ex[:, None] == experts[None, :])
        room = hk < d.cap[rr]
        uj = u[:, experts]
        switch = np.where(room[:, None], -uj, held_min[:, None] - uj)
        switch[takes | (uj <= _NEG // 2)] = _BIG
        cost = np.concatenate([best_c, switch])
        rows = np.concatenate([best_r, np.broadcast_to(rr[:, None], switch.shape)])
        if cost.shape[0] > kk:
            part = np.argpartition(cost, kk - 1, axis=0)[:kk]
            cost = np.take_along_axis(cost, part, axis=0)
            rows = np.take_along_axis(rows, part, axis=0)
        best_c, best_r = cost, rows
    # each expert's want[j] cheapest movers
    order = np.argsort(best_c, axis=0, kind="stable")
    best_c = np.take_along_axis(best_c, order, axis=0)
    best_r = np.take_along_axis(best_r, order, axis=0)
    ok = (best_c < _BIG) & (np.arange(best_c.shape[0])[:, None] < want[experts][None, :])
    pick = best_r[ok]
    if pick.size == 0:
        if added:
            return
        raise _Fallback("no client can move to an under-loaded expert")
    st.open_rows(np.unique(pick))
