"""The open round: who was assigned what, who reported, and the loads reported so far."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import is_int, is_real
from ..errors import InvalidProblemError, ProblemTypeError
from .registry import check_ids, id_from_json, id_to_json

__all__ = ["OpenRound", "imposed_matrix"]

FloatArray = NDArray[np.float64]


class OpenRound:
    """Bookkeeping of the round between ``plan_round`` and the next one.

    Loads are kept as Python lists (a report touches one or two experts; numpy's
    per-call overhead would dominate) and handed out as arrays.
    """

    __slots__ = ("_clients", "_samples", "assignments", "reported")

    def __init__(self, assignments: Mapping[Hashable, tuple[int, ...]], num_experts: int) -> None:
        self.assignments: dict[Hashable, tuple[int, ...]] = dict(assignments)
        self.reported: set[Hashable] = set()
        self._clients = [0.0] * num_experts
        self._samples = [0.0] * num_experts

    @property
    def client_loads(self) -> FloatArray:
        """Clients that reported training each expert so far."""
        return np.array(self._clients)

    @property
    def sample_loads(self) -> FloatArray:
        """Samples reported per expert so far."""
        return np.array(self._samples)

    def pending(self) -> tuple[Hashable, ...]:
        return tuple(c for c in self.assignments if c not in self.reported)

    def record(self, client_id: Hashable, experts: Sequence[int], counts: Sequence[int]) -> None:
        """Count a report (the caller has checked it)."""
        clients, samples = self._clients, self._samples
        for j, n in zip(experts, counts, strict=True):
            clients[j] += 1.0
            samples[j] += n
        self.reported.add(client_id)

    def drop(self, client_id: Hashable) -> None:
        """Forget a client's assignment (it left the federation)."""
        self.assignments.pop(client_id, None)
        self.reported.discard(client_id)

    # ----------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        return {
            "assignments": [[id_to_json(c), list(v)] for c, v in self.assignments.items()],
            "reported": [id_to_json(c) for c in self.assignments if c in self.reported],
            "client_loads": list(self._clients),
            "sample_loads": list(self._samples),
        }

    @classmethod
    def from_dict(cls, data: Any, num_experts: int) -> OpenRound:
        """Rebuild from :meth:`to_dict`, checking every entry and invariant."""
        where = "state.open_round"
        if not isinstance(data, Mapping):
            raise InvalidProblemError(f"`{where}` must be an object or null")
        e = num_experts
        raw = data["assignments"]
        if not isinstance(raw, list):
            raise InvalidProblemError(f"`{where}.assignments` must be a list")
        assignments: dict[Hashable, tuple[int, ...]] = {}
        for item in raw:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
                raise InvalidProblemError(
                    f"`{where}.assignments` must hold [client id, [expert ids]] pairs; got {item!r}"
                )
            cid = id_from_json(f"{where}.assignments", item[0])
            ids = item[1]
            if cid in assignments:
                raise InvalidProblemError(f"`{where}.assignments` lists {cid!r} twice")
            if not all(is_int(j) and 0 <= j < e for j in ids) or len(set(ids)) != len(ids):
                raise InvalidProblemError(
                    f"`{where}.assignments[{cid!r}]` must hold distinct expert ids in "
                    f"0..{e - 1}; got {ids!r}"
                )
            assignments[cid] = tuple(int(j) for j in ids)
        out = cls(assignments, e)
        reported = data["reported"]
        if not isinstance(reported, list):
            raise InvalidProblemError(f"`{where}.reported` must be a list")
        for c in reported:
            cid = id_from_json(f"{where}.reported", c)
            if cid not in assignments or cid in out.reported:
                raise InvalidProblemError(
                    f"`{where}.reported` lists {cid!r}, which is not an open assignment "
                    "or is listed twice"
                )
            out.reported.add(cid)
        out._clients = _loads(f"{where}.client_loads", data["client_loads"], e)
        out._samples = _loads(f"{where}.sample_loads", data["sample_loads"], e)
        most = [0] * e
        for c in out.reported:
            for j in assignments[c]:
                most[j] += 1
        for j in range(e):
            if out._clients[j] != round(out._clients[j]) or out._clients[j] > most[j]:
                raise InvalidProblemError(
                    f"`{where}.client_loads[{j}]` is {out._clients[j]}, but only {most[j]} "
                    "reported clients were assigned that expert"
                )
            if out._clients[j] == 0 and out._samples[j] != 0:
                raise InvalidProblemError(
                    f"`{where}.sample_loads[{j}]` is {out._samples[j]} for an expert "
                    "no reported client trained"
                )
        return out


def _loads(where: str, value: Any, num_experts: int) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) != num_experts
        or not all(is_real(v) and 0 <= v <= 2**53 and v == round(v) for v in value)
    ):
        raise InvalidProblemError(
            f"`{where}` must hold {num_experts} non-negative integers (counts); got {value!r}"
        )
    return [float(v) for v in value]


def imposed_matrix(
    assignments: Any, num_experts: int
) -> tuple[list[Hashable], NDArray[np.bool_]]:
    """Check ``{client id: expert ids}`` given to ``impose_round``; ids and 0/1 matrix."""
    if not isinstance(assignments, Mapping):
        raise ProblemTypeError(
            f"`assignments` must be a mapping of client id to expert ids; "
            f"got {type(assignments).__name__}"
        )
    ids = check_ids(list(assignments))
    e = num_experts
    x = np.zeros((len(ids), e), dtype=bool)
    for i, c in enumerate(ids):
        raw = assignments[c]
        if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
            raise ProblemTypeError(f"`assignments[{c!r}]` must be a sequence of expert ids")
        for j in raw:
            if not is_int(j) or not 0 <= j < e:
                raise InvalidProblemError(
                    f"`assignments[{c!r}]` holds {j!r}, not an expert id in 0..{e - 1}"
                )
            x[i, int(j)] = True
    return ids, x
