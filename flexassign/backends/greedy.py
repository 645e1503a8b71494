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

__all__ = ["BUDGET_RTOL", "fill_in_order", "solve", "top_k"]

#: Relative slack on a client's memory budget when summing expert sizes.
BUDGET_RTOL = 1e-12


def top_k(problem: AssignmentProblem) -> np.ndarray:
    """Per-client top-k assignment (vectorized; a loop over clients only for knapsacks)."""
    n, e = problem.shape
    allowed = problem.allowed_mask
    fixed = problem.fixed_mask
    # fixed first, then by fitness, then lower expert index
    key = np.where(fixed, np.inf, np.where(allowed, problem.fitness, -np.inf))
    k = problem.effective_capacity()
    kmax = int(k.max())
    if not problem.knapsack_binding:
        if kmax == 0:
            return np.zeros((n, e), dtype=bool)
        # only each row's kmax best are needed: partition, then order those few
        top = (
            np.argpartition(-key, kmax - 1, axis=1)[:, :kmax]
            if kmax < e
            else np.tile(np.arange(e), (n, 1))
        )
        top_key = np.take_along_axis(key, top, axis=1)
        # rows whose kmax-th value is tied with a value left outside: redo them with a
        # stable sort so that ties always go to the lower expert index
        tied = np.flatnonzero((key >= top_key.min(axis=1)[:, None]).sum(axis=1) > kmax)
        if tied.size:
            top[tied] = np.argsort(-key[tied], axis=1, kind="stable")[:, :kmax]
            top_key[tied] = np.take_along_axis(key[tied], top[tied], axis=1)
        order = np.take_along_axis(top, np.lexsort((top, -top_key), axis=1), axis=1)
        take = np.arange(kmax)[None, :] < k[:, None]  # (n, kmax): the first k_c of each row
        x = np.zeros((n, e), dtype=bool)
        x[np.nonzero(take)[0], order[take]] = True
        return x
    order = np.argsort(-key, axis=1, kind="stable")
    assert problem.expert_size is not None and problem.client_budget is not None
    return fill_in_order(
        order, k, problem.expert_size, problem.client_budget, allowed=allowed, fixed=fixed
    )


def fill_in_order(
    order: np.ndarray,
    k: np.ndarray,
    size: np.ndarray,
    budget: np.ndarray,
    *,
    allowed: np.ndarray | None = None,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """Knapsack greedy fill: client ``c`` walks ``order[c]`` and takes each expert that
    still fits its memory ``budget[c]`` (sizes ``size``), until it holds ``k[c]``.

    The walk stops at the first expert ``allowed`` forbids (orders put those last);
    ``fixed`` experts are taken whatever their size. Budgets get a relative slack of
    :data:`BUDGET_RTOL` against float rounding in the sums of sizes.
    """
    n, e = order.shape
    x = np.zeros((n, e), dtype=bool)
    for c in range(n):
        used, taken, cap = 0.0, 0, budget[c] * (1 + BUDGET_RTOL)
        for j in order[c]:
            if taken >= k[c] or (allowed is not None and not allowed[c, j]):
                break
            if (fixed is not None and fixed[c, j]) or used + size[j] <= cap:
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
