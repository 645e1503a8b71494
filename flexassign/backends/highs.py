"""MIP backend: HiGHS through highspy.

The model comes from :func:`~flexassign.backends.linear.build_linear_model` as sparse
arrays and is handed to HiGHS in one ``passModel`` call, with the objective normalised
(offset and power-of-two scale, :func:`~flexassign.backends._common.normalise_objective`)
so that the gap tolerance applies to the part of the objective that can vary.

Settings: ``time_limit`` (HiGHS ``time_limit``, on the solve; building the model comes
on top), ``mip_gap`` (``mip_rel_gap``; default 1e-9 and ``mip_abs_gap`` 0, so that
``OPTIMAL`` means proven), ``seed`` (``random_seed``), ``threads`` (default 1:
deterministic). Options: ``warm_start`` (a 0/1 start assignment, kept as the first
incumbent) and ``highs_options`` (raw HiGHS options, names and values checked).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from . import _highs
from ._common import EXACT_GAP, empty_model_output, normalise_objective
from .base import BackendOutput, SolveOptions
from .linear import build_linear_model

__all__ = ["solve"]


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    import highspy

    t0 = time.perf_counter()
    model = build_linear_model(problem)
    empty = empty_model_output(problem, model)
    if empty is not None:
        return empty
    norm = normalise_objective(problem, model)
    threads = _highs.threads_of(options)
    h = _highs.new_highs(options, time_limit=options.time_limit)
    h.setOptionValue("mip_rel_gap", EXACT_GAP if options.mip_gap is None else options.mip_gap)
    h.setOptionValue("mip_abs_gap", 0.0)
    _highs.set_options(h, options.extra.get("highs_options") or {}, "options['highs_options']")
    _highs.pass_model(
        h,
        -norm.c,
        model.A,
        model.col_lo,
        model.col_hi,
        model.row_lo,
        model.row_hi,
        model.integrality,
    )
    warm = options.extra.get("warm_start")
    if warm is not None:
        sol = highspy.HighsSolution()
        sol.col_value = model.start_vector(np.asarray(warm, dtype=bool))
        sol.value_valid = True
        h.setSolution(sol)

    t_build = time.perf_counter() - t0
    _highs.run(h, threads)
    ms = h.getModelStatus()
    info = h.getInfo()
    stats: dict[str, Any] = {
        "build_time": t_build,
        "solve_time": time.perf_counter() - t0 - t_build,
        "solver_status": h.modelStatusToString(ms),
        "columns": int(model.c.shape[0]),
        "rows": int(model.A.shape[0]),
        "nonzeros": int(model.A.nnz),
        "threads": threads,
        "nodes": int(info.mip_node_count),
        "solver_gap": float(info.mip_gap),
        **norm.stats(),
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
        x = model.to_assignment(problem.shape, np.asarray(h.getSolution().col_value))
    dual = float(info.mip_dual_bound)
    bound = norm.original(-dual) if np.isfinite(dual) else None
    if ms == MS.kOptimal:
        # an all-continuous model (only slacks left) is an LP: no MIP gap to judge
        if model.integrality.any() and info.mip_gap > EXACT_GAP:
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
