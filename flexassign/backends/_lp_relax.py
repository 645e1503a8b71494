r"""The LP relaxation of lp-round: column generation with HiGHS' dual simplex.

:func:`solve_lp` solves the LP relaxation of the shared model
(:func:`~flexassign.backends.linear.build_linear_model`) on each client's best
candidate pairs first (artificial columns keep that restricted LP feasible) and adds
the columns with a negative reduced cost until none is left, so its optimum is the
full LP's. :func:`shift_costs` gives the equivalent model with per-client shifted
costs on which the dual simplex starts near the optimum. The rounding and repair that
follow are in :mod:`flexassign.backends.lp_round`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..problem import AssignmentProblem
from . import _highs
from .base import SolveOptions
from .linear import LinearModel

__all__ = ["Restricted", "shift_costs", "solve_lp"]


@dataclass
class Restricted:
    """The LP/MIP on a subset ``cols`` of the model's columns, plus artificial columns.

    Artificial columns (one per row with a positive lower bound, objective ``-big_m``)
    keep the restricted LP feasible while columns are still missing.
    """

    h: Any
    cols: np.ndarray  # model column of each restricted column (artificials: -1)
    art_rows: np.ndarray
    big_m: float


def _csc_columns(A: sp.csc_matrix, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sub = A[:, cols]
    return (sub.indptr.astype(np.int32), sub.indices.astype(np.int32), sub.data.astype(np.float64))


def _build(model: LinearModel, cols: np.ndarray, options: SolveOptions) -> Restricted:
    h = _highs.new_highs(options)
    # presolve finds nothing to remove in the candidate LPs (every row can bind) but
    # its dependent-equation search on the equality rows costs ~20 % of the solve
    h.setOptionValue("presolve", str(options.extra.get("lp_presolve", "off")))
    art_rows = np.flatnonzero(model.row_lo > 0)
    peak = float(np.max(np.abs(model.c))) if model.c.size else 1.0
    # correctness never depends on big_m: a final LP that still uses an artificial
    # column is re-solved without them (see _solve_lp)
    big_m = 4.0 * max(peak, 1.0) * max(1.0, float(np.max(np.abs(model.A.data), initial=1.0)))
    sub = model.A[:, cols]
    # artificial columns: coefficient 1 in their row, cost big_m (minimizing -c)
    art = sp.csc_matrix(
        (np.ones(art_rows.size), (art_rows, np.arange(art_rows.size))),
        shape=(model.A.shape[0], art_rows.size),
    )
    n_cols = cols.size + art_rows.size
    _highs.pass_model(
        h,
        np.concatenate([-model.c[cols], np.full(art_rows.size, big_m)]),
        sp.hstack([sub, art], format="csc"),
        np.concatenate([model.col_lo[cols], np.zeros(art_rows.size)]),
        np.concatenate([model.col_hi[cols], model.row_lo[art_rows]]),
        model.row_lo,
        model.row_hi,
        np.zeros(n_cols, dtype=np.int32),
    )
    return Restricted(
        h=h, cols=np.concatenate([cols, np.full(art_rows.size, -1)]), art_rows=art_rows, big_m=big_m
    )


def _add_columns(r: Restricted, model: LinearModel, new: np.ndarray) -> None:
    import highspy

    inf = highspy.kHighsInf
    starts, index, value = _csc_columns(model.A, new)
    r.h.addCols(
        int(new.size),
        np.ascontiguousarray(-model.c[new]),
        np.ascontiguousarray(model.col_lo[new]),
        np.where(np.isinf(model.col_hi[new]), inf, model.col_hi[new]),
        int(starts[-1]),
        starts[:-1].astype(np.int32),
        index,
        value,
    )
    r.cols = np.concatenate([r.cols, new])


def _lp_outcome(h: Any) -> str:
    """``"optimal"``, ``"infeasible"``, ``"time_limit"`` or HiGHS's status, for the LP."""
    outcome = _highs.outcome(h)
    return "time_limit" if outcome == "limit" else outcome


