r"""Exact backend: OR-Tools CP-SAT.

CP-SAT needs integer coefficients. The model is the shared sparse one
(:func:`~flexassign.backends.linear.build_linear_model`), scaled as follows.

**Constraints.** Each row family (client counts, memory knapsack, expert loads) is
multiplied by the smallest power of two :math:`t` that makes its coefficients and
bounds integral. That is exact for integer sample counts, integer memory sizes and
the integer bounds :meth:`~flexassign.AssignmentProblem.balanced` produces. When no
such :math:`t \le 2^{24}` exists the row family is rounded *conservatively* at
:math:`t = 2^{24}` (knapsack: sizes up, budgets down; loads: bounds moved inwards by
the worst-case rounding of a full column), so every answer is still feasible, but
optimality is then only proven for the tightened problem: the result is reported
``FEASIBLE`` and ``stats["constraint_scaling_exact"]`` is False.

**Objective.** First normalised like every MIP backend's
(:func:`~flexassign.backends._common.normalise_objective`: constant parts such as a
common offset of clients with a forced expert count removed, largest coefficient in
:math:`[1, 2)`), so that a large offset or a tiny scale loses no resolution. That
objective is multiplied by a power of two :math:`s`: the smallest
that makes every coefficient integral if that keeps :math:`|\text{objective}| s`
below :math:`2^{50}` for every feasible point, otherwise the largest that does. With an
inexact :math:`s`, any assignment's scaled objective is within
:math:`\delta = \sum_c \text{(the } k_c \text{ largest rounding errors of client c)}
/ s` (plus the slacks' share) of its true objective; :math:`\delta` is reported as
``stats["rounding_error_bound"]`` and added to CP-SAT's proven bound, so the reported
gap is honest. The scale is ``stats["objective_scale"]``.

Row bounds beyond what a row's activity can reach are clipped first (a ``tolerance``
of 1e6 gives load bounds far above any load), which keeps every integer in int64.

**Time limit.** CP-SAT has no polynomial bound on its run time (a 30 x 6 problem
with a large fitness offset ran past 150 s before normalisation), so without
``time_limit`` it stops after :data:`DEFAULT_TIME_LIMIT` seconds (60) and says so in
``message``; the result is then ``TIME_LIMIT`` with its best assignment and bound.
A given ``time_limit`` covers the whole call: building the proto (variables copied in
bulk, a short loop over rows: ~0.5-0.9 s at 16,000 x 32, the clock checked between
stages) counts against it and CP-SAT gets what is left (none left: ``TIME_LIMIT``
before it starts). CP-SAT loads the model before it first checks the clock (~0.3-0.4 s
at 16,000 x 32) and its presolve ignores the limit until it is done (~1.3 s there), so
presolve is switched off when less than twice its expected time is left
(``stats["presolve_skipped"]``; ``cpsat_parameters={"cp_model_presolve": ...}`` decides
instead when given).

Options: ``time_limit`` (``max_time_in_seconds``), ``mip_gap``
(``relative_gap_limit``), ``seed`` (``random_seed``), ``threads`` (``num_workers``,
default 1 for determinism; CP-SAT is much stronger with 8 or more), ``verbose``.
``options={"warm_start": x}`` adds a solution hint, ``options={"cpsat_parameters":
{...}}`` sets raw ``SatParameters`` fields. ``OPTIMAL`` is claimed only when CP-SAT
proves the scaled objective optimal and the bound (with the rounding error
:math:`\delta`) lies within the optimality tolerance of the objective, or the price
bound at the LP relaxation's duals proves it (:mod:`flexassign.backends._certify`;
``stats["bound_check"]``); otherwise the answer is ``FEASIBLE`` with the valid bound.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..problem import AssignmentProblem
from ..result import Status
from ._certify import optimality_tolerance, price_bound, proves_optimal
from ._common import (
    MIN_SOLVER_TIME,
    NormalisedObjective,
    out_of_time,
    prepare_model,
    time_left,
)
from ._guard import lp_prices
from .base import BackendOutput, SolveOptions
from .linear import LinearModel

__all__ = ["solve"]

_MAX_CONSTRAINT_SCALE_EXP = 24
#: Seconds CP-SAT runs when no ``time_limit`` is given (it has no polynomial bound).
DEFAULT_TIME_LIMIT = 60.0
_OBJECTIVE_LIMIT = 2.0**50
#: CP-SAT's presolve ignores the time limit until it is done: about 1.3 s for the
#: million nonzeros of a 16,000 x 32 model on a shared 2-core machine. When less than
#: twice that is left of ``time_limit``, presolve is switched off (unless
#: ``cpsat_parameters`` sets ``cp_model_presolve``): measured there, the call at
#: ``time_limit=1`` went from 2.9 s to 1.2-1.6 s; ``stats["presolve_skipped"]`` says so.
_PRESOLVE_SECONDS_PER_NONZERO = 2.6e-6


def _exact_power(values: np.ndarray, max_exp: int, limit: float) -> int | None:
    """Smallest k <= max_exp with values * 2**k integral and max|.| * 2**k <= limit."""
    finite = values[np.isfinite(values)]
    peak = float(np.max(np.abs(finite))) if finite.size else 0.0
    for k in range(max_exp + 1):
        scaled = finite * 2.0**k
        if peak * 2.0**k > limit:
            return None
        if np.all(scaled == np.round(scaled)):
            return k
    return None


def _scale_rows(
    block: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray, widest: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, float, bool]:
    """Integer coefficients and bounds for one row family; see the module docstring."""
    values = np.concatenate([block.data, lo, hi])
    k = _exact_power(values, _MAX_CONSTRAINT_SCALE_EXP, 2.0**52)
    if k is not None:
        t = 2.0**k
        out = block.copy()
        out.data = np.round(block.data * t)
        return out, np.round(lo * t), np.round(hi * t), t, True
    t = 2.0**_MAX_CONSTRAINT_SCALE_EXP
    out = block.copy()
    out.data = np.round(block.data * t)
    # worst-case rounding of a whole row: 0.5 per possible nonzero
    slack = 0.5 * widest
    lo_i = np.ceil(lo * t + slack)
    hi_i = np.floor(hi * t - slack)
    return out, lo_i, hi_i, t, False


def _clipped_bounds(
    model: LinearModel, rows: slice, block: sp.csr_matrix, soft_lo: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Row bounds clipped to what the row's activity can reach (keeps integers in int64).

    Every coefficient of the pair columns is non-negative, so the activity lies in
    ``[-s+, sum of coefficients + s-]``; a bound beyond that changes nothing (an upper
    bound) or stays infeasible (a lower bound, clipped to just past the reach).
    """
    reach = np.asarray(abs(block[:, : model.n_pairs]).sum(axis=1)).ravel()
    if soft_lo is not None:
        reach = reach + soft_lo
    lo = np.minimum(model.row_lo[rows], reach + 1.0)
    hi = np.minimum(model.row_hi[rows], reach)
    return lo, hi


