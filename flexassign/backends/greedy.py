"""The paper's baseline: each client takes its top-:math:`k_c` experts by fitness.

Fixed pairs are taken first, forbidden pairs never; with a memory knapsack a client
skips experts that no longer fit. Expert load bounds are ignored on purpose (that is
the failure FLEX-MoE fixes): the verifier reports which ones break, and the result
is never labelled optimal.
"""

from __future__ import annotations

import time

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from .base import BackendOutput, SolveOptions

__all__ = ["solve", "top_k"]


def top_k(problem: AssignmentProblem) -> np.ndarray:
    """Per-client top-k assignment (vectorized; a loop over clients only for knapsacks)."""
    n, e = problem.shape
    allowed = problem.allowed_mask
    fixed = problem.fixed_mask
    # fixed first, then by fitness; stable sort keeps lower expert index on ties
    key = np.where(fixed, np.inf, np.where(allowed, problem.fitness, -np.inf))
    order = np.argsort(-key, axis=1, kind="stable")
    k = problem.effective_capacity()
    if not problem.knapsack_binding:
        rank = np.empty_like(order)
        rank[np.arange(n)[:, None], order] = np.arange(e)[None, :]
        return (rank < k[:, None]) & allowed
    assert problem.expert_size is not None and problem.client_budget is not None
    x = np.zeros((n, e), dtype=bool)
    size, budget = problem.expert_size, problem.client_budget
    for c in range(n):
        used, taken = 0.0, 0
        for j in order[c]:
            if taken >= k[c] or not allowed[c, j]:
                break
            if fixed[c, j] or used + size[j] <= budget[c] * (1 + 1e-12):
                x[c, j] = True
                used += size[j]
                taken += 1
    return x


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    x = top_k(problem)
    return BackendOutput(
        Status.FEASIBLE,
        x=x,
        message="greedy top-k by fitness (load balance ignored)",
        stats={"solve_time": time.perf_counter() - t0},
    )