def shift_costs(problem: AssignmentProblem, model: LinearModel) -> tuple[LinearModel, float]:
    r"""An equivalent model whose costs make the dual simplex start near the optimum.

    Every client's capacity row becomes an equality :math:`\sum_e x_{ce} + t_c = k_c`
    with a slack :math:`t_c \in [0, k_c - k^{\min}_c]` (no slack when the capacity is
    exact), and the client's pair costs drop by a constant :math:`\alpha_c` (its
    :math:`(k_c+1)`-th best fitness) while :math:`t_c` costs :math:`-\alpha_c`. On
    every point of the row, :math:`\sum_e (S_{ce}-\alpha_c) x_{ce} - \alpha_c t_c =
    \sum_e S_{ce} x_{ce} - \alpha_c k_c`, so the LPs (and MIPs) have the same optima and
    objectives that differ by the constant ``offset`` :math:`\sum_c \alpha_c k_c`.

    The point is speed: with the original costs every pair has a negative cost in the
    minimization, so the dual simplex starts with every boxed pair at 1 and spends
    thousands of iterations removing that infeasibility; after the shift only each
    client's top :math:`k_c` pairs start at 1 (a ~3x shorter solve on the benchmark's
    knapsack instances).

    Returns
    -------
    shifted : LinearModel
        Pair columns first (same order), then the model's other columns, then one
        slack column per client whose capacity is not exact.
    offset : float
        Add it to ``shifted.c @ v`` to get the original objective of ``v``.
    """
    n = problem.n_clients
    m = model.n_pairs
    # alpha in the model's units (its costs may be normalised): from its pair costs
    key = np.full(problem.shape, -np.inf)
    live = model.col_hi[:m] > 0
    key[model.pair_client[live], model.pair_expert[live]] = model.c[:m][live]
    srt = -np.sort(-key, axis=1)
    n_allowed = np.bincount(
        model.pair_client[live], minlength=n
    )
    k = problem.capacity.astype(np.int64)
    kmin = problem.min_experts.astype(np.int64)
    # the (k+1)-th best allowed fitness; the worst allowed one when there is none
    idx = np.minimum(k, np.maximum(n_allowed - 1, 0))
    alpha = srt[np.arange(n), idx]
    alpha = np.where(np.isfinite(alpha), alpha, 0.0)
    slack_of = np.flatnonzero(kmin < k)
    n_old = int(model.c.shape[0])
    c = np.concatenate([model.c[:m] - alpha[model.pair_client], model.c[m:], -alpha[slack_of]])
    A = sp.hstack(
        [
            model.A,
            sp.csc_matrix(
                (np.ones(slack_of.size), (slack_of, np.arange(slack_of.size))),
                shape=(model.A.shape[0], slack_of.size),
            ),
        ],
        format="csc",
    )
    row_lo = model.row_lo.copy()
    row_lo[:n] = k
    shifted = dataclasses.replace(
        model,
        c=np.ascontiguousarray(c, dtype=np.float64),
        A=A,
        row_lo=row_lo,
        col_lo=np.concatenate([model.col_lo, np.zeros(slack_of.size)]),
        col_hi=np.concatenate([model.col_hi, (k - kmin)[slack_of].astype(np.float64)]),
        integrality=np.concatenate(
            [model.integrality, np.zeros(c.shape[0] - n_old, dtype=np.int8)]
        ),
    )
    return shifted, float(alpha @ k)


