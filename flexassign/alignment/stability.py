r"""Assignment stability: each client's last experts, the stickiness bonus, and churn.

A client's *participation* is a round in which it reported training at least one
expert. Between two consecutive participations with expert sets :math:`A` (before)
and :math:`A'` (after), the **churn** is the share of its experts that changed,

.. math::

    \mathrm{churn} = 1 - \frac{|A \cap A'|}{|A'|} \in [0, 1]

(the FL harness's ``assignment_churn``). :class:`StabilityTracker` records it per
round (the round in which :math:`A'` was reported) and overall, and turns the last
participation's experts into the **stickiness bonus** :math:`\sigma\,[e \in A_c]`
that the planner adds to the scores (``PlannerConfig.stickiness``): a switching cost,
so that among experts of near-equal score a client keeps the ones it trained.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import has_keys, is_int, is_real
from ..errors import InvalidProblemError

__all__ = ["StabilityTracker", "churn_share"]

FloatArray = NDArray[np.float64]


def churn_share(before: Iterable[int], after: Iterable[int]) -> float:
    """:math:`1 - |A \\cap A'| / |A'|` (NaN when ``after`` is empty).

    Examples
    --------
    >>> churn_share([0, 1], [1, 2]), churn_share([0, 1], [0, 1])
    (0.5, 0.0)
    """
    a, b = set(before), set(after)
    return 1.0 - len(a & b) / len(b) if b else math.nan


class StabilityTracker:
    """Each client's experts at its last participation, and the churn history.

    Examples
    --------
    >>> s = StabilityTracker()
    >>> s.record("a", (0, 1), round_=0), s.record("a", (1, 2), round_=1)
    (None, 0.5)
    >>> s.churn(), s.churn_by_round(), s.last("a")
    (0.5, {1: 0.5}, (1, 2))
    """

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[int, ...]] = {}
        self._sums: dict[int, list[float]] = {}  # round -> [sum of churn, transitions]

    def last(self, client_id: Hashable) -> tuple[int, ...]:
        """The experts of the client's last participation (``()`` if none)."""
        return self._last.get(client_id, ())

    def record(self, client_id: Hashable, experts: Sequence[int], *, round_: int) -> float | None:
        """Record a participation; returns its churn (``None`` for a first one).

        An empty ``experts`` (nothing trained) is not a participation: ignored.
        """
        new = tuple(sorted(int(e) for e in experts))
        if not new:
            return None
        prev = self._last.get(client_id)
        self._last[client_id] = new
        if prev is None:
            return None
        value = churn_share(prev, new)
        acc = self._sums.setdefault(int(round_), [0.0, 0])
        acc[0] += value
        acc[1] += 1
        return value

    def forget(self, client_id: Hashable) -> None:
        """Drop the client's last experts (its past churn stays in the history)."""
        self._last.pop(client_id, None)

    def bonus(self, client_ids: Sequence[Hashable], num_experts: int, weight: float) -> FloatArray:
        r""":math:`\sigma\,[e \in A_c]`, shape (len(ids), E): the stickiness bonus."""
        out = np.zeros((len(client_ids), num_experts))
        if weight:
            for i, c in enumerate(client_ids):
                last = self._last.get(c)
                if last:
                    out[i, list(last)] = weight
        return out

    def churn(self, round_: int | None = None) -> float:
        """Mean churn over every recorded transition, or those of round ``round_``.

        NaN when there is none (no client has participated twice).
        """
        if round_ is None:
            total = sum(v[0] for v in self._sums.values())
            count = sum(v[1] for v in self._sums.values())
        else:
            total, count = self._sums.get(int(round_), [0.0, 0])
        return total / count if count else math.nan

    def churn_by_round(self) -> dict[int, float]:
        """``{round: mean churn of its transitions}`` for rounds with any transition."""
        return {r: v[0] / v[1] for r, v in sorted(self._sums.items()) if v[1]}

    # ----------------------------------------------------------------- state
    def to_dict(self, id_out: Any) -> dict[str, Any]:
        """JSON view: ``last`` as ``[[id, experts], ...]``, ``churn`` as
        ``[[round, sum, transitions], ...]`` (``id_out`` converts client ids)."""
        return {
            "last": [[id_out(c), list(e)] for c, e in self._last.items()],
            "churn": [[r, v[0], v[1]] for r, v in sorted(self._sums.items())],
        }

    @classmethod
    def from_dict(
        cls, data: Any, *, id_in: Any, num_experts: int, rounds: int
    ) -> StabilityTracker:
        """Rebuild from :meth:`to_dict`, checking every entry (errors name the field).

        Expert ids must be distinct and below ``num_experts``; churn rounds below
        ``rounds`` and distinct; sums in ``[0, transitions]``.
        """
        if not has_keys(data, ("last", "churn")):
            raise InvalidProblemError(
                "`state.stability` must be an object with keys last, churn"
            )
        out = cls()
        last, churn = data["last"], data["churn"]
        if not isinstance(last, list):
            raise InvalidProblemError("`state.stability.last` must be a list")
        for row in last:
            ok = isinstance(row, list) and len(row) == 2 and isinstance(row[1], list)
            experts = row[1] if ok else []
            ok = ok and bool(experts) and all(
                is_int(e) and 0 <= e < num_experts for e in experts
            ) and len(set(experts)) == len(experts)
            if not ok:
                raise InvalidProblemError(
                    "`state.stability.last` entries must be [client id, [distinct expert "
                    f"ids in 0..{num_experts - 1}]]; got {row!r}"
                )
            cid = id_in(row[0])
            if cid in out._last:
                raise InvalidProblemError(f"`state.stability.last` lists client {cid!r} twice")
            out._last[cid] = tuple(sorted(int(e) for e in experts))
        if not isinstance(churn, list):
            raise InvalidProblemError("`state.stability.churn` must be a list")
        for row in churn:
            ok = (
                isinstance(row, list)
                and len(row) == 3
                and is_int(row[0])
                and 0 <= row[0] < max(rounds, 1)
                and is_int(row[2])
                and 1 <= row[2] <= 2**53
                and is_real(row[1])
                and 0 <= row[1] <= row[2]
            )
            if not ok or int(row[0]) in out._sums:
                raise InvalidProblemError(
                    "`state.stability.churn` entries must be [round < state.round (distinct), "
                    f"sum in [0, transitions], transitions >= 1]; got {row!r}"
                )
            out._sums[int(row[0])] = [float(row[1]), int(row[2])]
        return out
