"""The min-cost-flow network of ``flow`` and its OR-Tools run.

:class:`_Network` is everything about the network except the client-expert arcs (client
capacities, expert arcs with hard bounds or a convex penalty chain, supplies, the cost
scale); :func:`_run` adds the arcs a caller chooses (every pair, or candidates), solves
with OR-Tools ``SimpleMinCostFlow`` and reads the flows back. See
:mod:`flexassign.backends.flow.cold` for the full and the pruned solve built on it.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from ...problem import AssignmentProblem

#: Largest N x E whose full-network arc skeleton :func:`_skeleton` keeps (a few MiB).
_SKELETON_MAX_PAIRS = 16_384

_MAX_COST_PRODUCT = 2.0**60


def _soft_segments(lo: float, hi: float, fixed: int, n_max: int) -> list[tuple[int, float]]:
    """Arc chain (capacity, slope) for the penalty of an expert's extra clients.

    The load in clients is ``fixed + y`` with ``y`` in ``[0, n_max]``; the penalty
    :math:`g(y) = \\max(0, lo - fixed - y) + \\max(0, fixed + y - hi)` (in units of
    ``penalty * w``) is convex and linear between consecutive integer breakpoints.
    """
    if n_max <= 0:
        return []
    a, b = lo - fixed, hi - fixed
    points = {0, n_max}
    for v in (a, b):
        if math.isfinite(v):
            for p in (math.floor(v), math.ceil(v)):
                if 0 < p < n_max:
                    points.add(int(p))
    pts = sorted(points)

    def g(y: float) -> float:
        return max(0.0, a - y) + (max(0.0, y - b) if math.isfinite(b) else 0.0)

    segs = []
    for p0, p1 in itertools.pairwise(pts):
        segs.append((p1 - p0, (g(p1) - g(p0)) / (p1 - p0)))
    return segs


@dataclass
class _Network:
    """Everything about the flow network except the client-expert arcs."""

    n: int
    e: int
    free_mask: np.ndarray | None  # (N, E) bool: allowed, not fixed, client has room;
    # None when all_free (built on first use of ``free``)
    all_free: bool  # free is all True (no masks, every client has room)
    cap_r: np.ndarray
    kmin_r: np.ndarray
    scale_exp: int  # costs are fitness * 2**scale_exp (an exponent: 2**1000 overflows)
    exact_costs: bool
    total_flow: int
    # expert -> sink arcs (hard: one per expert; soft: a convex chain per expert)
    exp_of_arc: np.ndarray
    exp_cap: np.ndarray
    exp_cost: np.ndarray
    supplies: np.ndarray
    bypass: int
    exp_floor: np.ndarray  # clients each expert must (hard) or should (soft) receive
    hard: bool
    big_m: int  # cost of the artificial arcs that keep a candidate network feasible

    @property
    def free(self) -> np.ndarray:
        """(N, E) bool: the pairs that may carry flow."""
        if self.free_mask is None:
            self.free_mask = np.ones((self.n, self.e), dtype=bool)
        return self.free_mask


def _prepare(problem: AssignmentProblem) -> _Network:
    n, e = problem.shape
    w = problem.uniform_weight
    if w is None:  # the registry rejects weighted problems before we get here
        raise ValueError("flow needs equal client weights")
    cap, kmin = problem.capacity, problem.min_experts
    if problem.fixed is None:  # no pass over an all-False mask (the common case)
        f_load = None
        cap_r, kmin_r = cap, kmin
    else:
        fixed = problem.fixed
        f_cnt = fixed.sum(axis=1)
        f_load = fixed.sum(axis=0).astype(np.int64)
        cap_r = np.maximum(cap - f_cnt, 0)
        kmin_r = np.maximum(kmin - f_cnt, 0)
    all_free = problem.allowed is None and problem.fixed is None and bool(cap_r.all())
    free = None  # all_free: nothing forbidden, nothing fixed, every client has room
    if not all_free:
        free = problem.allowed_mask & ~problem.fixed_mask & (cap_r > 0)[:, None]
    total_flow = int(cap_r.sum())
    total_optional = total_flow - int(kmin_r.sum())
    penalty = problem.load_penalty
    # one scale for every arc cost, from the whole fitness matrix (a superset of the arcs)
    fit = problem.fitness
    peak = max(float(fit.max()), -float(fit.min()))
    integral = bool((fit == fit.round()).all())
    if penalty is not None:
        peak = max(peak, penalty * w)
        integral = integral and penalty * w == round(penalty * w)
    # room for the artificial arcs of the pruned path (cost about 2 (E + 2) max|cost|)
    limit = _MAX_COST_PRODUCT / (max(total_flow + 1, n + e + 3) * 4 * (e + 2))
    if peak == 0.0 or (integral and peak <= limit):
        scale_exp = 0
    else:
        # in log space: limit / peak overflows for tiny fitness (1e-300)
        scale_exp = math.floor(math.log2(limit) - math.log2(peak))
        while math.ldexp(peak, scale_exp) > limit:
            scale_exp -= 1
    exact = scale_exp == 0 and integral

    supplies = np.zeros(n + e + 2, dtype=np.int64)
    supplies[1 : n + 1] = kmin_r
    sink = n + e + 1
    if penalty is None:
        lo_i, hi_i = problem.count_bounds()
        if f_load is None:
            lo_r, hi_r = lo_i, hi_i
        else:
            lo_r = np.maximum(lo_i - f_load, 0)
            hi_r = np.maximum(hi_i - f_load, lo_r)
        exp_of_arc = np.arange(e)
        exp_cap = hi_r - lo_r
        exp_cost = np.zeros(e, dtype=np.int64)
        supplies[1 + n : 1 + n + e] = -lo_r
        expert_demand = int(lo_r.sum())
        exp_floor = lo_r
    else:
        if f_load is None:
            f_load = np.zeros(e, dtype=np.int64)
        lo_c = problem.expert_min_load / w
        hi_c = problem.expert_max_load / w
        n_free_per_expert = np.full(e, n) if free is None else free.sum(axis=0)
        t, cp, co = [], [], []
        for j in range(e):
            for cap_seg, slope in _soft_segments(
                float(lo_c[j]), float(hi_c[j]), int(f_load[j]), int(n_free_per_expert[j])
            ):
                t.append(j)
                cp.append(cap_seg)
                co.append(round(math.ldexp(slope * penalty * w, scale_exp)))
        exp_of_arc = np.asarray(t, dtype=np.int64)
        exp_cap = np.asarray(cp, dtype=np.int64)
        exp_cost = np.asarray(co, dtype=np.int64)
        expert_demand = 0
        exp_floor = np.maximum(np.ceil(lo_c - 1e-9).astype(np.int64) - f_load, 0)
    supplies[0] = total_optional
    supplies[sink] = -(total_flow - expert_demand)
    return _Network(
        n=n,
        e=e,
        free_mask=free,
        all_free=all_free,
        cap_r=cap_r,
        kmin_r=kmin_r,
        scale_exp=scale_exp,
        exact_costs=exact,
        total_flow=total_flow,
        exp_of_arc=exp_of_arc,
        exp_cap=exp_cap,
        exp_cost=exp_cost,
        supplies=supplies,
        bypass=total_optional,
        exp_floor=exp_floor,
        hard=penalty is None,
        big_m=int(2 * (e + 2) * math.ceil(math.ldexp(peak, scale_exp)) + 1),
    )


def _int_costs(fitness: np.ndarray, net: _Network) -> np.ndarray:
    """Integer arc costs: fitness times ``2**scale_exp``, rounded (exact scaling)."""
    scaled = fitness if net.scale_exp == 0 else np.ldexp(fitness, net.scale_exp)
    return scaled.round().astype(np.int64)


def _to_fitness(values: np.ndarray, net: _Network) -> np.ndarray:
    """Integer cost units back to fitness units."""
    return np.ldexp(np.asarray(values, dtype=np.float64), -net.scale_exp)


@dataclass
class _Flow:
    pair: np.ndarray  # 0/1 flow on the given client-expert arcs
    expert: np.ndarray  # flow on the expert -> sink arcs
    art_client: np.ndarray  # artificial client -> sink flow (unmet min_experts)
    art_expert: np.ndarray  # artificial source -> expert flow (unmet minimum load)


def _run(
    net: _Network,
    ci: np.ndarray | None,
    ei: np.ndarray | None,
    cost: np.ndarray,
    artificial: bool = False,
) -> tuple[str, _Flow | None]:
    """Solve the network restricted to the client-expert arcs (ci, ei) with int costs.

    ``ci = ei = None`` means every pair, row-major (``cost`` of length N * E). With
    ``artificial`` (hard bounds only), client minimums and expert minimum loads
    may also be met by artificial arcs of cost ``big_m``, so a candidate network is
    always feasible. Returns the status ("optimal", "infeasible" or a message) and
    the flows.
    """
    from ortools.graph.python import min_cost_flow

    n, e = net.n, net.e
    src, sink = 0, n + e + 1
    artificial = artificial and net.hard
    n_exp = net.exp_of_arc.size
    # arcs, in this order: source -> client, client -> expert (the given ones),
    # expert -> sink, bypass, then (``artificial``) client -> sink and source -> expert;
    # rows of one array: tail, head, capacity, unit cost (filled in place: no pieces)
    a = n + cost.size  # first expert -> sink arc
    b = a + n_exp + 1  # first artificial arc
    extra = int(net.exp_floor.sum()) if artificial else 0
    every_pair = ci is None or ei is None
    if every_pair and not artificial and net.hard and n * e <= _SKELETON_MAX_PAIRS:
        # the same N x E shape as a recent call: copy its fixed rows and columns
        arr = _skeleton(n, e).copy()
        tails, heads, caps, costs = arr
    else:
        arr = np.empty((4, b + (n + e if artificial else 0)), dtype=np.int64)
        tails, heads, caps, costs = arr
        tails[:n] = src
        heads[:n] = np.arange(1, n + 1)
        if ci is None or ei is None:  # every pair: client c's E arcs, experts in order
            tails[n:a].reshape(n, e)[:] = heads[:n, None]
            heads[n:a].reshape(n, e)[:] = np.arange(1 + n, 1 + n + e)
        else:
            np.add(ci, 1, out=tails[n:a])
            np.add(ei, 1 + n, out=heads[n:a])
        np.add(net.exp_of_arc, 1 + n, out=tails[a : b - 1])
        tails[b - 1] = src
        heads[a:b] = sink
        caps[n:a] = 1
        costs[:n] = 0
        costs[b - 1] = 0
    np.subtract(net.cap_r, net.kmin_r, out=caps[:n])
    caps[a : b - 1] = net.exp_cap
    caps[b - 1] = net.bypass + extra
    np.negative(cost, out=costs[n:a])
    costs[a : b - 1] = net.exp_cost
    if artificial:
        tails[b : b + n] = heads[:n]
        tails[b + n :] = src
        heads[b : b + n] = sink
        heads[b + n :] = np.arange(1 + n, 1 + n + e)
        caps[b : b + n] = net.kmin_r
        caps[b + n :] = net.exp_floor
        costs[b:] = net.big_m
    supplies = net.supplies
    if extra:  # the source -> expert artificial arcs get their own supply; unused, it
        # takes the bypass
        supplies = supplies.copy()
        supplies[src] += extra
        supplies[sink] -= extra
    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    smcf.set_nodes_supplies(np.arange(n + e + 2), supplies)
    status = smcf.solve()
    if status in (smcf.INFEASIBLE, smcf.UNBALANCED):
        return "infeasible", None
    if status != smcf.OPTIMAL:
        return f"SimpleMinCostFlow returned status {status}", None
    flows = smcf.flows(arcs)
    if artificial:
        art_client, art_expert = flows[b : b + n], flows[b + n :]
    else:
        art_client, art_expert = np.zeros(n, dtype=np.int64), np.zeros(e, dtype=np.int64)
    return "optimal", _Flow(
        pair=flows[n:a], expert=flows[a : b - 1], art_client=art_client, art_expert=art_expert
    )


@functools.lru_cache(maxsize=8)
def _skeleton(n: int, e: int) -> np.ndarray:
    """The parts of the full network's arc arrays that depend only on the shape.

    Rows tail, head, capacity, cost of :func:`_run`'s layout with every client-expert
    pair (one expert -> sink arc per expert, no artificial arcs); capacities of the
    source and expert arcs and the pair costs are left for the caller. Read-only: the
    caller copies it (small problems solved round after round keep their shape).
    """
    a = n + n * e
    b = a + e + 1
    arr = np.zeros((4, b), dtype=np.int64)
    tails, heads, caps, _ = arr
    heads[:n] = np.arange(1, n + 1)
    tails[n:a].reshape(n, e)[:] = heads[:n, None]
    heads[n:a].reshape(n, e)[:] = np.arange(1 + n, 1 + n + e)
    tails[a : b - 1] = np.arange(1 + n, 1 + n + e)
    heads[a:b] = n + e + 1
    caps[n:a] = 1
    arr.setflags(write=False)
    return arr