def _add_variables(cp_model: Any, proto: Any, lo: np.ndarray, hi: np.ndarray) -> None:
    """Append one integer variable per column with domain ``[lo, hi]`` to ``proto``.

    Adding half a million variables one by one from Python costs about a second; here
    the common 0/1 domain is copied in C++ by doubling a block of variables
    (``merge_from`` appends repeated fields), and only the other columns (fixed
    pairs, slacks) are patched one by one.
    """
    lo_i = lo.astype(np.int64)
    hi_i = hi.astype(np.int64)
    count = int(lo_i.shape[0])
    block = cp_model.CpModel().proto
    block.variables.add().domain.extend([0, 1])
    while count:
        if count & 1:
            proto.merge_from(block)
        count >>= 1
        if count:
            bigger = cp_model.CpModel().proto
            bigger.copy_from(block)
            bigger.merge_from(block)
            block = bigger
    variables = proto.variables
    for j in np.flatnonzero((lo_i != 0) | (hi_i != 1)).tolist():
        domain = variables[j].domain
        domain[0] = int(lo_i[j])
        domain[1] = int(hi_i[j])


def _out_of_time_building(options: SolveOptions, t0: float) -> BackendOutput | None:
    """The ``TIME_LIMIT`` answer if the limit ran out while building, else ``None``."""
    left = time_left(options, t0)
    if left is None or left > MIN_SOLVER_TIME:
        return None
    elapsed = time.perf_counter() - t0
    stats = {"build_time": elapsed, "solve_time": 0.0}
    return out_of_time(
        "CP-SAT", float(options.time_limit or 0), "building the model", elapsed, stats
    )


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    n, e = problem.shape
    prepared = prepare_model(problem, options, t0)
    if isinstance(prepared, BackendOutput):
        return prepared
    model, norm = prepared
    m = model.n_pairs
    n_cols = int(model.c.shape[0])
    csr = model.A.tocsr()
    row_nnz = np.diff(csr.indptr)

    # ---- row families (client counts, knapsack if any, loads), each scaled on its own
    soft_lo = model.row_lo[model.load_rows] if problem.is_soft else None
    scaled_rows = []
    exact_constraints = True
    scales = []
    load_scale = 1.0
    for family, rows in model.row_blocks():
        block = csr[rows]
        lo, hi = _clipped_bounds(model, rows, block, soft_lo if family == "load" else None)
        block, lo_i, hi_i, t, exact = _scale_rows(block, lo, hi, row_nnz[rows].astype(float))
        scaled_rows.append((block, lo_i, hi_i))
        scales.append(t)
        exact_constraints &= exact
        if family == "load":
            load_scale = t

    # ---- columns: pairs are 0/1; slacks count load units of the scaled rows
    col_hi = np.ones(n_cols)
    obj = norm.c.copy()
    if n_cols > m:
        # s^- can be at most L_e, s^+ at most the total weight (scaled units)
        lo_load = model.row_lo[model.load_rows]
        total_w = float(problem.weights.sum())
        col_hi[m : m + e] = np.ceil(lo_load * load_scale)
        col_hi[m + e :] = np.ceil(total_w * load_scale)
        obj[m:] = norm.c[m:] / load_scale  # penalty per scaled unit
    # ---- objective scale: keep |scaled objective| of every feasible point below 2**50
    caps = problem.effective_capacity()
    pair_abs = np.zeros((n, e))
    pair_abs[model.pair_client, model.pair_expert] = np.abs(obj[:m])
    top_abs = -np.sort(-pair_abs, axis=1)
    csum_abs = np.concatenate([np.zeros((n, 1)), np.cumsum(top_abs, axis=1)], axis=1)
    magnitude = float(csum_abs[np.arange(n), np.minimum(caps, e)].sum())
    magnitude += float((np.abs(obj[m:]) * col_hi[m:]).sum())
    peak = float(np.max(np.abs(obj))) if obj.size else 0.0
    limit = _OBJECTIVE_LIMIT / max(magnitude / peak, 1.0) if peak > 0 else _OBJECTIVE_LIMIT
    k_obj = _exact_power(obj, 62, limit)
    if k_obj is not None:
        s = 2.0**k_obj
        exact_objective = True
    else:
        s = 2.0 ** math.floor(math.log2(limit / peak)) if peak > 0 else 1.0
        exact_objective = False
    obj_int = np.round(obj * s)
    err = np.abs(obj * s - obj_int) / s
    # delta: the largest total rounding error any feasible assignment can collect
    pair_err = np.zeros((n, e))
    pair_err[model.pair_client, model.pair_expert] = err[:m]
    top = -np.sort(-pair_err, axis=1)
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(top, axis=1)], axis=1)
    delta = float(csum[np.arange(n), np.minimum(caps, e)].sum())
    delta += float((err[m:] * col_hi[m:]).sum())

    # ---- the CP-SAT model, written straight into its proto (the clock is checked
    # before and after: on a large model each stage takes a few tenths of a second)
    spent = _out_of_time_building(options, t0)
    if spent is not None:
        return spent
    cp = cp_model.CpModel()
    proto = cp.proto
    _add_variables(cp_model, proto, model.col_lo, col_hi)
    for block, lo_i, hi_i in scaled_rows:
        indptr, indices, data = block.indptr, block.indices, block.data.astype(np.int64)
        for r in range(block.shape[0]):
            a, b = indptr[r], indptr[r + 1]
            ct = proto.constraints.add()
            ct.linear.vars.extend(indices[a:b].tolist())
            ct.linear.coeffs.extend(data[a:b].tolist())
            low = int(lo_i[r]) if np.isfinite(lo_i[r]) else cp_model.INT_MIN
            high = int(hi_i[r]) if np.isfinite(hi_i[r]) else cp_model.INT_MAX
            ct.linear.domain.extend([low, high])
    nz = np.flatnonzero(obj_int)
    proto.objective.vars.extend(nz.tolist())
    proto.objective.coeffs.extend((-obj_int[nz]).astype(np.int64).tolist())  # minimize -obj

    spent = _out_of_time_building(options, t0)
    if spent is not None:
        return spent
    warm = options.extra.get("warm_start")
    if warm is not None:
        start = model.start_vector(np.asarray(warm, dtype=bool))
        # written straight into the proto (add_hint per variable costs ~10 us each)
        proto.solution_hint.vars.extend(range(m))
        proto.solution_hint.values.extend((start[:m] > 0.5).astype(np.int64).tolist())

    solver = cp_model.CpSolver()
    params = solver.parameters
    params.num_workers = int(options.threads or 1)
    params.random_seed = int(options.seed)
    params.log_search_progress = bool(options.verbose)
    limit = DEFAULT_TIME_LIMIT if options.time_limit is None else float(options.time_limit)
    if options.mip_gap is not None:
        params.relative_gap_limit = float(options.mip_gap)
    for key, value in dict(options.extra.get("cpsat_parameters") or {}).items():
        setattr(params, key, value)
    t_build = time.perf_counter() - t0
    left = time_left(options, t0)  # building counts against the limit
    if left is not None:
        limit = max(left, 0.0)
    params.max_time_in_seconds = max(limit, MIN_SOLVER_TIME)
    raw = dict(options.extra.get("cpsat_parameters") or {})
    skip_presolve = (
        left is not None
        and "cp_model_presolve" not in raw
        and left < _PRESOLVE_SECONDS_PER_NONZERO * model.A.nnz
    )
    if skip_presolve:
        params.cp_model_presolve = False
    ran = left is None or left > MIN_SOLVER_TIME
    status = solver.solve(cp) if ran else cp_model.CpSolverStatus.UNKNOWN
    t_solve = time.perf_counter() - t0 - t_build

    stats: dict[str, Any] = {
        "build_time": t_build,
        "solve_time": t_solve,
        "solver_status": solver.status_name(status) if ran else "",
        "objective_scale": float(np.ldexp(s, min(norm.exponent, 1023 - 62))),
        "objective_offset": norm.offset,
        "objective_scaling_exact": exact_objective,
        "constraint_scales": scales,
        "constraint_scaling_exact": exact_constraints,
        "rounding_error_bound": float(np.ldexp(delta, -norm.exponent)),
        "threads": int(params.num_workers),
        "time_limit": limit,
    }
    if skip_presolve:
        stats["presolve_skipped"] = True
    if not ran:
        return out_of_time(
            "CP-SAT", float(options.time_limit or 0), "building the model", t_build, stats
        )
    stats.update(nodes=int(solver.num_branches), conflicts=int(solver.num_conflicts))
    S = cp_model.CpSolverStatus
    if status == S.INFEASIBLE:
        if exact_constraints:
            return BackendOutput(
                Status.INFEASIBLE, message="CP-SAT proved the problem infeasible", stats=stats
            )
        return BackendOutput(
            Status.ERROR,
            message="CP-SAT found the conservatively scaled problem infeasible; its weights "
            "or sizes are not exactly representable as integers, so infeasibility of the "
            "original is not proven (use method='highs')",
            stats=stats,
        )
    if status == S.MODEL_INVALID:
        return BackendOutput(
            Status.ERROR, message=f"CP-SAT rejected the model: {cp.validate()}", stats=stats
        )
    if status not in (S.OPTIMAL, S.FEASIBLE):
        return BackendOutput(
            Status.TIME_LIMIT if status == S.UNKNOWN else Status.ERROR,
            message="CP-SAT stopped before finding a feasible assignment "
            f"({solver.status_name(status)})",
            stats=stats,
        )
    values = np.asarray(solver.response_proto.solution, dtype=np.int64)[:m]
    x = np.zeros((n, e), dtype=bool)
    x[model.pair_client[values > 0], model.pair_expert[values > 0]] = True
    scaled_obj = -float(solver.objective_value)
    scaled_bound = -float(solver.best_objective_bound)
    bound = norm.upper(scaled_bound / s + delta) if exact_constraints else None
    stats["scaled_objective"] = scaled_obj
    stats["scaled_bound"] = scaled_bound
    proven = status == S.OPTIMAL and scaled_bound <= scaled_obj
    if proven and exact_constraints:
        return _check_rounding(problem, model, norm, x, bound, options, stats)
    if proven:
        return BackendOutput(
            Status.FEASIBLE,
            x=x,
            bound=None,
            stats=stats,
            message="optimal for conservatively scaled constraints (weights or sizes not "
            "exactly representable as integers); optimality for the original not proven",
        )
    # CP-SAT stops short of a proof at its time limit or at the requested gap; its wall
    # time alone can read under the limit on a busy machine, so the gap decides
    cp_gap = abs(scaled_bound - scaled_obj) / max(1.0, abs(scaled_obj))
    at_gap = options.mip_gap is not None and cp_gap <= float(options.mip_gap)
    hit_limit = solver.wall_time >= 0.99 * limit or not at_gap
    which = (
        f"the default time limit ({DEFAULT_TIME_LIMIT:g} s; pass time_limit= to change it)"
        if options.time_limit is None
        else "its time limit"
    )
    return BackendOutput(
        Status.TIME_LIMIT if hit_limit else Status.FEASIBLE,
        x=x,
        bound=bound,
        stats=stats,
        message=f"CP-SAT stopped at {which}"
        if hit_limit
        else "CP-SAT stopped at the requested gap",
    )


