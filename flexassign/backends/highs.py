"""MIP backend: HiGHS through highspy.

The model comes from :func:`~flexassign.backends.linear.build_linear_model` as sparse
arrays and is handed to HiGHS in one ``passModel`` call. Options:

``time_limit``, ``mip_gap`` (``mip_rel_gap``), ``seed`` (``random_seed``), ``threads``;
``options={"warm_start": x}`` passes a 0/1 start assignment (e.g. from
``greedy-balanced``) and ``options={"highs_options": {...}}`` sets raw HiGHS options.
By default HiGHS runs on one thread so results are deterministic.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from .base import BackendOutput, SolveOptions
from .linear import build_linear_model

__all__ = ["solve"]

#: Relative gap below which a HiGHS "optimal" is reported as proven optimal.
_EXACT_GAP = 1e-9


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    import highspy

    t0 = time.perf_counter()
    model = build_linear_model(problem)
    inf = highspy.kHighsInf

    n_cols = int(model.c.shape[0])
    n_rows = int(model.A.shape[0])
    integrality = model.integrality.astype(np.int32)
    if n_cols == 0:  # nothing may be assigned: feasible iff every row admits zero
        ok = bool(np.all(model.row_lo <= 0) and np.all(model.row_hi >= 0))
        return BackendOutput(
            Status.OPTIMAL if ok else Status.INFEASIBLE,
            x=np.zeros(problem.shape, dtype=bool) if ok else None,
            message="" if ok else "no pair may be assigned but some minimum is positive",
        )
    # Scale the objective to max |c| = 1 (a power of two: exact) so HiGHS's absolute
    # tolerances mean the same at any fitness scale.
    peak = float(np.max(np.abs(model.c))) if n_cols else 0.0
    obj_scale = 2.0 ** -np.floor(np.log2(peak)) if peak > 0 else 1.0

    h = highspy.Highs()
    h.setOptionValue("output_flag", bool(options.verbose))
    h.setOptionValue("random_seed", int(options.seed))
    h.setOptionValue("threads", int(options.threads or 1))
    if options.time_limit is not None:
        h.setOptionValue("time_limit", float(options.time_limit))
    # HiGHS stops at a 1e-4 relative / 1e-6 absolute gap by default: far from "optimal"
    # for small-scale fitness. Prove optimality unless the user asks for a gap.
    h.setOptionValue(
        "mip_rel_gap", _EXACT_GAP if options.mip_gap is None else float(options.mip_gap)
    )
    h.setOptionValue("mip_abs_gap", 0.0)
    raw: dict[str, Any] = dict(options.extra.get("highs_options", {}))
    for key, value in raw.items():
        h.setOptionValue(key, value)
    h.passModel(
        n_cols,
        n_rows,
        int(model.A.nnz),
        1,  # MatrixFormat.kColwise
        1,  # ObjSense.kMinimize: HiGHS minimizes -c
        0.0,
        np.ascontiguousarray(-model.c * obj_scale),
        model.col_lo,
        np.where(np.isinf(model.col_hi), inf, model.col_hi),
        np.where(np.isinf(model.row_lo), -inf, model.row_lo),
        np.where(np.isinf(model.row_hi), inf, model.row_hi),
        model.A.indptr.astype(np.int32),
        model.A.indices.astype(np.int32),
        model.A.data.astype(np.float64),
        integrality,
    )

    warm = options.extra.get("warm_start")
    if warm is not None:
        sol = highspy.HighsSolution()
        sol.col_value = model.start_vector(np.asarray(warm, dtype=bool))
        sol.value_valid = True
        h.setSolution(sol)

    t_build = time.perf_counter() - t0
    h.run()
    t_solve = time.perf_counter() - t0 - t_build
    ms = h.getModelStatus()
    info = h.getInfo()
    stats: dict[str, Any] = {
        "build_time": t_build,
        "solve_time": t_solve,
        "model_status": h.modelStatusToString(ms),
        "columns": n_cols,
        "rows": n_rows,
        "nonzeros": int(model.A.nnz),
    }
    MS = highspy.HighsModelStatus
    if ms == MS.kInfeasible:
        return BackendOutput(
            Status.INFEASIBLE, message="HiGHS proved the MIP infeasible", stats=stats
        )
    if ms in (MS.kUnbounded, MS.kUnboundedOrInfeasible):
        return BackendOutput(
            Status.INFEASIBLE, message="HiGHS reports the MIP infeasible or unbounded", stats=stats
        )

    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = None
    if has_solution:
        values = np.asarray(h.getSolution().col_value)
        x = model.to_assignment(problem.shape, values)
    bound = -float(info.mip_dual_bound) / obj_scale if np.isfinite(info.mip_dual_bound) else None
    stats["objective_scale"] = obj_scale
    stats["mip_node_count"] = int(info.mip_node_count)
    stats["mip_gap"] = float(info.mip_gap)
    if ms == MS.kOptimal:
        # an all-continuous model (only slacks left) is an LP: no MIP gap to judge
        if integrality.any() and info.mip_gap > _EXACT_GAP and bound is not None:
            return BackendOutput(
                Status.FEASIBLE,
                x=x,
                bound=bound,
                stats=stats,
                message=f"HiGHS stopped at relative gap {info.mip_gap:.3g} (mip_gap)",
            )
        return BackendOutput(Status.OPTIMAL, x=x, bound=bound, stats=stats)
    if ms in (MS.kTimeLimit, MS.kIterationLimit, MS.kSolutionLimit, MS.kInterrupt):
        return BackendOutput(
            Status.TIME_LIMIT,
            x=x,
            bound=bound,
            message=f"HiGHS stopped early ({h.modelStatusToString(ms)})"
            + ("" if has_solution else " without a feasible assignment"),
            stats=stats,
        )
    return BackendOutput(
        Status.ERROR,
        x=x,
        bound=bound,
        message=f"HiGHS ended with model status {h.modelStatusToString(ms)}",
        stats=stats,
    )
