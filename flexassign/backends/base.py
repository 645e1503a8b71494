"""What every backend receives and returns.

A backend is a module with one function ``solve(problem, options) -> BackendOutput``.
It sees only the validated :class:`~flexassign.problem.AssignmentProblem` and the
options; :func:`flexassign.solve_assignment` verifies whatever it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..problem import AssignmentProblem
from ..result import Status

__all__ = ["MIN_SOLVER_TIME", "BackendOutput", "SolveFunction", "SolveOptions"]

#: Seconds a backend must have left of ``time_limit`` for its solver to be started.
MIN_SOLVER_TIME = 1e-3


@dataclass(frozen=True)
class SolveOptions:
    """Options shared by all backends.

    Attributes
    ----------
    time_limit : float or None
        Wall-clock seconds for the whole backend call: building the model counts
        against it and the solver gets what is left (what the caller's ``time_limit``
        left after validation and the start heuristics).
    mip_gap : float or None
        Relative optimality gap at which a MIP solver may stop.
    seed : int
        Random seed handed to the solver (and used by randomized heuristics).
    threads : int or None
        Solver threads; ``None`` lets the backend choose (deterministic by default).
    verbose : bool
        Let the solver print its log.
    extra : Mapping
        Backend-specific options (``options=`` of :func:`~flexassign.solve_assignment`).
    """

    time_limit: float | None = None
    mip_gap: float | None = None
    seed: int = 0
    threads: int | None = None
    verbose: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BackendOutput:
    """A backend's raw answer, before verification.

    ``status`` is the backend's claim; the verifier may downgrade it.
    """

    status: Status
    x: NDArray[np.bool_] | None = None
    bound: float | None = None
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


class SolveFunction(Protocol):
    def __call__(self, problem: AssignmentProblem, options: SolveOptions) -> BackendOutput: ...
