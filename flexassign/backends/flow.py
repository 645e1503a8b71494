r"""Exact min-cost flow backend (OR-Tools ``SimpleMinCostFlow``).

Network, for count-based loads (all client weights equal to :math:`w`)::

    source --[k_c - kmin_c, cost 0]--> client c   (client c also supplies kmin_c)
    client c --[1, cost -S_ce]--> expert e        (allowed, not fixed)
    expert e --[U_e - L_e, cost 0]--> sink        (expert e demands L_e)
    source --[sum(k_c - kmin_c), cost 0]--> sink  (bypass: unused capacity)

Fixed pairs are taken out first (their client's capacity and their expert's bounds
shrink by one). With soft bounds the expert's demand is replaced by a convex
piecewise-linear arc chain to the sink whose slopes are the penalty.

Costs must be integers. Fitness is multiplied by a power of two chosen as large as
int64 arithmetic allows (costs of order :math:`2^{62}` divided by the total flow and
node count) and rounded, so any fitness scale works. When fitness is integral the
scale is 1 and the result is exact; otherwise the optimum can be missed by at most
``stats["rounding_error_bound"]`` (the total flow times one rounding step), which is
reported as the gap between ``objective`` and ``bound``.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from .base import BackendOutput, SolveOptions

__all__ = ["solve"]

_MAX_COST_PRODUCT = 2.0**60


def _choose_scale(values: np.ndarray, total_flow: int, n_nodes: int) -> float:
    """Largest power of two s with max|values| * s * max(total_flow, n_nodes) < 2**60."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    limit = _MAX_COST_PRODUCT / max(total_flow + 1, n_nodes + 1)
    if peak == 0.0:
        return 1.0
    integral = bool(np.all(values == np.round(values)))
    if integral and peak <= limit:
        return 1.0
    # a power of two: multiplying by it is exact in floating point
    return float(2.0 ** math.floor(math.log2(limit / peak)))


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


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    from ortools.graph.python import min_cost_flow

    t0 = time.perf_counter()
    n, e = problem.shape
    w = problem.uniform_weight
    assert w is not None  # the registry rejects weighted problems before we get here
    allowed = problem.allowed_mask
    fixed = problem.fixed_mask
    f_cnt = fixed.sum(axis=1)
    f_load = fixed.sum(axis=0).astype(np.int64)
    cap_r = np.maximum(problem.capacity - f_cnt, 0)
    kmin_r = np.maximum(problem.min_experts - f_cnt, 0)
    free = allowed & ~fixed & (cap_r > 0)[:, None]
    ci, ei = np.nonzero(free)
    vals = problem.fitness[ci, ei]
    n_free_per_expert = free.sum(axis=0)

    src, sink = 0, n + e + 1
    client_node = 1 + np.arange(n)
    expert_node = 1 + n + np.arange(e)
    optional = cap_r - kmin_r
    total_optional = int(optional.sum())
    total_flow = int(cap_r.sum())
    penalty = problem.load_penalty
    cost_values = vals if penalty is None else np.append(vals, penalty * w)
    scale = _choose_scale(cost_values, total_flow, n + e + 2)

    tails = [np.full(n, src), client_node[ci]]
    heads = [client_node, expert_node[ei]]
    caps = [optional, np.ones(ci.size, dtype=np.int64)]
    costs = [np.zeros(n, dtype=np.int64), -np.round(vals * scale).astype(np.int64)]
    supplies = np.zeros(n + e + 2, dtype=np.int64)
    supplies[client_node] = kmin_r

    if penalty is None:
        lo_i, hi_i = problem.count_bounds()
        lo_r = np.maximum(lo_i - f_load, 0)
        hi_r = np.maximum(hi_i - f_load, lo_r)
        tails.append(expert_node)
        heads.append(np.full(e, sink))
        caps.append(hi_r - lo_r)
        costs.append(np.zeros(e, dtype=np.int64))
        supplies[expert_node] = -lo_r
        expert_demand = int(lo_r.sum())
    else:
        lo_c = problem.expert_min_load / w
        hi_c = problem.expert_max_load / w
        t, h, cp, co = [], [], [], []
        for j in range(e):
            for cap_seg, slope in _soft_segments(
                float(lo_c[j]), float(hi_c[j]), int(f_load[j]), int(n_free_per_expert[j])
            ):
                t.append(expert_node[j])
                h.append(sink)
                cp.append(cap_seg)
                co.append(round(slope * penalty * w * scale))
        tails.append(np.asarray(t, dtype=np.int64))
        heads.append(np.asarray(h, dtype=np.int64))
        caps.append(np.asarray(cp, dtype=np.int64))
        costs.append(np.asarray(co, dtype=np.int64))
        expert_demand = 0

    tails.append(np.array([src]))
    heads.append(np.array([sink]))
    caps.append(np.array([total_optional]))
    costs.append(np.array([0]))
    supplies[src] = total_optional
    supplies[sink] = -(total_optional + int(kmin_r.sum()) - expert_demand)

    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(
        np.concatenate(tails).astype(np.int64),
        np.concatenate(heads).astype(np.int64),
        np.concatenate(caps).astype(np.int64),
        np.concatenate(costs).astype(np.int64),
    )
    smcf.set_nodes_supplies(np.arange(n + e + 2), supplies)
    t_build = time.perf_counter() - t0
    status = smcf.solve()
    t_solve = time.perf_counter() - t0 - t_build
    stats = {
        "build_time": t_build,
        "solve_time": t_solve,
        "cost_scale": scale,
        "arcs": len(arcs),
        "nodes": n + e + 2,
    }
    if status == smcf.INFEASIBLE or status == smcf.UNBALANCED:
        return BackendOutput(
            Status.INFEASIBLE,
            message="no flow meets every client minimum and expert load bound",
            stats=stats,
        )
    if status != smcf.OPTIMAL:
        return BackendOutput(
            Status.ERROR, message=f"SimpleMinCostFlow returned status {status}", stats=stats
        )
    pair_flow = smcf.flows(arcs[n : n + ci.size])
    x = fixed.copy()
    chosen = pair_flow > 0
    x[ci[chosen], ei[chosen]] = True
    # Each assigned unit carries at most 0.5/scale rounding error, both in the solution
    # found and in the true optimum: the true optimum exceeds ours by at most this.
    # (a unit crosses one pair arc and, with soft bounds, one penalty arc).
    exact = scale == 1.0 and bool(np.all(cost_values == np.round(cost_values)))
    err = 0.0 if exact else 2.0 * float(total_flow) / scale
    stats["rounding_error_bound"] = err
    bound = problem.objective(x) + err
    return BackendOutput(Status.OPTIMAL, x=x, bound=bound, stats=stats)
