"""flexassign: load-balanced client-expert assignment for federated Mixture-of-Experts.

The core API::

    from flexassign import AssignmentProblem, solve_assignment, Status, available_backends

    problem = AssignmentProblem.balanced(fitness, capacity=2, tolerance=0.1)
    result = solve_assignment(problem)          # verified; result.success, result.experts

Importing flexassign is fast: solver packages load only when a backend runs, and
pandas, Hypothesis, torch and Flower are never loaded by it. Labelled pandas input
and tidy output live in :mod:`flexassign.labels`; Hypothesis strategies and assertions
for testing your own assignment code in :mod:`flexassign.testing`.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .backends.registry import Backend, available_backends, list_backends, register_backend
from .errors import (
    BackendNotInstalledError,
    FlexAssignError,
    InvalidFeedbackError,
    InvalidProblemError,
    ProblemTypeError,
    UnknownMethodError,
    UnsupportedProblemError,
)
from .problem import AssignmentProblem
from .result import AssignmentResult, Status, Violation
from .solve import auto_method, evaluate_assignment, solve_assignment
from .verify import Verification, diagnose_infeasibility, verify_assignment

try:  # one source of truth: the version in pyproject.toml, via the installed metadata
    __version__: str = _metadata.version("flexassign")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree never installed
    __version__ = "0+unknown"

# The dynamic side (fitness tracking, usage monitoring, capacity profiles, the planner)
# lives in flexassign.alignment; its main names are re-exported lazily here.
_ALIGNMENT = ("Planner", "Plan", "ClientProfile", "Feedback")


def __getattr__(name: str) -> object:
    if name in _ALIGNMENT:
        from . import alignment

        return getattr(alignment, name)
    raise AttributeError(f"module 'flexassign' has no attribute {name!r}")

__all__ = [  # noqa: RUF022 - grouped: core first, then the lazily loaded planner names
    "AssignmentProblem",
    "AssignmentResult",
    "Backend",
    "BackendNotInstalledError",
    "FlexAssignError",
    "InvalidFeedbackError",
    "InvalidProblemError",
    "ProblemTypeError",
    "Status",
    "UnknownMethodError",
    "UnsupportedProblemError",
    "Verification",
    "Violation",
    "__version__",
    "auto_method",
    "available_backends",
    "diagnose_infeasibility",
    "evaluate_assignment",
    "list_backends",
    "register_backend",
    "solve_assignment",
    "verify_assignment",
    "ClientProfile",
    "Feedback",
    "Plan",
    "Planner",
]
