"""Capacity- and load-aware greedy heuristic (feasible when it succeeds, no proof).

Three passes over candidate pairs in decreasing fitness order, never exceeding a
client's capacity or memory budget or an expert's maximum load:

1. raise every expert to its minimum load;
2. raise every client to its ``min_experts``;
3. add the remaining pairs with non-negative fitness while room is left.

If a minimum cannot be met this way the verifier reports it; use an exact method.
"""

from __future__ import annotations

import time

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from .base import BackendOutput, SolveOptions

__all__ = ["solve"]

_EPS = 1e-9


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    e = problem.n_experts
    fit = problem.fitness
    x = problem.fixed_mask.copy()
    w = problem.weights.tolist()
    cap_left = (problem.capacity - x.sum(axis=1)).tolist()
    load = (problem.weights @ x).tolist()
    lo = problem.expert_min_load.tolist()
    hi = problem.expert_max_load.tolist()
    knap = problem.knapsack_binding
    size = problem.expert_size.tolist() if knap and problem.expert_size is not None else None
    mem_left = (
        (problem.client_budget - x @ problem.expert_size).tolist()
        if knap and problem.client_budget is not None and problem.expert_size is not None
        else None
    )
    cand = problem.allowed_mask & ~x
    flat = np.flatnonzero(cand.ravel())
    order = flat[np.argsort(-fit.ravel()[flat], kind="stable")]
    pc_all = (order // e).tolist()
    pe_all = (order % e).tolist()
    fit_all = fit.ravel()[order].tolist()
    taken = np.zeros(order.size, dtype=bool)

    def room(c: int, j: int) -> bool:
        if cap_left[c] <= 0 or load[j] + w[c] > hi[j] * (1 + _EPS) + _EPS:
            return False
        return mem_left is None or size is None or size[j] <= mem_left[c] * (1 + _EPS) + _EPS

    def take(i: int, c: int, j: int) -> None:
        x[c, j] = True
        taken[i] = True
        cap_left[c] -= 1
        load[j] += w[c]
        if mem_left is not None and size is not None:
            mem_left[c] -= size[j]

    # 1. expert minimum loads
    if any(lo[j] > load[j] + _EPS for j in range(e)):
        for i, (c, j) in enumerate(zip(pc_all, pe_all, strict=True)):
            if load[j] < lo[j] - _EPS and room(c, j):
                take(i, c, j)
    # 2. client minimums
    need = (problem.min_experts - x.sum(axis=1)).tolist()
    if any(v > 0 for v in need):
        for i, (c, j) in enumerate(zip(pc_all, pe_all, strict=True)):
            if need[c] > 0 and not taken[i] and room(c, j):
                take(i, c, j)
                need[c] -= 1
    # 3. everything else worth taking
    for i, (c, j, f) in enumerate(zip(pc_all, pe_all, fit_all, strict=True)):
        if f < 0:
            break
        if not taken[i] and room(c, j):
            take(i, c, j)
    return BackendOutput(
        Status.FEASIBLE,
        x=x,
        message="greedy-balanced heuristic (feasible if verified, optimality not proven)",
        stats={"solve_time": time.perf_counter() - t0},
    )