def _check_rounding(
    problem: AssignmentProblem,
    model: LinearModel,
    norm: NormalisedObjective,
    x: np.ndarray,
    bound: float | None,
    options: SolveOptions,
    stats: dict[str, Any],
) -> BackendOutput:
    """``OPTIMAL`` for the integer-rounded objective: optimal for the problem only when the
    bound (which carries the rounding error) lies within the optimality tolerance.

    Otherwise the price bound at the LP relaxation's duals (HiGHS, when installed) may
    still prove it; else the answer is ``FEASIBLE`` with the tighter valid bound.
    """
    if bound is not None and bound <= problem.objective(x) + optimality_tolerance(problem, x):
        stats["bound_check"] = "solver"
        return BackendOutput(Status.OPTIMAL, x=x, bound=bound, stats=stats)
    got = None
    if importlib.util.find_spec("highspy") is not None:
        got = lp_prices(problem, model, norm.c, norm.exponent, options)
    prices, mem = got if got is not None else (None, None)
    pb = price_bound(problem, prices, budget_prices=mem)
    stats["bound_check"] = "price bound" + ("" if got is not None else " (zero prices)")
    stats["price_bound_error"] = pb.error
    best = pb.upper if bound is None else min(bound, pb.upper)
    if proves_optimal(problem, x, pb):
        return BackendOutput(Status.OPTIMAL, x=x, bound=best, stats=stats)
    return BackendOutput(
        Status.FEASIBLE,
        x=x,
        bound=best,
        stats=stats,
        message="CP-SAT proved the integer-rounded objective optimal, but its rounding "
        f"error ({stats['rounding_error_bound']:.3g}) exceeds the optimality tolerance and "
        "the price bound does not close the gap: not proven optimal",
    )
