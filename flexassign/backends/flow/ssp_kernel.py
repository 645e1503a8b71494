r"""Compiled kernels of ``flow-warm`` (numba): the candidate pass, the price
refinement's steps and the repair engine, successive shortest paths on the compressed
residual graph.

The count-based problem is a min-cost flow; with the client nodes eliminated its
residual graph has only :math:`E + 1` nodes: the experts and one hub ``O`` (the merged
source and sink, i.e. a client's unused capacity and the experts' load arcs). A client
``i`` holding expert ``a`` and not ``b`` (``b`` among its candidates) offers the arc
``a -> b`` at cost :math:`g_{ia} - g_{ib}` (it swaps ``a`` for ``b``; :math:`g` is the
integer gain, fitness times :math:`2^k`), a client above its minimum offers ``a -> O``
at :math:`g_{ia}` (it drops ``a``), one below its capacity ``O -> b`` at :math:`-g_{ib}`
(it takes ``b``); expert ``a``'s load arc gives ``a -> O`` at cost 0 while its counted
load :math:`t_a` is below :math:`U_a` and ``O -> a`` while it is above :math:`L_a`. The
dense matrix ``w`` keeps, for each ordered pair, the cheapest client's cost and
``arg`` that client; a client's change only touches the rows of the experts it holds.

Potentials :math:`\pi` are the expert prices (:math:`\pi_O = 0` up to a shift): the
reduced cost of a client's swap is :math:`u_{ia} - u_{ib}` with :math:`u = g + p`, so a
price-induced choice has non-negative reduced costs everywhere, and the load arcs are
set at the bound their price's sign calls for (complementary slackness). What remains
is each expert's *excess* (load minus counted load). Successive shortest paths
(Dijkstra on the dense matrix, :math:`O(E^2)` per path) move it, one unit per path,
from experts with too much to experts with too little, and the potentials stay dual
feasible throughout; when no excess is left the assignment is optimal over the
candidate arcs and the potentials are its prices.

:func:`top_candidates` and :func:`refine_steps` compute exactly what the NumPy passes
they stand in for compute (:func:`.warm_data._top`, :func:`.prices.refine_prices`),
only faster. Every function here is plain loops over NumPy arrays, compiled on first
use and cached on disk (``cache=True``; where, and the log line before a compile:
:mod:`.kernel_state`; ``flexassign warmup`` compiles them ahead).
:mod:`flexassign.backends.flow.warm_ssp` drives them and checks what they return.
"""

from __future__ import annotations

import numpy as np

from .kernel_state import njit

#: "No arc" in ``w`` (far from int64 overflow when potentials are added).
_INF = np.int64(2**60)
#: A gain at or below this marks a pair the client may not take.
_NEG_VALID = np.int64(-(2**59))
#: :func:`_dijkstra`'s keys: not reached yet; reached through an ``_INF`` arc only (any
#: real distance is far below); settled.
_FAR = np.int64(2**62)
_UNREACHED = np.int64(2**59)
_DONE = np.int64(-(2**62))
#: At most this many single swap arcs per path are recomputed alone (see :func:`_mark`);
#: beyond, their whole rows are rebuilt.
_CELL_LIST = 65_536

#: Status codes of :func:`ssp`.
OPTIMAL = 0
NO_PATH = 1
BUDGET = 2


@njit(cache=True)
def top_candidates(
    fitness: np.ndarray,
    rows: np.ndarray,
    scale: float,
    p: np.ndarray,
    out_idx: np.ndarray,
    out_val: np.ndarray,
) -> None:
    """Each selected row's ``m`` best experts by :math:`u = \\mathrm{rint}(f \\cdot
    scale) + p`, best first, into ``out_idx`` / ``out_val`` (``m`` = their width).

    ``scale`` is a power of two (exact multiplication); ``p`` holds integer-valued
    floats. Unmasked problems only (every pair may be taken).
    """
    e = fitness.shape[1]
    m = out_idx.shape[1]
    for r in range(rows.size):
        i = rows[r]
        cnt = 0
        worst = -np.inf
        for j in range(e):
            a = fitness[i, j] * scale
            if cnt < m:
                k = cnt
                cnt += 1
            elif a + p[j] > worst - 2.0:  # |rint(a) + p - (a + p)| <= 1 (|u| < 2**52)
                k = m - 1
            else:
                continue
            u = np.rint(a) + p[j]
            if cnt == m and k == m - 1 and u <= worst:
                continue
            while k > 0 and out_val[r, k - 1] < u:
                out_val[r, k] = out_val[r, k - 1]
                out_idx[r, k] = out_idx[r, k - 1]
                k -= 1
            out_val[r, k] = u
            out_idx[r, k] = j
            if cnt == m:
                worst = out_val[r, m - 1]


