"""Exception hierarchy.

Every error raised for bad user input subclasses both :class:`FlexAssignError`
and the matching builtin (:class:`ValueError` or :class:`TypeError`), so callers
can catch either. Messages name the offending argument in backticks.
"""

from __future__ import annotations

__all__ = [
    "BackendNotInstalledError",
    "FlexAssignError",
    "InvalidFeedbackError",
    "InvalidProblemError",
    "ProblemTypeError",
    "UnknownMethodError",
    "UnsupportedProblemError",
]


class FlexAssignError(Exception):
    """Base class of every error raised by flexassign."""


class InvalidProblemError(FlexAssignError, ValueError):
    """An argument has the right type but an invalid value, shape or range."""


class ProblemTypeError(FlexAssignError, TypeError):
    """An argument has the wrong type."""


class UnknownMethodError(FlexAssignError, ValueError):
    """``method`` names no registered backend."""


class BackendNotInstalledError(FlexAssignError, ValueError):
    """The requested backend's solver package is not installed."""


class UnsupportedProblemError(FlexAssignError, ValueError):
    """The requested backend cannot represent this problem (e.g. flow with a knapsack)."""


class InvalidFeedbackError(FlexAssignError, ValueError):
    """Training feedback reported to the planner is malformed."""
