r"""Glue shared by the MIP and LP backends: empty models, objective normalisation, outcomes.

**Objective normalisation** (:func:`normalise_objective`). MIP solvers judge optimality
by a relative gap against the objective they see. A large common offset in the fitness
(``1e8 + U(0, 1)``) swamps the differences that decide the optimum, and a tiny scale
(``1e-9``) falls below absolute tolerances. Every MIP backend therefore solves an
equivalent objective:

* fixed pairs contribute a constant (their cost becomes 0);
* a client whose number of experts is forced (``min_experts`` equal to its effective
  capacity) contributes :math:`\alpha_c (k_c - f_c)` whatever it picks, so its free
  pairs' costs drop by :math:`\alpha_c`, the midpoint of its free pairs' fitness;
* the result is multiplied by a power of two (exact) so that its largest coefficient
  lies in :math:`[1, 2)`.

The solver's objective is then the *part of the objective that can vary*, and the
documented gap (``1e-9`` relative) is measured on it. ``original(v)`` maps a value of
the normalised objective (e.g. a dual bound) back; ``stats["objective_offset"]`` and
``stats["objective_scale_exponent"]`` report the transformation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..problem import AssignmentProblem
from ..result import Status
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


@dataclass(frozen=True)
class NormalisedObjective:
    """An objective equivalent to the model's (maximize), offset and scaled.

    For every feasible column vector ``v``: ``model.c @ v == original(c @ v)``
    (up to float rounding of ``offset``).

    Attributes
    ----------
    c : ndarray
        Normalised coefficients, same columns as the model.
    offset : float
        Constant part of the objective.
    exponent : int
        ``c`` is the varying part times ``2**exponent``.
    """

    c: NDArray[np.float64]
    offset: float
    exponent: int

    def original(self, value: float) -> float:
        """A value of the normalised objective, in the problem's units."""
        return self.offset + math.ldexp(float(value), -self.exponent)

    def stats(self) -> dict[str, float | int]:
        return {"objective_offset": self.offset, "objective_scale_exponent": self.exponent}


def scale_exponent(peak: float) -> int:
    """``k`` with ``peak * 2**k`` in ``[1, 2)`` (0 for ``peak == 0``)."""
    if peak <= 0 or not math.isfinite(peak):
        return 0
    _, ex = math.frexp(peak)  # peak = m * 2**ex, m in [0.5, 1)
    return 1 - ex


def normalise_objective(problem: AssignmentProblem, model: LinearModel) -> NormalisedObjective:
    """Offset and scale the objective so solvers see only what can vary (module docstring)."""
    m = model.n_pairs
    n, e = problem.shape
    c = np.array(model.c, dtype=np.float64)
    pc, pe = model.pair_client, model.pair_expert
    fixed_col = model.col_lo[:m] >= 1
    offset_terms = [c[:m][fixed_col]]
    c[:m][fixed_col] = 0.0
    free = np.zeros((n, e), dtype=bool)
    free[pc[~fixed_col], pe[~fixed_col]] = True
    n_fixed = problem.fixed_mask.sum(axis=1)
    n_allowed = problem.allowed_mask.sum(axis=1)
    forced = (problem.min_experts == problem.effective_capacity()) & (
        problem.min_experts <= n_allowed
    )
    forced &= free.any(axis=1)
    if forced.any():
        fit = problem.fitness
        hi = np.where(forced, np.where(free, fit, -np.inf).max(axis=1), 0.0)
        lo = np.where(forced, np.where(free, fit, np.inf).min(axis=1), 0.0)
        alpha = 0.5 * hi + 0.5 * lo  # the midpoint, without overflow
        take = np.where(forced, problem.min_experts - n_fixed, 0).astype(np.float64)
        offset_terms.append(alpha * take)
        shift = alpha[pc]
        c[:m] = np.where(fixed_col, 0.0, c[:m] - shift)
    offset = float(np.sum(np.concatenate(offset_terms))) if offset_terms else 0.0
    peak = float(np.max(np.abs(c))) if c.size else 0.0
    k = scale_exponent(peak)
    return NormalisedObjective(c=np.ldexp(c, k), offset=offset, exponent=k)


def prepare_model(
    problem: AssignmentProblem,
) -> tuple[LinearModel, NormalisedObjective] | BackendOutput:
    """The shared sparse model and its normalised objective, as every MIP backend starts.

    Returns the :func:`empty_model_output` answer instead when no pair may be assigned
    (solvers disagree on empty models).
    """
    model = build_linear_model(problem)
    empty = empty_model_output(problem, model)
    if empty is not None:
        return empty
    return model, normalise_objective(problem, model)


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
