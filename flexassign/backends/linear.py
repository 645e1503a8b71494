"""Shared sparse linear model of an assignment problem, for LP/MIP backends.

One column per allowed pair (fixed pairs get lower bound 1), plus two slack columns
per expert when load bounds are soft. Rows, in order: client capacity
(:math:`k^{\\min}_c \\le \\sum_e x_{ce} \\le k_c`), memory knapsack (only rows that can
bind), expert load (:math:`L_e \\le \\sum_c w_c x_{ce} + s^-_e - s^+_e \\le U_e`).
The objective is stated for **maximization**.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..problem import AssignmentProblem

__all__ = ["LinearModel", "build_linear_model"]


@dataclass(frozen=True)
class LinearModel:
    """Arrays of the linear model; see the module docstring for the layout.

    Attributes
    ----------
    c : ndarray, shape (n_cols,)
        Objective coefficients (maximize).
    A : scipy.sparse.csc_matrix, shape (n_rows, n_cols)
    row_lo, row_hi, col_lo, col_hi : ndarray
        Bounds (``inf`` for none).
    integrality : ndarray of int8, shape (n_cols,)
        1 for the pair columns, 0 for slacks.
    pair_client, pair_expert : ndarray of int, shape (n_pairs,)
        The (client, expert) of each of the first ``n_pairs`` columns.
    n_pairs : int
    client_rows, load_rows : slice
        The client capacity rows and the expert load rows.
    memory_rows : slice or None
        The memory knapsack rows (``None`` when the knapsack cannot bind).
    """

    c: NDArray[np.float64]
    A: sp.csc_matrix
    row_lo: NDArray[np.float64]
    row_hi: NDArray[np.float64]
    col_lo: NDArray[np.float64]
    col_hi: NDArray[np.float64]
    integrality: NDArray[np.int8]
    pair_client: NDArray[np.int64]
    pair_expert: NDArray[np.int64]
    n_pairs: int
    client_rows: slice
    memory_rows: slice | None
    load_rows: slice

    def row_blocks(self) -> list[tuple[str, slice]]:
        """``(name, rows)`` of each row family in order: client, memory (if any), load,
        then ``"count"`` (rows a backend appended, e.g. the count phase's :math:`N = N^*`)."""
        blocks = [("client", self.client_rows)]
        if self.memory_rows is not None:
            blocks.append(("memory", self.memory_rows))
        blocks.append(("load", self.load_rows))
        if self.A.shape[0] > self.load_rows.stop:
            blocks.append(("count", slice(self.load_rows.stop, int(self.A.shape[0]))))
        return blocks

    def to_assignment(
        self, shape: tuple[int, int], values: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Round the pair columns of a solution vector to a 0/1 matrix."""
        x = np.zeros(shape, dtype=bool)
        chosen = np.asarray(values[: self.n_pairs]) > 0.5
        x[self.pair_client[chosen], self.pair_expert[chosen]] = True
        return x

    def start_vector(self, x: NDArray[np.bool_]) -> NDArray[np.float64]:
        """A full column vector (slacks included) for a 0/1 assignment, for warm starts."""
        v = np.zeros(self.c.shape[0])
        v[: self.n_pairs] = x[self.pair_client, self.pair_expert]
        return v


def build_linear_model(problem: AssignmentProblem) -> LinearModel:
    """Build the model with numpy only (no per-element Python loops)."""
    n, e = problem.shape
    flat = np.flatnonzero(problem.allowed_mask.ravel())
    pc = (flat // e).astype(np.int64)
    pe = (flat % e).astype(np.int64)
    m = flat.size
    w = problem.weights

    c_pairs = problem.fitness.ravel()[flat]
    col_lo = problem.fixed_mask.ravel()[flat].astype(np.float64)
    col_hi = np.ones(m)

    rows = [pc]
    cols = [np.arange(m)]
    vals = [np.ones(m)]
    row_lo = [problem.min_experts.astype(np.float64)]
    row_hi = [problem.capacity.astype(np.float64)]
    next_row = n
    memory_rows = None

    if problem.knapsack_binding:
        assert problem.expert_size is not None and problem.client_budget is not None
        size = problem.expert_size[pe]
        nz = size > 0
        rows.append(next_row + pc[nz])
        cols.append(np.arange(m)[nz])
        vals.append(size[nz])
        row_lo.append(np.full(n, -np.inf))
        row_hi.append(problem.client_budget.astype(np.float64))
        memory_rows = slice(n, 2 * n)
        next_row += n

    rows.append(next_row + pe)
    cols.append(np.arange(m))
    vals.append(w[pc])
    row_lo.append(problem.expert_min_load.astype(np.float64))
    row_hi.append(problem.expert_max_load.astype(np.float64))
    expert_row0 = next_row
    next_row += e

    c = c_pairs
    integrality = np.ones(m, dtype=np.int8)
    if problem.load_penalty is not None:
        # s^- (columns m..m+e-1) enters with +1, s^+ (m+e..m+2e-1) with -1
        rows.extend([expert_row0 + np.arange(e), expert_row0 + np.arange(e)])
        cols.extend([m + np.arange(e), m + e + np.arange(e)])
        vals.extend([np.ones(e), -np.ones(e)])
        c = np.concatenate([c_pairs, np.full(2 * e, -problem.load_penalty)])
        col_lo = np.concatenate([col_lo, np.zeros(2 * e)])
        col_hi = np.concatenate([col_hi, np.full(2 * e, np.inf)])
        integrality = np.concatenate([integrality, np.zeros(2 * e, dtype=np.int8)])

    A = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(next_row, c.shape[0]),
    )
    return LinearModel(
        c=np.ascontiguousarray(c, dtype=np.float64),
        A=A,
        row_lo=np.concatenate(row_lo),
        row_hi=np.concatenate(row_hi),
        col_lo=col_lo,
        col_hi=col_hi,
        integrality=integrality,
        pair_client=pc,
        pair_expert=pe,
        n_pairs=m,
        client_rows=slice(0, n),
        memory_rows=memory_rows,
        load_rows=slice(expert_row0, expert_row0 + e),
    )