@njit(cache=True)
def _csr(
    cand: np.ndarray, gain: np.ndarray, held: np.ndarray, e: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each expert, the (client, slot) pairs that have it as a valid candidate,
    its holders first: ``ptr``, ``ci``, ``cs``, the holder count ``nh`` per expert and
    ``loc``, each pair's position (-1 for invalid slots). :func:`_set_held` keeps the
    order as clients move, so a row rebuild visits the holders only."""
    n, m = cand.shape
    ptr = np.zeros(e + 1, np.int64)
    nh = np.zeros(e, np.int64)
    for i in range(n):
        for s in range(m):
            if gain[i, s] > _NEG_VALID:
                ptr[cand[i, s] + 1] += 1
                if held[i, s]:
                    nh[cand[i, s]] += 1
    for a in range(e):
        ptr[a + 1] += ptr[a]
    fill_h = ptr[:e].copy()
    fill_o = ptr[:e] + nh
    ci = np.empty(ptr[e], np.int64)
    cs = np.empty(ptr[e], np.int64)
    loc = np.full((n, m), -1, np.int64)
    for i in range(n):
        for s in range(m):
            if gain[i, s] > _NEG_VALID:
                a = cand[i, s]
                if held[i, s]:
                    j = fill_h[a]
                    fill_h[a] += 1
                else:
                    j = fill_o[a]
                    fill_o[a] += 1
                ci[j] = i
                cs[j] = s
                loc[i, s] = j
    return ptr, ci, cs, nh, loc


@njit(cache=True)
def _set_held(
    i: int,
    s: int,
    value: bool,
    cand: np.ndarray,
    held: np.ndarray,
    ptr: np.ndarray,
    ci: np.ndarray,
    cs: np.ndarray,
    nh: np.ndarray,
    loc: np.ndarray,
) -> None:
    """Set ``held[i, s]`` and keep expert ``cand[i, s]``'s holders first in the CSR."""
    if held[i, s] == value:
        return
    a = cand[i, s]
    j = loc[i, s]
    k = ptr[a] + nh[a] if value else ptr[a] + nh[a] - 1  # the boundary slot
    i2 = ci[k]
    s2 = cs[k]
    ci[k] = i
    cs[k] = s
    loc[i, s] = k
    ci[j] = i2
    cs[j] = s2
    loc[i2, s2] = j
    nh[a] += 1 if value else -1
    held[i, s] = value


@njit(cache=True)
def _offer(
    i: int,
    s: int,
    hub: int,
    cand: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
    w: np.ndarray,
    arg: np.ndarray,
) -> None:
    """Lower the arcs out of the expert client ``i`` holds in slot ``s`` to what ``i``
    offers: a swap for each of its unheld candidates, a drop if above its minimum."""
    a = cand[i, s]
    gi = gain[i, s]
    for s2 in range(cand.shape[1]):
        if held[i, s2] or gain[i, s2] <= _NEG_VALID:
            continue
        b = cand[i, s2]
        v = gi - gain[i, s2]
        if v < w[a, b]:
            w[a, b] = v
            arg[a, b] = i
    if h[i] > kmin[i] and gi < w[a, hub]:
        w[a, hub] = gi
        arg[a, hub] = i


@njit(cache=True)
def _cell(
    a: int,
    b: int,
    w: np.ndarray,
    arg: np.ndarray,
    ptr: np.ndarray,
    ci: np.ndarray,
    cs: np.ndarray,
    nh: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    slot_of: np.ndarray,
) -> None:
    """The swap arc ``a -> b`` alone: the cheapest holder of ``a`` that lists ``b``
    without holding it (``slot_of[b, i]``: ``b``'s slot among client ``i``'s
    candidates, -1 if none), one lookup per holder instead of a row's every slot."""
    best = _INF
    who = -1
    for j in range(ptr[a], ptr[a] + nh[a]):
        i = ci[j]
        s2 = slot_of[b, i]
        if s2 < 0 or held[i, s2] or gain[i, s2] <= _NEG_VALID:
            continue
        v = gain[i, cs[j]] - gain[i, s2]
        if v < best:
            best = v
            who = i
    w[a, b] = best
    arg[a, b] = who


@njit(cache=True)
def _row(
    a: int,
    hub: int,
    w: np.ndarray,
    arg: np.ndarray,
    ptr: np.ndarray,
    ci: np.ndarray,
    cs: np.ndarray,
    nh: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
) -> None:
    """Arcs out of expert ``a``: the cheapest swap to each other expert and the
    cheapest drop (to the hub), over the clients holding ``a``."""
    for b in range(hub + 1):
        w[a, b] = _INF
        arg[a, b] = -1
    for j in range(ptr[a], ptr[a] + nh[a]):  # the holders (kept first by _set_held)
        _offer(ci[j], cs[j], hub, cand, gain, held, h, kmin, w, arg)


@njit(cache=True)
def _take(
    b: int,
    hub: int,
    w: np.ndarray,
    arg: np.ndarray,
    ptr: np.ndarray,
    ci: np.ndarray,
    cs: np.ndarray,
    nh: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    cap: np.ndarray,
) -> None:
    """The arc from the hub to expert ``b``: the cheapest client with room taking it."""
    w[hub, b] = _INF
    arg[hub, b] = -1
    for j in range(ptr[b] + nh[b], ptr[b + 1]):  # the clients listing b, not holding it
        i = ci[j]
        s = cs[j]
        if h[i] >= cap[i]:
            continue
        v = -gain[i, s]
        if v < w[hub, b]:
            w[hub, b] = v
            arg[hub, b] = i


@njit(cache=True)
def _queue_arc(
    a: int, b: int, dirty: np.ndarray, dirty_cell: np.ndarray, cells: np.ndarray
) -> None:
    """Put the swap arc ``a -> b`` on the list ``cells`` for :func:`_cell` (once), or
    mark row ``a`` for a rebuild when single arcs are off or the list is full."""
    k = cells[0, 0] + 1
    if k <= 0 or k >= cells.shape[0]:
        dirty[a] = True
    elif not dirty_cell[a, b]:
        dirty_cell[a, b] = True
        cells[k, 0] = a
        cells[k, 1] = b
        cells[0, 0] = k


@njit(cache=True)
def _mark(
    i: int,
    gone: int,
    taken: int,
    hub: int,
    cand: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
    arg: np.ndarray,
    dirty: np.ndarray,
    dirty_take: np.ndarray,
    dirty_cell: np.ndarray,
    cells: np.ndarray,
) -> None:
    """Before client ``i`` gives up ``gone`` and takes ``taken`` (either may be the
    hub): mark the arcs this invalidates where ``i`` is the cheapest client. Out of
    ``gone``, every swap arc that is ``i``'s (a drop arc: the whole row); out of an
    expert ``i`` keeps, only the swap to ``taken`` (``i`` will hold it) and, when ``i``
    drops to its minimum, the drop. Single arcs go on the list ``cells`` (row 0 holds
    its length, -1 when single arcs are off: then whole rows) and :func:`_cell`
    recomputes each. ``i``'s other arcs keep their cost or only get cheaper
    (:func:`_push`). Measured on the full level of 10,000 x 256 cold starts (captured
    kernel inputs): marking whole rows whenever ``i`` was the cheapest anywhere in them
    rebuilt about ten rows per path; the swap to ``taken`` alone took 20-25 % off, the
    arcs out of ``gone`` alone another 23-35 % (68 -> 52 ms, 42 -> 28 ms)."""
    for s in range(cand.shape[1]):
        a = cand[i, s]
        if held[i, s]:
            if dirty[a]:
                continue
            if a == gone:  # each of its arcs where i is the cheapest, alone
                for b in range(hub + 1):
                    if arg[a, b] == i:
                        if b == hub:  # a drop: the row
                            dirty[a] = True
                        else:
                            _queue_arc(a, b, dirty, dirty_cell, cells)
                        if dirty[a]:
                            break
            elif taken != hub and arg[a, taken] == i:
                _queue_arc(a, taken, dirty, dirty_cell, cells)
            elif taken == hub and h[i] - 1 <= kmin[i] and arg[a, hub] == i:
                dirty[a] = True
        elif gain[i, s] > _NEG_VALID and arg[hub, a] == i:
            dirty_take[a] = True


@njit(cache=True)
def _push(
    i: int,
    hub: int,
    cand: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
    cap: np.ndarray,
    w: np.ndarray,
    arg: np.ndarray,
) -> None:
    """After client ``i`` changed: lower the arcs it now offers to its own costs."""
    m = cand.shape[1]
    for s in range(m):
        if gain[i, s] <= _NEG_VALID:
            continue
        a = cand[i, s]
        if held[i, s]:
            _offer(i, s, hub, cand, gain, held, h, kmin, w, arg)
        elif h[i] < cap[i] and -gain[i, s] < w[hub, a]:
            w[hub, a] = -gain[i, s]
            arg[hub, a] = i


@njit(cache=True)
def _choose_rows(
    rows: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
    p: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
    cap: np.ndarray,
) -> None:
    """Price-induced choice of the given clients among their candidates: the
    ``kmin`` best by :math:`u = g + p`, then more, up to ``cap``, while :math:`u > 0`."""
    m = cand.shape[1]
    u = np.empty(m, np.int64)
    for i in rows:
        for s in range(m):
            held[i, s] = False
            u[s] = gain[i, s] + p[cand[i, s]] if gain[i, s] > _NEG_VALID else -_INF
        cnt = 0
        while cnt < cap[i]:
            best = -1
            for s in range(m):
                if not held[i, s] and u[s] > -_INF and (best < 0 or u[s] > u[best]):
                    best = s
            if best < 0 or (cnt >= kmin[i] and u[best] <= 0):
                break
            held[i, best] = True
            cnt += 1
        h[i] = cnt


@njit(cache=True)
def _is_load_arc(
    u: int, v: int, hub: int, w: np.ndarray, t: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> bool:
    """Whether the cheapest arc ``u -> v`` is the expert's load arc (free, cost 0)."""
    c = w[u, v]
    if u != hub and v == hub:
        return t[u] < hi[u] and c > 0
    if u == hub and v != hub:
        return t[v] > lo[v] and c > 0
    return False


@njit(cache=True)
def _dijkstra(
    hub: int,
    w: np.ndarray,
    pi: np.ndarray,
    t: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    excess: np.ndarray,
    dist: np.ndarray,
    done: np.ndarray,
    pred: np.ndarray,
) -> int:
    """Shortest reduced-cost paths from the nodes with excess (dense, :math:`O(V^2)`),
    until every node with a deficit is settled (stopping at the nearest one instead, one
    path per pass, was 10-20 % slower; settling every node costs the passes late in a
    repair, when few deficits are left, up to twice as much); returns the nearest node
    with a deficit, or -1 if none is reachable. Nodes left unsettled have distance at
    least the farthest deficit's.

    Per settled node, a relaxation pass without branches (selects, which the compiler
    vectorizes) and a pass for the least tentative distance, then the first node that
    carries it; settled nodes carry ``_DONE`` in ``key`` so that no relaxation reaches
    them and the least-distance pass skips them, and an arc of ``w`` at ``_INF`` only
    ever gives a distance of at least ``_UNREACHED``. (Against one pass with branches
    that relaxed and tracked the least key together: captured repairs of a 10,000 x 256
    harness-score cold start, each variant in five separate processes, best: the
    625-client level 50.8 -> 45.8 ms, the full level 31.2 -> 21.9 ms; same paths and
    prices.) Only settled nodes' ``dist`` is set."""
    v_n = hub + 1
    left = 0
    key = np.empty(v_n, np.int64)
    du = _FAR
    u = -1
    for v in range(v_n):
        d = np.int64(0) if excess[v] > 0 else _FAR
        key[v] = d
        done[v] = False
        pred[v] = -1
        if excess[v] < 0:
            left += 1
        if d < du:
            du = d
            u = v
    nearest = -1
    while True:
        if u < 0 or du >= _UNREACHED:
            return nearest
        key[u] = _DONE
        dist[u] = du
        done[u] = True
        if excess[u] < 0:
            if nearest < 0:
                nearest = u
            left -= 1
            if left == 0:
                return nearest
        base = du + pi[u]
        if u != hub:
            wu = w[u]
            for v in range(hub):
                nd = base + wu[v] - pi[v]
                k = key[v]
                better = nd < k
                key[v] = nd if better else k
                pred[v] = u if better else pred[v]
            c = w[u, hub]
            if t[u] < hi[u] and c > 0:
                c = 0
            nd = base + c - pi[hub]
            if c < _INF and nd < key[hub]:
                key[hub] = nd
                pred[hub] = u
        else:
            wh = w[hub]
            for v in range(hub):
                c = wh[v]
                c = 0 if (t[v] > lo[v] and c > 0) else c
                nd = base + c - pi[v]
                k = key[v]
                better = (c < _INF) & (nd < k)
                key[v] = nd if better else k
                pred[v] = u if better else pred[v]
        nd_best = _FAR
        for v in range(v_n):
            k = key[v]
            nd_best = min(nd_best, k if k >= 0 else _FAR)
        nu = -1
        if nd_best < _FAR:
            for v in range(v_n):
                if key[v] == nd_best:
                    nu = v
                    break
        du = nd_best
        u = nu


@njit(cache=True)
def _build_arcs(
    hub: int,
    w: np.ndarray,
    arg: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
    cap: np.ndarray,
) -> None:
    """Every arc of ``w`` at once, each client's :func:`_push` in row order: what
    :func:`_row` and :func:`_take` give for every expert (the same cheapest client:
    both visit an expert's clients in row order at the start), without their jumps
    between the rows of an expert's clients (the arcs of 100,000 clients x 9 candidates:
    about 90 -> 15 ms; the start of a repair with no path 110-150 -> 40-60 ms; at
    10,000 x 256, captured inputs timed in separate processes, 23-33 against 30-33 ms)."""
    for a in range(hub + 1):
        for b in range(hub + 1):
            w[a, b] = _INF
            arg[a, b] = -1
    for i in range(cand.shape[0]):
        _push(i, hub, cand, gain, held, h, kmin, cap, w, arg)


@njit(cache=True)
def ssp(
    cand: np.ndarray,
    gain: np.ndarray,
    kmin: np.ndarray,
    cap: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    p_in: np.ndarray,
    held: np.ndarray,
    init_rows: np.ndarray,
    max_aug: int,
    single_arcs: bool,
) -> tuple[int, np.ndarray, int, int]:
    """Repair a price-induced assignment to an optimum over the candidate arcs.

    Parameters
    ----------
    cand, gain : int64 arrays, shape (n, m)
        Each client's candidate experts and their integer gains (at or below
        ``_NEG_VALID``: the client may not take that one).
    kmin, cap : int64 arrays, shape (n,)
        Each client's minimum and maximum number of experts.
    lo, hi : int64 arrays, shape (E,)
        Load bounds.
    p_in : int64 array, shape (E,)
        Starting prices (``u = gain + p``).
    held : bool array, shape (n, m)
        The assignment, updated in place; rows not in ``init_rows`` must already be a
        price-induced choice at ``p_in`` (e.g. the answer of an earlier call).
    init_rows : int64 array
        Clients whose choice is recomputed at ``p_in`` first.
    max_aug : int
        Augmenting paths allowed before giving up.
    single_arcs : bool
        Recompute a single swap arc, not its whole row, where a client's move only
        invalidates that one (an ``E x n`` int16 slot table; the caller weighs its
        memory).

    Returns
    -------
    status, prices, paths, excess : int, int64 array (E,), int, int
        ``OPTIMAL``, ``NO_PATH`` (some excess cannot reach a deficit over the candidate
        arcs) or ``BUDGET``; the final prices (relative to the hub); augmenting paths
        used; the total excess at the start.
    """
    n, m = cand.shape
    e = lo.size
    hub = e
    v_n = e + 1
    pi = np.zeros(v_n, np.int64)
    pi[:e] = p_in
    h = np.zeros(n, np.int64)
    for i in range(n):
        for s in range(m):
            if held[i, s]:
                h[i] += 1
    _choose_rows(init_rows, cand, gain, pi, held, h, kmin, cap)
    load = np.zeros(e, np.int64)
    for i in range(n):
        for s in range(m):
            if held[i, s]:
                load[cand[i, s]] += 1
    # counted loads at the bound each price's sign calls for; the rest is excess
    t = np.empty(e, np.int64)
    excess = np.zeros(v_n, np.int64)
    for a in range(e):
        if pi[a] > 0:
            t[a] = lo[a]
        elif pi[a] < 0:
            t[a] = hi[a]
        else:
            t[a] = min(max(load[a], lo[a]), hi[a])
        excess[a] = load[a] - t[a]
        excess[hub] -= excess[a]
    total = 0
    for v in range(v_n):
        total += max(excess[v], 0)
    # no excess, or no path allowed: the answer without the residual graph
    if total == 0:
        return OPTIMAL, pi[:e] - pi[hub], 0, total
    if max_aug <= 0:
        return BUDGET, pi[:e] - pi[hub], 0, total
    ptr, ci, cs, nh, loc = _csr(cand, gain, held, e)
    w = np.empty((v_n, v_n), np.int64)
    arg = np.empty((v_n, v_n), np.int64)
    _build_arcs(hub, w, arg, cand, gain, held, h, kmin, cap)
    dist = np.empty(v_n, np.int64)
    done = np.empty(v_n, np.bool_)
    pred = np.empty(v_n, np.int64)
    changed = np.empty(v_n, np.int64)
    dirty = np.zeros(v_n, np.bool_)
    dirty_take = np.zeros(v_n, np.bool_)
    # single swap arcs to recompute (see _mark), where slot_of fits the budget
    use_cells = single_arcs
    side = v_n if use_cells else 1
    dirty_cell = np.zeros((side, side), np.bool_)
    cells = np.zeros((min(side * side, _CELL_LIST) + 1, 2), np.int64)
    if use_cells:
        # expert-major: _cell reads one expert's row for many clients (at 100,000 x 64
        # the full level's repair 574-645 -> 381-395 ms against client-major)
        slot_of = np.full((e, n), -1, np.int16)
        for i in range(n):
            for s in range(m):
                if gain[i, s] > _NEG_VALID:
                    slot_of[cand[i, s], i] = s
    else:
        slot_of = np.full((1, 1), -1, np.int16)
        cells[0, 0] = -1
    paths = 0
    order = np.empty(v_n, np.int64)
    while True:
        if excess.max() <= 0:
            return OPTIMAL, pi[:e] - pi[hub], paths, total
        if paths >= max_aug:
            return BUDGET, pi[:e] - pi[hub], paths, total
        target = _dijkstra(hub, w, pi, t, lo, hi, excess, dist, done, pred)
        if target < 0:
            return NO_PATH, pi[:e] - pi[hub], paths, total
        # raise each potential by its distance, capped at the farthest deficit reached
        # (pi + min(dist, D) stays dual feasible for any D, and every path to a
        # deficit keeps zero reduced cost): nodes far beyond every deficit, or out of
        # reach, would otherwise drift up by their whole distance each pass and leave
        # the prices (and every client's candidates) far from the optimum's
        reach = dist[target]
        for v in range(v_n):
            if done[v] and excess[v] < 0 and dist[v] > reach:
                reach = dist[v]
        for v in range(v_n):
            pi[v] += min(dist[v], reach) if done[v] else reach
        # every reached node now has a zero-cost path from a node with excess: augment
        # to each deficit in turn while its path is still intact
        n_sinks = 0
        for v in range(v_n):
            if done[v] and excess[v] < 0:
                order[n_sinks] = v
                n_sinks += 1
        by_dist = np.argsort(dist[order[:n_sinks]])
        before = paths
        for j in range(n_sinks):
            v = order[by_dist[j]]
            if paths >= max_aug:
                break
            if excess[v] < 0 and _path_ok(v, hub, w, pi, t, lo, hi, excess, pred):
                _augment(
                    v,
                    hub,
                    cand,
                    gain,
                    held,
                    h,
                    kmin,
                    cap,
                    lo,
                    hi,
                    t,
                    excess,
                    w,
                    arg,
                    pred,
                    ptr,
                    ci,
                    cs,
                    nh,
                    loc,
                    dirty,
                    dirty_take,
                    changed,
                    dirty_cell,
                    cells,
                    slot_of,
                )
                paths += 1
        if paths == before:  # the nearest deficit's path is always intact: a broken
            return BUDGET, pi[:e] - pi[hub], paths, total  # state; never loop on it


@njit(cache=True)
def _path_ok(
    target: int,
    hub: int,
    w: np.ndarray,
    pi: np.ndarray,
    t: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    excess: np.ndarray,
    pred: np.ndarray,
) -> bool:
    """Whether the tree path to ``target`` still has zero reduced cost everywhere and
    starts at a node with excess (an earlier augmentation may have used it up)."""
    v = target
    while pred[v] >= 0:
        u = pred[v]
        c = w[u, v]
        if _is_load_arc(u, v, hub, w, t, lo, hi):
            c = 0
        if c >= _INF or c + pi[u] - pi[v] != 0:
            return False
        v = u
    return excess[v] > 0


@njit(cache=True)
def _augment(
    target: int,
    hub: int,
    cand: np.ndarray,
    gain: np.ndarray,
    held: np.ndarray,
    h: np.ndarray,
    kmin: np.ndarray,
    cap: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    t: np.ndarray,
    excess: np.ndarray,
    w: np.ndarray,
    arg: np.ndarray,
    pred: np.ndarray,
    ptr: np.ndarray,
    ci: np.ndarray,
    cs: np.ndarray,
    nh: np.ndarray,
    loc: np.ndarray,
    dirty: np.ndarray,
    dirty_take: np.ndarray,
    changed: np.ndarray,
    dirty_cell: np.ndarray,
    cells: np.ndarray,
    slot_of: np.ndarray,
) -> None:
    """Send the path's bottleneck from its root to ``target`` (a client's arc carries
    one unit, a load arc its room), then bring the arcs of the clients that moved up
    to date."""
    m = cand.shape[1]
    e = hub
    delta = -excess[target]
    v = target
    while pred[v] >= 0:
        u = pred[v]
        if not _is_load_arc(u, v, hub, w, t, lo, hi):
            delta = min(delta, 1)
        elif v == hub:
            delta = min(delta, hi[u] - t[u])
        else:
            delta = min(delta, t[v] - lo[v])
        v = u
    src = v
    delta = min(delta, excess[src])
    n_changed = 0
    v = target
    while pred[v] >= 0:
        u = pred[v]
        if _is_load_arc(u, v, hub, w, t, lo, hi):
            if v == hub:
                t[u] += delta
            else:
                t[v] -= delta
        else:
            i = arg[u, v]
            _mark(
                i, u, v, hub, cand, gain, held, h, kmin, arg, dirty, dirty_take, dirty_cell, cells
            )
            if u != hub:  # i gives up u
                for s in range(m):
                    if held[i, s] and cand[i, s] == u:
                        _set_held(i, s, False, cand, held, ptr, ci, cs, nh, loc)
                        break
            else:
                h[i] += 1
            if v != hub:  # i takes v
                for s in range(m):
                    if not held[i, s] and cand[i, s] == v and gain[i, s] > _NEG_VALID:
                        _set_held(i, s, True, cand, held, ptr, ci, cs, nh, loc)
                        break
            else:
                h[i] -= 1
            changed[n_changed] = i
            n_changed += 1
        v = u
    excess[src] -= delta
    excess[target] += delta
    for k in range(1, cells[0, 0] + 1):
        a = cells[k, 0]
        b = cells[k, 1]
        dirty_cell[a, b] = False
        if not dirty[a]:  # else the row's rebuild below covers it
            _cell(a, b, w, arg, ptr, ci, cs, nh, gain, held, slot_of)
    if cells[0, 0] > 0:
        cells[0, 0] = 0
    for a in range(e):
        if dirty[a]:
            _row(a, hub, w, arg, ptr, ci, cs, nh, cand, gain, held, h, kmin)
            dirty[a] = False
        if dirty_take[a]:
            _take(a, hub, w, arg, ptr, ci, cs, nh, gain, held, h, cap)
            dirty_take[a] = False
    for j in range(n_changed):
        _push(changed[j], hub, cand, gain, held, h, kmin, cap, w, arg)


@njit(cache=True)
def _quantile_step(
    key_e: np.ndarray,
    key_m: np.ndarray,
    count: int,
    need: np.ndarray,
    limit: np.ndarray,
    margin_cap: int,
    out: np.ndarray,
    sign: float,
) -> None:
    """Per expert with ``need > 0``: one unit past the ``need``-th smallest of its
    margins (clipped to ``[0, margin_cap]``; all of them when it has fewer), at most
    ``limit``, added to ``out`` times ``sign``."""
    e = need.size
    start = np.zeros(e + 1, np.int64)
    for j in range(count):
        start[key_e[j] + 1] += 1
    for a in range(e):
        start[a + 1] += start[a]
    fill = start[:e].copy()
    grouped = np.empty(count, np.int64)
    for j in range(count):
        a = key_e[j]
        x = key_m[j]
        grouped[fill[a]] = 0 if x < 0 else (margin_cap if x > margin_cap else np.int64(x))
        fill[a] += 1
    for a in range(e):
        size = start[a + 1] - start[a]
        if need[a] <= 0 or size == 0:
            continue
        r = min(need[a], size)
        # selection, not a sort (100,000 x 9 candidates, three steps: 120 -> 78 ms)
        part = np.partition(grouped[start[a] : start[a + 1]], r - 1)
        pick = float(part[r - 1]) + 1.0
        out[a] += sign * min(pick, limit[a])


@njit(cache=True)
def refine_steps(
    idx: np.ndarray,
    val: np.ndarray,
    cap: np.ndarray,
    kmin: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    prices: np.ndarray,
    steps: int,
    damping: float,
    entry_slots: int,
    neg: float,
    margin_cap: int,
) -> np.ndarray:
    """The loops of :func:`flexassign.backends.flow.prices.refine_prices` (same arguments
    and the same float64 price change, before rounding to integers; see there)."""
    n, m = val.shape
    e = lo.size
    delta = np.zeros(e)
    us = np.empty((n, m))
    ids = np.empty((n, m), np.int64)
    held = np.empty((n, m), np.bool_)
    h = np.empty(n, np.int64)
    load = np.empty(e, np.int64)
    key_e = np.empty(n * m, np.int64)
    key_m = np.empty(n * m)
    half = neg / 2
    for _ in range(steps):
        for i in range(n):  # each row's u at the current change, sorted (stable)
            for s in range(m):
                x = val[i, s] + delta[idx[i, s]] if val[i, s] > half else neg
                k = s
                while k > 0 and us[i, k - 1] < x:
                    us[i, k] = us[i, k - 1]
                    ids[i, k] = ids[i, k - 1]
                    k -= 1
                us[i, k] = x
                ids[i, k] = idx[i, s]
        load[:] = 0
        for i in range(n):
            c = 0
            for s in range(m):
                ok = us[i, s] > half
                hd = ok and (s < kmin[i] or (s < cap[i] and us[i, s] > 0))
                held[i, s] = hd
                if hd:
                    c += 1
                    load[ids[i, s]] += 1
            h[i] = c
        down = np.zeros(e, np.int64)
        up = np.zeros(e, np.int64)
        p = prices + delta
        lim_down = np.empty(e)
        lim_up = np.empty(e)
        any_down = False
        any_up = False
        for a in range(e):
            over = max(load[a] - hi[a], 0)
            under = max(lo[a] - load[a], 0)
            if over > 0:
                down[a] = over
            elif p[a] > 0 and load[a] > lo[a]:
                down[a] = load[a] - lo[a]
            if under > 0:
                up[a] = under
            elif p[a] < 0 and load[a] < hi[a]:
                up[a] = hi[a] - load[a]
            lim_down[a] = np.inf if over > 0 else p[a]
            lim_up[a] = np.inf if under > 0 else -p[a]
            any_down = any_down or down[a] > 0
            any_up = any_up or up[a] > 0
        if not (any_down or any_up):
            break
        step = np.zeros(e)
        if any_down:
            cnt = 0
            for i in range(n):
                nxt = us[i, h[i]] if h[i] < m else neg
                alt = max(nxt, 0.0) if h[i] > kmin[i] else nxt
                for s in range(m):
                    if held[i, s] and down[ids[i, s]] > 0:
                        key_e[cnt] = ids[i, s]
                        key_m[cnt] = us[i, s] - alt
                        cnt += 1
            _quantile_step(key_e, key_m, cnt, down, lim_down, margin_cap, step, -1.0)
        if any_up:
            cnt = 0
            for i in range(n):
                low = us[i, max(h[i] - 1, 0)]
                bar = min(low, 0.0) if h[i] < cap[i] else low
                for s in range(min(m, h[i] + entry_slots)):
                    if us[i, s] > half and not held[i, s] and up[ids[i, s]] > 0:
                        key_e[cnt] = ids[i, s]
                        key_m[cnt] = bar - us[i, s]
                        cnt += 1
            _quantile_step(key_e, key_m, cnt, up, lim_up, margin_cap, step, 1.0)
        for a in range(e):
            delta[a] += np.rint(damping * step[a])
    return delta


@njit(cache=True)
def cheapest_takers(
    fitness: np.ndarray,
    rows: np.ndarray,
    scale: float,
    p: np.ndarray,
    short: np.ndarray,
    want: np.ndarray,
    low: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
) -> np.ndarray:
    """For each expert in ``short``, the ``want`` clients that would take it at the
    least loss :math:`low_i - u_{id}` (``u = rint(f * scale) + p``), among the clients
    that do not list it as a valid candidate: shape ``(want.max(), short.size)``, each
    column by increasing (loss, client), -1 past its ``want``.

    One pass over the selected rows of ``fitness`` (row-major, a bounded max-heap per
    expert) instead of a gather and a partition of ``n x short.size`` columns; the same
    pairs as :func:`flexassign.backends.flow.warm_ssp._add_takers`' NumPy code (ties
    broken by the lower client index). Unmasked problems only; clients with
    ``rows`` but no capacity are the caller's to leave out (their ``low`` is ``inf``).
    """
    n = rows.size
    s_n = short.size
    e = fitness.shape[1]
    width = 0
    for k in range(s_n):
        width = max(width, want[k])
    heap_l = np.empty((s_n, max(width, 1)))
    heap_i = np.empty((s_n, max(width, 1)), np.int64)
    size = np.zeros(s_n, np.int64)
    col = np.full(e, -1, np.int64)
    for k in range(s_n):
        col[short[k]] = k
    listed = np.full(e, -1, np.int64)  # listed[a] == i: client i has a as a candidate
    for i in range(n):
        if not np.isfinite(low[i]):
            continue
        for s in range(cand.shape[1]):
            if gain[i, s] > _NEG_VALID:
                listed[cand[i, s]] = i
        r = rows[i]
        for k in range(s_n):
            d = short[k]
            if listed[d] == i or want[k] <= 0:
                continue
            loss = low[i] - (np.rint(fitness[r, d] * scale) + p[d])
            sz = size[k]
            if sz < want[k]:  # sift up into the max-heap
                j = sz
                size[k] = sz + 1
            elif loss < heap_l[k, 0]:  # replace the worst (later clients lose ties)
                j = 0
                # sift down from the root with the new entry
                while True:
                    c = 2 * j + 1
                    if c >= sz:
                        break
                    if c + 1 < sz and (
                        heap_l[k, c + 1] > heap_l[k, c]
                        or (heap_l[k, c + 1] == heap_l[k, c] and heap_i[k, c + 1] > heap_i[k, c])
                    ):
                        c += 1
                    if heap_l[k, c] > loss or (heap_l[k, c] == loss and heap_i[k, c] > i):
                        heap_l[k, j] = heap_l[k, c]
                        heap_i[k, j] = heap_i[k, c]
                        j = c
                    else:
                        break
                heap_l[k, j] = loss
                heap_i[k, j] = i
                continue
            else:
                continue
            while j > 0:
                par = (j - 1) // 2
                if heap_l[k, par] < loss or (heap_l[k, par] == loss and heap_i[k, par] < i):
                    heap_l[k, j] = heap_l[k, par]
                    heap_i[k, j] = heap_i[k, par]
                    j = par
                else:
                    break
            heap_l[k, j] = loss
            heap_i[k, j] = i
    out = np.full((max(width, 0), s_n), -1, np.int64)
    for k in range(s_n):
        sz = size[k]
        keys = np.empty(sz)
        for j in range(sz):
            keys[j] = heap_l[k, j]
        order = np.argsort(keys, kind="mergesort")
        # equal losses: by client index (the heap's order is arbitrary among them)
        j = 0
        while j < sz:
            j2 = j
            while j2 + 1 < sz and keys[order[j2 + 1]] == keys[order[j]]:
                j2 += 1
            ids = np.empty(j2 - j + 1, np.int64)
            for q in range(j, j2 + 1):
                ids[q - j] = heap_i[k, order[q]]
            ids.sort()
            for q in range(j, j2 + 1):
                out[q, k] = ids[q - j]
            j = j2 + 1
    return out


@njit(cache=True)
def off_candidate_best(
    fitness: np.ndarray,
    rows: np.ndarray,
    scale: float,
    p: np.ndarray,
    cand: np.ndarray,
    gain: np.ndarray,
) -> np.ndarray:
    """Each selected client's best :math:`u = \\mathrm{rint}(f \\cdot scale) + p` over
    the experts that are not among its valid candidates (``-inf`` when there are none):
    the exact check off the candidates of
    :func:`flexassign.backends.flow.warm_ssp._recheck`, in one pass over the rows
    (``cand``, ``gain``: the selected clients' rows; unmasked problems only)."""
    e = fitness.shape[1]
    m = cand.shape[1]
    out = np.empty(rows.size)
    listed = np.full(e, -1, np.int64)
    for r in range(rows.size):
        for s in range(m):
            if gain[r, s] > _NEG_VALID:
                listed[cand[r, s]] = r
        i = rows[r]
        best = -np.inf
        for j in range(e):
            if listed[j] != r:
                u = np.rint(fitness[i, j] * scale) + p[j]
                if u > best:
                    best = u
        out[r] = best
    return out
