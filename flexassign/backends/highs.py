"""MIP backend: HiGHS through highspy.

The model comes from :func:`~flexassign.backends.linear.build_linear_model` as sparse
arrays and is handed to HiGHS in one ``passModel`` call, with the objective normalised
(offset and power-of-two scale, :func:`~flexassign.backends._normalise.normalise_objective`)
so that the gap tolerance applies to the part of the objective that can vary (a
dominant shared offset goes through the count phase first); the claim is then checked
independently (:func:`~flexassign.backends._certify.certify`, ``stats["bound_check"]``).

Settings: ``time_limit`` (the whole call: HiGHS's ``time_limit`` is what building the
model left; none left: ``TIME_LIMIT`` before HiGHS starts), ``mip_gap``
(``mip_rel_gap``; default 1e-9 and ``mip_abs_gap`` 0, so that ``OPTIMAL`` means
proven), ``seed`` (``random_seed``), ``threads`` (default 1: deterministic). Options:
``warm_start`` (a 0/1 start assignment, kept as the first incumbent) and
``highs_options`` (raw HiGHS options, names and values checked).
"""

from __future__ import annotations

import time

import numpy as np

from ..problem import AssignmentProblem
from . import _highs
from ._common import EXACT_GAP, mip_output, model_stats, prepare_model, solver_time_left
from ._guard import TIGHT_MIP_FEASIBILITY, TIGHTEN_BELOW, certify, solver_resolution
from .base import BackendOutput, SolveOptions

__all__ = ["solve"]


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    import highspy

    t0 = time.perf_counter()
    prepared = prepare_model(problem, options, t0)
    if isinstance(prepared, BackendOutput):
        return prepared
    model, norm = prepared
    threads = _highs.threads_of(options)
    h = _highs.new_highs(options)
    h.setOptionValue("mip_rel_gap", EXACT_GAP if options.mip_gap is None else options.mip_gap)
    h.setOptionValue("mip_abs_gap", 0.0)
    raw = dict(options.extra.get("highs_options") or {})
    tighten = solver_resolution(problem, model, norm.c) < TIGHTEN_BELOW
    if tighten and "mip_feasibility_tolerance" not in raw:
        # HiGHS also prunes on the objective with this tolerance (default 1e-6): too
        # coarse for choices that differ by ~1e-6 of the largest cost
        h.setOptionValue("mip_feasibility_tolerance", TIGHT_MIP_FEASIBILITY)
    _highs.set_options(h, raw, "options['highs_options']")
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

    budget = solver_time_left("HiGHS", options, t0, model, norm)
    if isinstance(budget, BackendOutput):
        return budget
    left, t_build = budget
    if left is not None:
        h.setOptionValue("time_limit", left)  # building counted against the limit
    _highs.run(h, threads)
    ms = h.getModelStatus()
    info = h.getInfo()
    stats = model_stats(
        model,
        norm,
        build_time=t_build,
        solve_time=time.perf_counter() - t0 - t_build,
        solver_status=h.modelStatusToString(ms),
    )
    stats.update(threads=threads, nodes=int(info.mip_node_count), solver_gap=float(info.mip_gap))
    if tighten:
        stats["tightened_tolerance"] = True
    x = None
    if info.primal_solution_status == 2:  # kSolutionStatusFeasible
        x = model.to_assignment(problem.shape, np.asarray(h.getSolution().col_value))
    dual = float(info.mip_dual_bound)
    out = mip_output(
        solver="HiGHS",
        outcome=_highs.outcome(h),
        x=x,
        bound=norm.upper(-dual) if np.isfinite(dual) else None,
        gap=float(info.mip_gap),
        integer=bool(model.integrality.any()),
        detail=h.modelStatusToString(ms),
        stats=stats,
    )
    return certify(problem, model, norm.c, norm.exponent, out, options, solver="HiGHS", t0=t0)
