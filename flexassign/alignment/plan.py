"""One round's plan: :class:`Plan`, a read-only mapping ``client id -> expert ids``."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..problem import AssignmentProblem
from ..result import AssignmentResult, Status

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

__all__ = ["Plan", "empty_result", "expert_lists"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Plan(Mapping[Hashable, tuple[int, ...]]):
    """One round's assignment: a read-only mapping ``client id -> expert ids``.

    Attributes
    ----------
    round : int
        Round index (0 for the first plan).
    strategy : str
        ``"flex"``, ``"greedy"``, ``"desirability"``, ``"random"``, or ``"external"``
        for :meth:`Planner.impose_round`.
    client_ids : tuple
        Participating clients, in the order given (rows of ``result.x``).
    result : AssignmentResult
        The verified solver result. For greedy/desirability/random it is checked
        against the plain balance bounds, so ``result.success`` is False when the
        plan breaks them (the plan is still the one to use).
    problem : AssignmentProblem or None
        The problem solved (or checked against); ``None`` when no client took part.
    capacities : tuple of int
        :math:`k_c` per client.
    fallback : str or None
        What flex had to relax, e.g. ``"soft-bounds"``; ``None`` when nothing.
    message : str
        What happened, in words.

    Equality compares the assignments only, like any mapping.
    """

    round: int
    strategy: str
    client_ids: tuple[Hashable, ...]
    assignments: Mapping[Hashable, tuple[int, ...]]
    result: AssignmentResult
    problem: AssignmentProblem | None
    capacities: tuple[int, ...]
    fallback: str | None = None
    message: str = ""

    def __getitem__(self, client_id: Hashable) -> tuple[int, ...]:
        return self.assignments[client_id]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.assignments)

    def __len__(self) -> int:
        return len(self.assignments)

    @property
    def balanced(self) -> bool:
        """Whether the plan satisfies the round's balance bounds (``result.success``)."""
        return self.result.success

    @property
    def loads(self) -> FloatArray:
        """Clients assigned to each expert this round."""
        e = self.result.x.shape[1] if self.result.x is not None else 0
        out = np.zeros(e)
        for experts in self.assignments.values():
            out[list(experts)] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (client ids as given)."""
        return {
            "round": self.round,
            "strategy": self.strategy,
            "assignments": [[c, list(v)] for c, v in self.assignments.items()],
            "capacities": list(self.capacities),
            "fallback": self.fallback,
            "message": self.message,
            "result": self.result.to_dict(include_assignment=False),
        }

    def to_frame(self) -> pd.DataFrame:
        """The plan as a tidy pandas table (see :func:`flexassign.labels.plan_frame`)."""
        from ..labels import plan_frame

        return plan_frame(self)

    def __repr__(self) -> str:
        return (
            f"Plan(round={self.round}, strategy={self.strategy!r}, clients={len(self)}, "
            f"status={self.result.status.value}, fallback={self.fallback!r})"
        )


def empty_result(num_experts: int, message: str = "no participating clients") -> AssignmentResult:
    """The result of a round without participants."""
    return AssignmentResult(
        status=Status.OPTIMAL,
        x=np.zeros((0, num_experts), dtype=bool),
        objective=0.0,
        bound=0.0,
        gap=0.0,
        loads=np.zeros(num_experts),
        runtime=0.0,
        method="none",
        message=message,
    )


def expert_lists(x: NDArray[np.bool_]) -> list[tuple[int, ...]]:
    """Per row of a 0/1 assignment, the sorted expert ids (one ``nonzero`` for all rows).

    Examples
    --------
    >>> expert_lists(np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool))
    [(0, 2), (), (1,)]
    """
    rows, cols = np.nonzero(x)
    ids = cols.tolist()
    ends = np.cumsum(np.bincount(rows, minlength=x.shape[0])).tolist()
    out, start = [], 0
    for end in ends:
        out.append(tuple(ids[start:end]))
        start = end
    return out
