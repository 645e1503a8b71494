r"""Glue shared by the MIP and LP backends: empty models, the prepared model, outcomes.

**Objective normalisation** lives in :mod:`flexassign.backends._normalise` (one
normalisation for every MIP and LP backend: offsets removed per client, never-choosable
pairs and soft-penalty slacks kept out of the scale, a count phase for a dominant shared
offset); :func:`prepare_model` applies it. The post-solve check of what a solver
claims is :mod:`flexassign.backends._certify`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..problem import AssignmentProblem
from ..result import Status
from ._normalise import (
    NormalisedObjective,
    fix_count,
    fix_unchoosable,
    normalise_objective,
    scale_exponent,
)
from .base import MIN_SOLVER_TIME, BackendOutput, SolveOptions
from .linear import LinearModel, build_linear_model

__all__ = [
    "EXACT_GAP",
    "MIN_SOLVER_TIME",
    "NormalisedObjective",
    "empty_model_output",
    "mip_output",
    "model_stats",
    "normalise_objective",
    "out_of_time",
    "prepare_model",
    "scale_exponent",
    "time_left",
]

#: Relative gap (on the normalised objective) below which an answer is proven optimal.
EXACT_GAP = 1e-9


def time_left(options: SolveOptions, t0: float) -> float | None:
    """Seconds of ``options.time_limit`` left at this moment, for a backend that started at
    ``t0`` (a :func:`time.perf_counter` time); ``None`` without a limit.

    ``time_limit`` covers the whole backend call: building the model counts against it,
    and the solver gets what is left.
    """
    if options.time_limit is None:
        return None
    return float(options.time_limit) - (time.perf_counter() - t0)


def out_of_time(
    solver: str, limit: float, stage: str, elapsed: float, stats: dict[str, Any]
) -> BackendOutput:
    """``TIME_LIMIT`` without an assignment: the limit ran out before the solver started.

    ``stage`` says where the time went (e.g. ``"building the model"``);
    :func:`~flexassign.solve_assignment` then returns its start, if it has one.
    """
    return BackendOutput(
        Status.TIME_LIMIT,
        stats=stats,
        message=f"time_limit ran out {stage} ({elapsed:.2f} s of the {limit:.2f} s left "
        f"when the backend started); {solver} did not run",
    )


def solver_time_left(
    solver: str,
    options: SolveOptions,
    t0: float,
    model: LinearModel,
    norm: NormalisedObjective,
) -> tuple[float | None, float] | BackendOutput:
    """After building ``model``: ``(seconds left for the solver or None, build seconds)``.

    When the build used up ``options.time_limit`` the answer is instead the
    :func:`out_of_time` output for ``solver`` (with the shared :func:`model_stats`).
    """
    t_build = time.perf_counter() - t0
    left = time_left(options, t0)
    if left is not None and left <= MIN_SOLVER_TIME:
        stats = model_stats(model, norm, build_time=t_build, solve_time=0.0, solver_status="")
        return out_of_time(
            solver, float(options.time_limit or 0), "building the model", t_build, stats
        )
    return left, t_build


def empty_model_output(problem: AssignmentProblem, model: LinearModel) -> BackendOutput | None:
    """The answer when no pair may be assigned (no columns), else ``None``.

    The empty assignment is then the only candidate: feasible iff every row admits zero.
    """
    if model.c.shape[0] != 0:
        return None
    ok = bool(np.all(model.row_lo <= 0) and np.all(model.row_hi >= 0))
    return BackendOutput(
        Status.OPTIMAL if ok else Status.INFEASIBLE,
        x=np.zeros(problem.shape, dtype=bool) if ok else None,
        bound=0.0 if ok else None,
        message="" if ok else "no pair may be assigned but some minimum is positive",
    )


def prepare_model(
    problem: AssignmentProblem,
    options: SolveOptions | None = None,
    t0: float | None = None,
) -> tuple[LinearModel, NormalisedObjective] | BackendOutput:
    """The shared sparse model and its normalised objective, as every MIP backend starts.

    Never-choosable pairs are bounded to 0 (:func:`~._normalise.fix_unchoosable`).
    With ``options`` (and ``t0``, when the backend started), a dominant shared offset
    is handled by the count phase (:func:`~._normalise.fix_count`): the model then
    carries the extra row :math:`N = N^*`. Returns the :func:`empty_model_output`
    answer instead when no pair may be assigned (solvers disagree on empty models).
    """
    model = fix_unchoosable(problem, build_linear_model(problem))
    empty = empty_model_output(problem, model)
    if empty is not None:
        return empty
    if options is None:
        return model, normalise_objective(problem, model)
    norm = normalise_objective(problem, model, count_phase=True)
    return fix_count(problem, model, norm, options, time.perf_counter() if t0 is None else t0)


def model_stats(
    model: LinearModel,
    norm: NormalisedObjective,
    *,
    build_time: float,
    solve_time: float,
    solver_status: str,
) -> dict[str, Any]:
    """The ``stats`` keys every MIP backend on the shared model reports (docs/problem.md)."""
    return {
        "build_time": build_time,
        "solve_time": solve_time,
        "solver_status": solver_status,
        "columns": int(model.c.shape[0]),
        "rows": int(model.A.shape[0]),
        "nonzeros": int(model.A.nnz),
        **norm.stats(),
    }


def mip_output(
    *,
    solver: str,
    outcome: str,
    x: NDArray[np.bool_] | None,
    bound: float | None,
    gap: float | None,
    integer: bool,
    detail: str,
    stats: dict[str, Any],
) -> BackendOutput:
    """The one mapping from a MIP solver's outcome to a :class:`BackendOutput`.

    ``outcome`` is ``"optimal"``, ``"infeasible"``, ``"limit"`` (time, iteration or
    solution limit, interrupt), ``"feasible"`` (stopped otherwise with an assignment
    and no proof; ``detail`` says why) or anything else (an error; ``detail`` says
    which).
    ``OPTIMAL`` needs the solver's gap (on the normalised objective) within
    :data:`EXACT_GAP`; a solver that stopped at a looser ``mip_gap`` gives ``FEASIBLE``.
    ``integer=False`` (only continuous slack columns left: an LP) has no gap to judge.
    """
    if outcome == "infeasible":
        return BackendOutput(
            Status.INFEASIBLE, message=f"{solver} proved the MIP infeasible", stats=stats
        )
    if outcome == "optimal":
        if integer and gap is not None and gap > EXACT_GAP:
            return BackendOutput(
                Status.FEASIBLE,
                x=x,
                bound=bound,
                stats=stats,
                message=f"{solver} stopped at relative gap {gap:.3g} (mip_gap)",
            )
        return BackendOutput(Status.OPTIMAL, x=x, bound=bound, stats=stats)
    if outcome == "limit":
        return BackendOutput(
            Status.TIME_LIMIT,
            x=x,
            bound=bound,
            stats=stats,
            message=f"{solver} stopped early ({detail})"
            + ("" if x is not None else " without a feasible assignment"),
        )
    return BackendOutput(
        Status.FEASIBLE if outcome == "feasible" and x is not None else Status.ERROR,
        x=x,
        bound=bound,
        stats=stats,
        message=f"{solver} ended with {detail}",
    )