def _candidates(problem: AssignmentProblem, model: LinearModel, margin: int) -> np.ndarray:
    """Pair columns to start from: each client's best experts, each expert's best clients."""
    n, e = problem.shape
    m = model.n_pairs
    col_of = np.full((n, e), -1, dtype=np.int64)
    col_of[model.pair_client, model.pair_expert] = np.arange(m)
    key = np.where(problem.allowed_mask, problem.fitness, -np.inf)
    k = min(e, int(problem.capacity.max()) + margin)
    pick = np.zeros((n, e), dtype=bool)
    if k >= e:
        pick[:] = True
    else:
        top = np.argpartition(-key, k - 1, axis=1)[:, :k]
        pick[np.arange(n)[:, None], top] = True
    w_typ = float(np.median(problem.weights))
    need = int(np.ceil(1.5 * float(np.max(problem.expert_min_load)) / w_typ)) + margin
    if need >= n:
        pick[:] = True
    elif need > margin:
        top_c = np.argpartition(-key.T, need - 1, axis=1)[:, :need]
        pick[top_c, np.arange(e)[:, None]] = True
    pick |= problem.fixed_mask
    cols = col_of[pick & problem.allowed_mask]
    return np.sort(cols[cols >= 0])


def solve_lp(
    problem: AssignmentProblem,
    model: LinearModel,
    options: SolveOptions,
    t0: float,
    stats: dict[str, Any],
) -> tuple[str, Restricted | None, np.ndarray | None, float | None]:
    """Column generation: LP on candidate columns, add columns with negative reduced cost.

    Returns (status, restricted model, full column values, upper bound).
    """
    m = model.n_pairs
    n_cols = int(model.c.shape[0])
    margin = int(options.extra.get("prune_margin", 4))
    prune = options.extra.get("prune", "auto")
    use_all = prune is False or (prune == "auto" and m < 20_000)
    pair_cols = np.arange(m) if use_all else _candidates(problem, model, margin)
    cols = np.concatenate([pair_cols, np.arange(m, n_cols)])
    r = _build(model, cols, options)
    in_model = np.zeros(n_cols, dtype=bool)
    in_model[cols] = True
    tol = 1e-9 * max(1.0, float(np.max(np.abs(model.c))))
    stats["lp_rounds"] = 0
    stats["lp_columns_added"] = []
    while True:
        stats["lp_rounds"] += 1
        if options.time_limit is not None:
            left = options.time_limit - (time.perf_counter() - t0)
            if left <= 0:
                return "time_limit", None, None, None
            r.h.setOptionValue("time_limit", float(left))
        _highs.run(r.h, _highs.threads_of(options))
        outcome = _lp_outcome(r.h)
        if outcome != "optimal":
            return outcome, None, None, None
        sol = r.h.getSolution()
        y = np.asarray(sol.row_dual)
        rc = -model.c - model.A.T @ y  # reduced costs of the minimization, every column
        bad = np.flatnonzero(~in_model & (rc < -tol))
        if bad.size == 0:
            break
        stats["lp_columns_added"].append(int(bad.size))
        _add_columns(r, model, bad)
        in_model[bad] = True
    values_local = np.asarray(sol.col_value)
    art = values_local[r.cols < 0]
    if art.size and float(art.max()) > 1e-7:
        # the candidate LP needs artificial units: solve the LP with every column and
        # no artificial column, which decides feasibility for certain
        stats["lp_artificial_fallback"] = True
        missing = np.flatnonzero(~in_model)
        if missing.size:
            _add_columns(r, model, missing)
            in_model[missing] = True
        art_local = np.flatnonzero(r.cols < 0)
        zeros = np.zeros(art_local.size)
        r.h.changeColsBounds(int(art_local.size), art_local.astype(np.int32), zeros, zeros)
        _highs.run(r.h, _highs.threads_of(options))
        outcome = _lp_outcome(r.h)
        if outcome != "optimal":
            return outcome, None, None, None
        values_local = np.asarray(r.h.getSolution().col_value)
    full = np.zeros(n_cols)
    real = r.cols >= 0
    full[r.cols[real]] = values_local[real]
    value = float(model.c @ full)
    stats["lp_columns"] = int(real.sum())
    return "optimal", r, full, value
