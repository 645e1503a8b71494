r"""Warm-started exact min-cost flow for count-based problems (``method="flow-warm"``).

The count-based problem (equal client weights, no binding knapsack, hard load bounds)
is a min-cost flow whose optimal duals are one *price* :math:`p_e` per expert (relative
to the merged source/sink node ``O``). Given prices, every client's best choice is
local: with :math:`u_{ce} = S_{ce} + p_e` (in integer cost units, see below) it takes
its :math:`k^{\min}_c` best experts by :math:`u` and any further ones, up to
:math:`k_c`, with :math:`u_{ce} > 0`. An assignment :math:`x` is optimal if and only if
some prices satisfy

1. every client ``c`` holding the set :math:`X_c`: :math:`\min_{e \in X_c} u_{ce} \ge
   \max_{e \notin X_c} u_{ce}` (over its free experts); if :math:`|X_c| < k_c` then
   no unheld expert has :math:`u_{ce} > 0`; if :math:`|X_c| > k^{\min}_c` then no held
   expert has :math:`u_{ce} < 0`;
2. every expert ``e`` with load :math:`\ell_e`: :math:`p_e \ge 0` if :math:`\ell_e < U_e`
   and :math:`p_e \le 0` if :math:`\ell_e > L_e`;

(complementary slackness; these are the reduced costs of the flow network in
:mod:`flexassign.backends.flow`, with the client nodes eliminated), plus primal
feasibility. Because :math:`E \ll N`, prices are cheap to carry and most clients'
choices are settled by them.

Algorithm
---------
1. Start from prices: ``options["prices"]`` (e.g. the previous round's
   ``stats["expert_prices"]``), or, cold, from the same solver run on a random quarter
   of the clients (recursively, down to ``max(8 E, 4096)`` clients, with load bounds
   scaled to the sample; each level starts from the prices of the one below, the
   smallest from none). Handed-over prices that put more than 10 % of the load outside
   the bounds (prices of a different problem, or of a round long ago) are dropped for
   this cold start (``stats["stale_prices"]``). A price is added to fitness (the
   convention of ``flow``'s ``expert_prices``: a bonus for an expert that needs
   clients, negative for one that has too many).
2. One block-wise pass over the fitness matrix: each client's top ``k_max + margin + 1``
   experts by :math:`u` (its *candidates*). With prices, three damped tâtonnement
   steps on the candidates alone refine them (:mod:`._prices`: each expert moves
   its price by the quantile of its holders' exit margins, or its candidates' entry
   margins, that would put its load back inside its bounds). Then each client's
   price-induced choice among its candidates and its *slack* (how far the prices may
   move before condition 1 can break; a bound on the other experts' :math:`u` enters
   it, so a client that might prefer a non-candidate has negative slack).
3. Clients with small slack are *open* (with prices: the smallest slacks, 5 times the
   share of load the prices left outside the bounds before refinement, 2-60 % of the
   clients; with no prices: everyone, plus each expert's best clients as arcs, the
   candidates then chosen at a rough price guess from five refinement steps on wider
   candidates, which saves a round of added arcs on most instances); the
   others are *frozen* at their choice. The open clients, restricted to their own
   capacity plus ``margin`` best candidates, are solved exactly with OR-Tools
   ``SimpleMinCostFlow`` against the load bounds left by the frozen clients
   (artificial arcs of large cost keep that network feasible; if they carry flow,
   clients that can move to or from those experts are opened).
4. New prices: the greatest potentials below the old prices in the residual graph of
   the open clients compressed onto the :math:`E + 1` expert and ``O`` nodes
   (Bellman-Ford on a dense matrix). They satisfy conditions 1-2 for every open
   client's candidate arcs and every expert by construction.
5. Certificate: a frozen client whose slack exceeds the spread of the price change
   provably still satisfies condition 1; the few others are re-checked exactly on
   their full row, as are open clients' pruned arcs (against a stored bound on their
   best pruned :math:`u`). Failures reopen clients or add arcs, and steps 3-5 repeat.
   (Re-freezing everyone at the new prices and drawing a small open set around the
   failures instead was tried: with refined prices it cost more rounds, e.g. 6 rounds
   and 133 ms against 2 rounds and 92 ms at 10,000 x 256, tuning seed 8. So was
   freezing only the open clients whose slack exceeds 2-8 times the last price change
   over their own candidates: 3 rounds and 105-112 ms on the same instance.)

When every check passes, the prices prove the assignment optimal for the full problem.
If the open set grows past 75 % of the clients, a frozen client's load cannot be
placed, or no certificate comes within ``max_rounds``, the ``flow`` backend solves the
problem instead, through the registry (``stats["fallback"]`` says why). Memory stays
lean: no :math:`N \times E` integer or float temporaries (blocks of at most 2**21
entries), only the boolean answer and the per-client top candidates.

Costs are integers: fitness times a power of two (as in ``flow``), so the result is
exact for integral fitness and otherwise within ``stats["rounding_error_bound"]``.

Options
-------
``prices``
    :math:`E` finite expert prices in fitness units (``stats["expert_prices"]`` of an
    earlier solve, from ``flow`` or ``flow-warm``); a wrong or stale guess costs time,
    never correctness.
``prune_margin``
    Extra candidate experts per client beyond its capacity (default 4, >= 1).
``max_rounds``
    Certificate rounds before falling back to ``flow`` (default 12, >= 1).

Stats
-----
``expert_prices`` (the certified prices: pass them back next round), ``rounds``,
``open_clients``, ``open_arcs``, ``rechecked_rows``, ``reopened`` and ``added_arcs``
(per failed round), ``price_source`` (``"options"``, ``"sample"`` or ``"zero"``),
``levels`` (sample sizes solved, cold start), ``initial_excess`` and
``refined_excess`` (share of the load outside the bounds at the starting and the
refined prices), ``refined_price_change`` (rms, fitness units), ``stale_prices``
(handed-over prices dropped, and why), ``price_time``,
``certificate``, ``solver_status``, ``rounding_error_bound``, ``objective_scale`` and
``objective_scale_exponent`` (costs are fitness times ``2**exponent``), ``build_time``,
``solve_time``; when ``flow`` took over, its own stats plus ``fallback`` and
``warm_stats``.

Examples
--------
>>> import numpy as np
>>> from flexassign import AssignmentProblem, solve_assignment
>>> rng = np.random.default_rng(0)
>>> p = AssignmentProblem.balanced(rng.random((300, 6)), capacity=2, tolerance=0.1)
>>> cold = solve_assignment(p, method="flow-warm")
>>> warm = solve_assignment(p, method="flow-warm",
...                         options={"prices": cold.stats["expert_prices"]})
>>> full = solve_assignment(p, method="flow", options={"prune": False})
>>> cold.status.value, abs(warm.objective - full.objective) < 1e-9
('optimal', True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidProblemError
from ..problem import AssignmentProblem
from ..result import Status
from ._prices import refine_prices
from ._residual import min_swap_costs
from .base import BackendOutput, SolveOptions

__all__ = ["solve"]

#: Sentinels for "no arc" (kept far from int64 overflow when added or subtracted).
_NEG = -(2**61)
_BIG = 2**61
#: Cost units: max |cost| times flow, nodes and path length stays below this (as in
#: ``flow``), and every cost plus price stays an integer that float64 holds exactly.
_MAX_COST_PRODUCT = 2.0**60
_MAX_EXACT = 2.0**51
#: Elements per block of rows in the passes over the fitness matrix.
_BLOCK = 1 << 21
#: With prices: open this many times the share of load that the handed-over (or
#: sample) prices put outside the bounds, before refinement (the clients with the
#: smallest slack after it), at least ``_OPEN_MIN``, at most ``_OPEN_FIRST``.
#: (Measured on round-2 instances, tuning seeds 1-3, CPU of the solve: at 10,000 x 256
#: 20 % certifies in one round in 59-60 ms where 15 % took 5-6 rounds (77-94 ms) and
#: 60 % 98-104 ms; at 100,000 x 64 4 % took 320 ms against 473 ms for 20 %; at
#: 100,000 x 256 6-10 % 520-530 ms against 681 ms for 20 %. The rule gives 22 %, 4 %
#: and 16 %.)
_OPEN_EXCESS = 5.0
_OPEN_FIRST = 0.6
_OPEN_MIN = 0.02
#: Price refinement before the first exact solve (see ``_prices.refine_prices``): damped
#: steps on every client's candidates (measured at 10,000 x 256: three steps take the
#: price error from 1.7e-3 to 4.2e-4 rms; more steps stall near 3.5e-4; refining
#: only the half of the clients with the smallest slack made seed 2 take 5-9 rounds).
_REFINE_STEPS = 3
_REFINE_DAMPING = 0.8
_ZERO_REFINE_STEPS = 5
_ZERO_REFINE_EXTRA = 8
#: Handed-over prices that leave more than this share of the load outside the bounds
#: are dropped for a cold start (measured: prices from a different problem left 85-131 %
#: outside and cost 0.9-2.1 s through two rounds and the fallback to ``flow``, against
#: 0.11-0.25 s cold, at 20,000 x 64 and 10,000 x 256; at 20,000 x 128 with fitness drift
#: 0.1-0.3 since the prices' round they left 10-14 % and the warm solve took 162-271 ms
#: against 144-175 ms cold, with drift 0.03 7 % and 117 against 154 ms; a previous
#: round's prices at the benchmark's drift 0.01 leave about 1-4 %).
_STALE_EXCESS = 0.1
#: Fall back to ``flow`` once more than this fraction of the clients is open.
_OPEN_MAX = 0.75
#: Cold start: solve a random quarter of the clients first while above this many.
_SAMPLE_MIN_PER_EXPERT = 8
_SAMPLE_MIN = 4096


class _Fallback(Exception):
    """The warm path gives up; ``flow`` solves the problem."""


class _StalePrices(Exception):
    """Handed-over prices put so much load outside the bounds that a cold start wins."""

    def __init__(self, share: float) -> None:
        super().__init__(share)
        self.share = share


@dataclass
class _Data:
    """The count-based problem with fixed pairs taken out (possibly a row sample)."""

    fitness: np.ndarray  # (N_full, E) float64, never copied
    rows: np.ndarray | None  # row sample (indices into fitness) or None for all rows
    allowed: np.ndarray | None  # full-size masks, indexed through rows
    fixed: np.ndarray | None
    cap: np.ndarray  # (n,) int64: capacity left after fixed pairs
    kmin: np.ndarray  # (n,) int64: minimum left after fixed pairs
    lo: np.ndarray  # (E,) int64: clients each expert needs beyond its fixed ones
    hi: np.ndarray  # (E,) int64: clients each expert may take beyond its fixed ones
    scale_exp: int  # costs are fitness * 2**scale_exp (an exponent: 2**1100 overflows)

    @property
    def n(self) -> int:
        return int(self.cap.size)

    @property
    def e(self) -> int:
        return int(self.fitness.shape[1])

    def u(self, sel: slice | np.ndarray, p: np.ndarray) -> np.ndarray:
        """:math:`u = \\mathrm{round}(S \\cdot 2^k) + p` for the selected rows, ``_NEG``
        on pairs a client may not take. Integers held exactly in float64 (below 2**52)."""
        idx: slice | np.ndarray = sel
        if self.rows is not None:
            idx = self.rows[sel]
        u = np.ldexp(self.fitness[idx], self.scale_exp)
        np.rint(u, out=u)
        u += p.astype(np.float64)[None, :]
        if self.allowed is not None:
            u[~self.allowed[idx]] = _NEG
        if self.fixed is not None:
            u[self.fixed[idx]] = _NEG
        u[self.cap[sel] == 0] = _NEG
        return u

    def cost(self, rows: np.ndarray, experts: np.ndarray) -> np.ndarray:
        """Integer costs of the given pairs (rows are sample-local)."""
        r = rows if self.rows is None else self.rows[rows]
        return np.rint(np.ldexp(self.fitness[r, experts], self.scale_exp)).astype(np.int64)


def _scale(problem: AssignmentProblem, total_flow: int) -> tuple[int, bool]:
    """Exponent ``k`` of the power-of-two cost scale ``2**k`` (as in ``flow``) and
    whether costs are exact."""
    n, e = problem.shape
    fit = problem.fitness
    peak = 0.0
    step = max(1, _BLOCK // e)
    for r0 in range(0, n, step):
        blk = fit[r0 : r0 + step]
        peak = max(peak, float(blk.max()), -float(blk.min()))
    # integral fitness: a few entries usually settle it before a full pass
    probe = fit[:: max(1, n // 64)][:, :: max(1, e // 16)]
    integral = bool(np.all(probe == np.round(probe)))
    for r0 in range(0, n, step) if integral else ():
        blk = fit[r0 : r0 + step]
        if not np.all(blk == np.round(blk)):
            integral = False
            break
    limit = _MAX_COST_PRODUCT / (max(total_flow + 1, n + e + 3) * 4 * (e + 2))
    limit = min(limit, _MAX_EXACT / (4 * (e + 2)))
    if peak == 0.0 or (integral and peak <= limit):
        return 0, integral
    exp = math.floor(math.log2(limit) - math.log2(peak))
    while math.ldexp(peak, exp) > limit:
        exp -= 1
    return exp, False


def _prepare(problem: AssignmentProblem) -> tuple[_Data, np.ndarray, bool, int]:
    """The data without fixed pairs, the fixed load per expert, exactness, total flow."""
    n, e = problem.shape
    fixed = problem.fixed
    if fixed is not None:
        f_cnt = fixed.sum(axis=1)
        f_load = fixed.sum(axis=0).astype(np.int64)
    else:
        f_cnt = np.zeros(n, dtype=np.int64)
        f_load = np.zeros(e, dtype=np.int64)
    cap = np.maximum(problem.capacity - f_cnt, 0).astype(np.int64)
    kmin = np.maximum(problem.min_experts - f_cnt, 0).astype(np.int64)
    if problem.allowed is not None:  # a client cannot take more than it may
        free_cnt = problem.allowed.sum(axis=1) - f_cnt
        cap = np.minimum(cap, np.maximum(free_cnt, 0))
        if (kmin > cap).any():
            raise _Fallback("a client has fewer free experts than its minimum")
    lo_i, hi_i = problem.count_bounds()
    lo = np.maximum(lo_i - f_load, 0).astype(np.int64)
    hi = (hi_i - f_load).astype(np.int64)
    if (hi < 0).any() or (hi < lo).any():
        raise _Fallback("fixed pairs exceed an expert's maximum load")
    total = int(cap.sum())
    scale_exp, exact = _scale(problem, total)
    data = _Data(problem.fitness, None, problem.allowed, fixed, cap, kmin, lo, hi, scale_exp)
    return data, f_load, exact, total


# ----------------------------------------------------------------------------- passes
def _top(data: _Data, p: np.ndarray, sel: np.ndarray | None, m1: int) -> tuple[np.ndarray, ...]:
    """Each selected client's ``m1`` best experts by u, sorted (indices, values)."""
    e = data.e
    rows = np.arange(data.n) if sel is None else sel
    idx = np.empty((rows.size, m1), dtype=np.int32)
    val = np.empty((rows.size, m1), dtype=np.float64)
    step = max(1, _BLOCK // e)
    # integer u and the expert index packed in one int64 key: one value partition and a
    # small sort replace an index partition and two gathers (when every |u| fits)
    bits = max(1, (e - 1).bit_length())
    low_key = -(2 ** (61 - bits))
    peak = _MAX_EXACT / (4 * (e + 2)) + float(np.abs(p).max(initial=0))
    keyed = m1 < e and peak < 2.0 ** (60 - bits)
    masked = data.allowed is not None or data.fixed is not None or bool((data.cap == 0).any())
    cols = np.arange(e, dtype=np.int64)
    for r0 in range(0, rows.size, step):
        r1 = min(rows.size, r0 + step)
        u = data.u(slice(r0, r1) if sel is None else rows[r0:r1], p)
        if keyed:
            key = u.astype(np.int64)
            if masked:
                np.maximum(key, low_key, out=key)
            key <<= bits
            key |= cols  # the low bits of a multiple of 2**bits are zero, sign or not
            key.partition(e - m1, axis=1)  # in place: no copy of the block
            best = np.sort(key[:, e - m1 :], axis=1)[:, ::-1]
            idx[r0:r1] = best & (2**bits - 1)
            v = (best >> bits).astype(np.float64)  # floor division: exactly u again
            v[v <= low_key] = _NEG
            val[r0:r1] = v
            continue
        if m1 < e:
            part = np.argpartition(u, e - m1, axis=1)[:, e - m1 :]
            pv = np.take_along_axis(u, part, axis=1)
        else:
            part = np.broadcast_to(np.arange(e), u.shape)
            pv = u
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[r0:r1] = np.take_along_axis(part, order, axis=1)
        val[r0:r1] = np.take_along_axis(pv, order, axis=1)
    return idx, val


def _choose(val: np.ndarray, cap: np.ndarray, kmin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Price-induced choice (held = a prefix of the sorted candidates) and its slack."""
    n, m1 = val.shape
    j = np.arange(m1)[None, :]
    held = (j < kmin[:, None]) | ((j < cap[:, None]) & (val > 0))
    h = held.sum(axis=1)
    if (val[held] <= _NEG // 2).any():
        raise _Fallback("a client cannot reach its minimum")
    rows = np.arange(n)
    low = np.where(h > 0, val[rows, np.maximum(h - 1, 0)], _BIG)
    high = np.where(h < m1, val[rows, np.minimum(h, m1 - 1)], _NEG)
    return h, _slack(low, high, h, cap, kmin)


def _slack(
    low: np.ndarray, high: np.ndarray, h: np.ndarray, cap: np.ndarray, kmin: np.ndarray
) -> np.ndarray:
    """How far prices may spread before condition 1 can fail (negative: it fails)."""
    s = np.minimum(low - high, _BIG)
    s = np.minimum(s, np.where(h < cap, -high, _BIG))
    return np.minimum(s, np.where(h > kmin, low, _BIG))


# ----------------------------------------------------------------------------- state
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


# ----------------------------------------------------------------------------- network
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
    """Smallest ``delta`` over each frozen client's held experts (0 if it holds none)."""
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


# ----------------------------------------------------------------------------- refinement
def _excess_share(data: _Data, top_idx: np.ndarray, h: np.ndarray) -> float:
    """Share of the load that the choice ``top_idx[c, :h[c]]`` puts outside the bounds."""
    load = np.zeros(data.e, dtype=np.int64)
    for t in range(int(h.max(initial=0))):
        load += np.bincount(top_idx[h > t, t], minlength=data.e)
    excess = np.maximum(load - data.hi, 0) + np.maximum(data.lo - load, 0)
    return float(excess.sum()) / max(float(load.sum()), 1.0)


def _refine_steps(
    data: _Data, idx: np.ndarray, val: np.ndarray, p: np.ndarray, steps: int
) -> np.ndarray:
    """Price change from ``steps`` refinement steps on the candidates ``idx, val``."""
    return refine_prices(
        idx, val, data.cap, data.kmin, data.lo, data.hi, p, steps=steps, damping=_REFINE_DAMPING
    )


def _refine(
    data: _Data, p: np.ndarray, top_idx: np.ndarray, top_val: np.ndarray, stats: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Refined prices, the candidates re-sorted at them, and an upper bound on every
    client's u outside its candidates (``None`` when every expert is a candidate)."""
    delta = _refine_steps(data, top_idx, top_val, p, _REFINE_STEPS)
    stats["refined_price_change"] = math.ldexp(
        float(np.sqrt(np.mean(delta.astype(np.float64) ** 2))), -data.scale_exp
    )
    bound_out = None
    if top_val.shape[1] < data.e:  # other experts: at most the last candidate + the largest rise
        last = top_val[:, -1]
        bound_out = np.where(last > _NEG // 2, last + float(max(int(delta.max()), 0)), _NEG)
    u = np.where(top_val > _NEG // 2, top_val + delta[top_idx].astype(np.float64), _NEG)
    order = np.argsort(-u, axis=1, kind="stable")
    return (
        p + delta,
        np.take_along_axis(top_idx, order, axis=1),
        np.take_along_axis(u, order, axis=1),
        bound_out,
    )


# ----------------------------------------------------------------------------- driver
def _solve_data(
    data: _Data,
    p0: np.ndarray | None,
    margin: int,
    max_rounds: int,
    stats: dict[str, Any],
    stale_above: float | None = None,
) -> tuple[np.ndarray, np.ndarray, _State, _Sub]:
    """Certified optimum of ``data`` starting from integer prices ``p0`` (refined first),
    or, without prices, from zero prices with every client open. Raises
    ``_StalePrices`` when ``p0`` puts more than ``stale_above`` of the load outside the
    bounds.

    Returns the final prices (experts then O), per-expert loads, the state (frozen
    clients' choices) and the open clients' flow.
    """
    n, e = data.n, data.e
    kmax = int(data.cap.max(initial=0))
    m = min(e, kmax + margin)
    m1 = min(e, m + 1)
    p = np.zeros(e, dtype=np.int64) if p0 is None else p0.astype(np.int64).copy()
    # condition 2 fixes a price's sign where a bound cannot bind: start there
    p[data.hi >= n] = np.maximum(p[data.hi >= n], 0)
    p[data.lo == 0] = np.minimum(p[data.lo == 0], 0)
    if p0 is None and m1 < e and _ZERO_REFINE_STEPS:
        # no prices: a rough guess from refinement on wider candidates picks better
        # candidate arcs for the everyone-open solve (fewer rounds of added arcs)
        wide_idx, wide_val = _top(data, p, None, min(e, m1 + _ZERO_REFINE_EXTRA))
        p = p + _refine_steps(data, wide_idx, wide_val, p, _ZERO_REFINE_STEPS)
        del wide_idx, wide_val
    top_idx, top_val = _top(data, p, None, m1)
    bound_out = None
    frac = 1.0
    if p0 is not None:
        h0, _ = _choose(top_val, data.cap, data.kmin)
        share = _excess_share(data, top_idx, h0)
        stats["initial_excess"] = share
        if stale_above is not None and share > stale_above:
            raise _StalePrices(share)
        frac = min(max(_OPEN_EXCESS * share, _OPEN_MIN), _OPEN_FIRST)
        p, top_idx, top_val, bound_out = _refine(data, p, top_idx, top_val, stats)
    h, slack = _choose(top_val, data.cap, data.kmin)
    if bound_out is not None:
        low = np.where(h > 0, top_val[np.arange(n), np.maximum(h - 1, 0)], _BIG)
        slack = np.minimum(slack, _slack(low, bound_out, h, data.cap, data.kmin))
    st = _State(
        data=data,
        p=p,
        top_idx=top_idx,
        h=h,
        slack=slack,
        is_open=np.zeros(n, dtype=bool),
        m=m,
        margin=margin,
        outside=np.full(n, float(_NEG)),
    )
    if p0 is not None:
        stats["refined_excess"] = _excess_share(data, top_idx, h)
    k_open = max(1, math.ceil(frac * n))
    if k_open >= n:
        first = np.arange(n)
    else:
        first = np.argpartition(slack, k_open - 1)[:k_open]
    first = np.sort(first)
    st.open_rows(first, (top_idx[first], top_val[first]))  # same prices: no second pass
    if bound_out is not None:
        st.outside[first] = np.maximum(st.outside[first], bound_out[first])
    del top_val
    if k_open >= n and m < e:
        _expert_candidates(st, int(data.lo.max(initial=0)) + margin)
    for rnd in range(1, max_rounds + 1):
        stats["rounds"] = rnd
        if frac < 1 and int(st.is_open.sum()) > max(_OPEN_MAX * n, 64):
            raise _Fallback(f"open set grew past {_OPEN_MAX:.0%} of the clients")
        fload = st.frozen_load()
        over = np.flatnonzero(fload > data.hi)
        if over.size:  # frozen clients alone overload an expert: open its holders
            _open_holders(st, over, fload - data.hi)
            continue
        sub = _solve_open(st, fload)
        loads = fload + np.bincount(sub.ae[sub.flow > 0], minlength=e)
        if sub.art_client.any():  # give these clients every arc, or their experts room
            _widen(st, sub.rows[sub.art_client > 0], loads)
            continue
        if sub.art_expert.any():  # more clients must come to these experts
            _open_takers(st, np.flatnonzero(sub.art_expert), sub.art_expert)
            continue
        dist = _potentials(st, sub, loads)
        new_p = dist[:e] - dist[e]
        delta = new_p - st.p
        up = int(delta.max())
        st.p = new_p
        # frozen clients: proven while their slack exceeds how far the prices moved
        # for them: any expert's rise (an unheld one may overtake) plus the largest
        # fall among the experts they hold
        frozen = np.flatnonzero(~st.is_open)
        st.slack[frozen] -= max(up, 0) - np.minimum(_held_min(st, frozen, delta), 0)
        fails = _recheck_frozen(st, frozen[st.slack[frozen] < 0])
        # open clients: pruned arcs below the lowest u a client must keep
        held = sub.flow > 0
        r = sub.rows.size
        u_arc = sub.cost + st.p[sub.ae]
        low = np.full(r, _BIG, dtype=np.int64)
        np.minimum.at(low, sub.ac[held], u_arc[held])
        used = np.bincount(sub.ac[held], minlength=r)
        tau = np.where(used < data.cap[sub.rows], np.minimum(low, 0), low)
        st.outside[sub.rows] += up
        out = st.outside[sub.rows]
        st.outside[sub.rows] = np.where(out <= _NEG // 2, _NEG, out)
        check = np.flatnonzero(st.outside[sub.rows] > tau)
        added = _recheck_open(st, sub, check, tau[check]) if check.size else 0
        if fails.size == 0 and added == 0:
            stats["certificate"] = (
                "prices satisfy complementary slackness for every client and expert"
            )
            return dist, loads, st, sub
        stats.setdefault("reopened", []).append(int(fails.size))
        stats.setdefault("added_arcs", []).append(added)
        st.open_rows(fails)
    raise _Fallback(f"no certificate after {max_rounds} rounds")


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


# ----------------------------------------------------------------------------- cold start
def _sample(data: _Data, rng: np.random.Generator) -> _Data:
    """A random quarter of the clients, with the load bounds scaled to their capacity."""
    n = data.n
    idx = np.sort(rng.choice(n, size=n // 4, replace=False))
    cap, kmin = data.cap[idx], data.kmin[idx]
    frac = float(cap.sum()) / max(float(data.cap.sum()), 1.0)
    lo = np.floor(data.lo * frac).astype(np.int64)
    hi = np.where(data.hi >= n, idx.size, np.ceil(data.hi * frac)).astype(np.int64)
    rows = idx if data.rows is None else data.rows[idx]
    return _Data(
        data.fitness,
        rows,
        data.allowed,
        data.fixed,
        cap,
        kmin,
        lo,
        np.maximum(hi, lo),
        data.scale_exp,
    )


def _cold_prices(
    data: _Data, margin: int, max_rounds: int, rng: np.random.Generator, levels: list[int]
) -> np.ndarray | None:
    """Integer prices from solving nested random samples, smallest first (each level
    starts from the prices of the one below); ``None`` when ``data`` is small enough to
    solve without them."""
    e = data.e
    if data.n <= max(_SAMPLE_MIN_PER_EXPERT * e, _SAMPLE_MIN):
        return None
    sub = _sample(data, rng)
    p = _cold_prices(sub, margin, max_rounds, rng, levels)
    try:
        dist, *_ = _solve_data(sub, p, margin, max_rounds, {})
    except _Fallback:  # an unlucky sample: its prices are only a hint
        return p
    levels.append(sub.n)
    return (dist[:e] - dist[e]).astype(np.int64)


# ----------------------------------------------------------------------------- backend
def _options(problem: AssignmentProblem, extra: Any) -> tuple[int, int, np.ndarray | None]:
    """``prune_margin``, ``max_rounds`` and ``prices`` (checked and defaulted by
    :func:`~flexassign.backends.options.validate_options` before any backend runs)."""
    margin = int(extra.get("prune_margin", 4))
    rounds = int(extra.get("max_rounds", 12))
    if margin < 1 or rounds < 1:  # only reachable when solve() is called directly
        raise InvalidProblemError(
            "`options['prune_margin']` and `options['max_rounds']` must be >= 1"
        )
    prices = extra.get("prices")
    if prices is not None:
        prices = np.asarray(prices, dtype=np.float64)
        if prices.shape != (problem.n_experts,) or not np.isfinite(prices).all():
            raise InvalidProblemError(
                f"`options['prices']` must be {problem.n_experts} finite expert prices"
            )
    return margin, rounds, prices


def _assemble(problem: AssignmentProblem, st: _State, sub: _Sub) -> tuple[np.ndarray, float]:
    """The assignment and its objective (summed over the chosen pairs only)."""
    n, e = problem.shape
    fit = problem.fitness
    x = np.zeros((n, e), dtype=bool) if problem.fixed is None else problem.fixed.copy()
    value = 0.0 if problem.fixed is None else float(fit[problem.fixed].sum())
    frozen = ~st.is_open
    for t in range(int(st.h.max(initial=0))):
        r = np.flatnonzero(frozen & (st.h > t))
        c = st.top_idx[r, t]
        x[r, c] = True
        value += float(fit[r, c].sum())
    held = sub.flow > 0
    r, c = sub.rows[sub.ac[held]], sub.ae[held]
    x[r, c] = True
    value += float(fit[r, c].sum())
    return x, value


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    margin, max_rounds, prices = _options(problem, options.extra)
    stats: dict[str, Any] = {}
    try:
        data, _, exact, total = _prepare(problem)
        if int(data.cap.max(initial=0)) == 0:
            raise _Fallback("no client has a free slot")
        stats["objective_scale"] = math.ldexp(1.0, min(data.scale_exp, 1023))
        stats["objective_scale_exponent"] = data.scale_exp
        limit = 2**49
        t1 = time.perf_counter()
        levels: list[int] = []
        solved = None
        kept = dict(stats)  # what a cold restart keeps
        if prices is not None:
            p0 = np.clip(np.rint(np.ldexp(prices, data.scale_exp)), -limit, limit)
            p0 = p0.astype(np.int64)
            stats["price_source"] = "options"
            stats["price_time"] = time.perf_counter() - t1
            stats["build_time"] = time.perf_counter() - t0
            try:
                solved = _solve_data(data, p0, margin, max_rounds, stats, _STALE_EXCESS)
            except _StalePrices as stale:  # worse than none: start cold instead
                stats.clear()
                stats.update(kept)
                stats["stale_prices"] = f"{stale.share:.0%} of the load outside the bounds"
                t1 = time.perf_counter()
        if solved is None:
            rng = np.random.default_rng(options.seed)
            p0 = _cold_prices(data, margin, max_rounds, rng, levels)
            stats["price_source"] = "sample" if p0 is not None else "zero"
            stats["levels"] = levels
            stats["price_time"] = time.perf_counter() - t1
            stats["build_time"] = time.perf_counter() - t0
            solved = _solve_data(data, p0, margin, max_rounds, stats)
        dist, _, st, sub = solved
    except _Fallback as exc:
        from .registry import get_backend  # the reference solver, through the registry

        out = get_backend("flow").load()(problem, options)
        out.stats["fallback"] = f"flow-warm: {exc}; solved by flow"
        out.stats["warm_stats"] = {k: v for k, v in stats.items() if k != "expert_prices"}
        return out
    x, value = _assemble(problem, st, sub)
    e = problem.n_experts
    stats.update(
        solver_status="optimal",
        expert_prices=np.ldexp((dist[:e] - dist[e]).astype(np.float64), -data.scale_exp),
        open_clients=int(sub.rows.size),
        open_arcs=int(sub.ac.size),
        rechecked_rows=st.rechecked,
        solve_time=time.perf_counter() - t0 - stats["build_time"],
    )
    # each unit carries at most half a cost step of rounding, in ours and in the optimum
    err = 0.0 if exact else math.ldexp(2.0 * float(total), -data.scale_exp)
    stats["rounding_error_bound"] = err
    return BackendOutput(Status.OPTIMAL, x=x, bound=value + err, stats=stats)
