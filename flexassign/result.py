"""Solver status and the verified result returned by :func:`flexassign.solve_assignment`."""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ._files import jsonable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from .labels import Labels
    from .problem import AssignmentProblem

__all__ = ["AssignmentResult", "Status", "Violation"]


class Status(str, enum.Enum):
    """Outcome of a solve.

    ``OPTIMAL`` and ``FEASIBLE`` always come with an assignment that satisfies every
    constraint. ``TIME_LIMIT`` may carry a verified incumbent (then ``success`` is True).
    ``VIOLATES_CONSTRAINTS`` is what baseline heuristics (``greedy``) return when their
    assignment breaks a constraint; it is never a success.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    TIME_LIMIT = "time_limit"
    ERROR = "error"
    VIOLATES_CONSTRAINTS = "violates_constraints"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Violation:
    """One broken constraint, in the user's terms.

    Attributes
    ----------
    kind : str
        ``"capacity"``, ``"min_experts"``, ``"budget"``, ``"expert_min_load"``,
        ``"expert_max_load"``, ``"allowed"`` or ``"fixed"``.
    index : int or tuple of int
        Client, expert, or (client, expert) at fault.
    value, limit : float
        The recomputed quantity and the bound it breaks.
    """

    kind: str
    index: int | tuple[int, int]
    value: float
    limit: float

    def __str__(self) -> str:
        template = _VIOLATION_TEXT.get(self.kind, "{kind} {i}: {v:g} vs {lim:g}")
        return template.format(kind=self.kind, i=self.index, v=self.value, lim=self.limit)


#: How each kind of :class:`Violation` reads (``i`` index, ``v`` value, ``lim`` limit).
_VIOLATION_TEXT = {
    "capacity": "client {i} takes {v:g} experts > capacity {lim:g}",
    "min_experts": "client {i} takes {v:g} experts < min_experts {lim:g}",
    "budget": "client {i} uses memory {v:g} > client_budget {lim:g}",
    "expert_min_load": "expert {i} has load {v:g} < expert_min_load {lim:g}",
    "expert_max_load": "expert {i} has load {v:g} > expert_max_load {lim:g}",
    "allowed": "pair {i} is assigned but not allowed",
    "fixed": "pair {i} is fixed but not assigned",
}


@dataclass(frozen=True, eq=False)
class AssignmentResult:
    """A verified assignment and the solver's report.

    Attributes
    ----------
    status : Status
    x : ndarray of bool, shape (N, E), or None
        The assignment (read-only, like every array of the result); ``None`` when the
        solver returned none.
    objective : float
        Objective recomputed from ``x`` by the verifier (NaN without ``x``).
    bound : float or None
        Best proven upper bound on the objective, when the method provides one.
    gap : float or None
        ``(bound - objective) / max(|objective|, 1)``, when a bound is known.
    loads : ndarray, shape (E,), or None
        Recomputed per-expert load :math:`\\sum_c w_c x_{ce}`.
    runtime : float
        Wall time of the whole call (validation, solve, verification), seconds.
    method : str
        The backend that produced ``x`` (``"auto"`` resolved to a real name).
    message : str
        What happened, in the user's terms; for infeasible problems, why.
    violations : tuple of Violation
        Constraints ``x`` breaks (empty for every success).
    stats : dict
        Backend-specific report (build/solve time, scaling, node count, ...).
    labels : Labels or None
        Client and expert labels when the input was labelled (a pandas ``DataFrame``
        or ``Series``; see :mod:`flexassign.labels`), else ``None`` (positions).
    problem : AssignmentProblem or None
        The problem ``x`` was verified against (for :meth:`to_frame`).
    """

    status: Status
    x: NDArray[np.bool_] | None
    objective: float
    bound: float | None
    gap: float | None
    loads: NDArray[np.float64] | None
    runtime: float
    method: str
    message: str
    violations: tuple[Violation, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    labels: Labels | None = None
    problem: AssignmentProblem | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # read-only copies: flipping x must not silently desynchronise objective/loads
        for name in ("x", "loads"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _read_only(value))
        object.__setattr__(self, "violations", tuple(self.violations))
        object.__setattr__(self, "stats", _freeze_arrays(self.stats))

    @property
    def success(self) -> bool:
        """True when an assignment satisfying every constraint is returned."""
        return (
            self.x is not None
            and not self.violations
            and self.status in (Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT)
        )

    @property
    def experts(self) -> list[tuple[int, ...]] | None:
        """Per client, the sorted indices of its assigned experts."""
        if self.x is None:
            return None
        return [tuple(int(e) for e in np.flatnonzero(row)) for row in self.x]

    @property
    def assignment(self) -> dict[Hashable, tuple[Hashable, ...]] | None:
        """Per client label, its expert labels: ``{client: (expert, ...)}``.

        Labels are the input's (see :mod:`flexassign.labels`), or positions for
        array input. ``None`` without an assignment.
        """
        from .labels import assignment

        return assignment(self)

    @property
    def load_by_expert(self) -> dict[Hashable, float] | None:
        """Per expert label, its load: ``{expert: load}`` (``None`` without loads)."""
        from .labels import load_by_expert

        return load_by_expert(self)

    def to_frame(self) -> pd.DataFrame:
        """The assignment as a tidy pandas table, one row per assigned pair.

        Columns ``client``, ``expert`` (labels), ``fitness`` and ``load_share`` (the
        pair's fraction of the expert's load). Needs pandas (the ``labels`` extra).
        """
        from .labels import result_frame

        return result_frame(self)

    def with_labels(
        self, clients: Iterable[Hashable], experts: Iterable[Hashable]
    ) -> AssignmentResult:
        """A copy carrying client and expert labels (one per row and column of ``x``)."""
        from .labels import Labels, attach

        return attach(self, Labels(clients, experts))

    def to_dict(self, *, include_assignment: bool = True) -> dict[str, Any]:
        """A JSON-serializable view of the result."""
        out: dict[str, Any] = {
            "status": self.status.value,
            "success": self.success,
            "method": self.method,
            "objective": None if np.isnan(self.objective) else self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "runtime": self.runtime,
            "message": self.message,
            "violations": [str(v) for v in self.violations],
            "loads": None if self.loads is None else self.loads.tolist(),
            "stats": jsonable(self.stats),
        }
        if include_assignment:
            out["experts"] = None if self.experts is None else [list(e) for e in self.experts]
        return out

    def __repr__(self) -> str:
        shape = None if self.x is None else self.x.shape
        return (
            f"AssignmentResult(status={self.status.value}, success={self.success}, "
            f"method={self.method!r}, objective={self.objective:.6g}, gap={self.gap}, "
            f"shape={shape}, runtime={self.runtime:.4f}s)"
        )


def _read_only(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        return a
    arr = np.array(a, copy=True)
    arr.setflags(write=False)
    return arr


def _freeze_arrays(value: Any) -> Any:
    """``value`` with every numpy array inside made a read-only copy (dicts copied)."""
    if isinstance(value, dict):
        return {
            k: v if not isinstance(v, dict | np.ndarray) else _freeze_arrays(v)
            for k, v in value.items()
        }
    if isinstance(value, np.ndarray):
        return _read_only(value)
    return value
