"""The planner's client registry: declared capacities, profiles and dropout counts.

A client's :math:`k_c` for the next round is, in order: its declared capacity (capped
at :math:`E`), else what :func:`~.capacity.capacity_limits` derives from its profile,
else the configured ``default_capacity``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .._validation import check_int, is_int
from ..errors import InvalidProblemError, ProblemTypeError
from .capacity import CapacityLimits, ClientProfile, capacity_limits
from .config import PlannerConfig

__all__ = ["ClientRegistry", "check_id", "check_ids", "id_from_json", "id_to_json"]

_LOG = logging.getLogger(__name__)


def _saveable(value: Any) -> bool:
    """A ``str`` or an integer: the ids a state file stores (:func:`id_to_json`)."""
    return isinstance(value, str) or is_int(value)


def check_id(client_id: Any, name: str = "client_id") -> Hashable:
    """``client_id`` if it is a ``str`` or an integer (what a state file stores), else an
    error naming ``name``."""
    try:
        hash(client_id)
    except TypeError:
        raise ProblemTypeError(
            f"`{name}` must be hashable; got {type(client_id).__name__}"
        ) from None
    if not _saveable(client_id):
        raise ProblemTypeError(
            f"`{name}` must be a str or an integer (what a planner state file stores); "
            f"got {type(client_id).__name__} {client_id!r}"
        )
    return client_id


def check_ids(client_ids: Iterable[Hashable]) -> list[Hashable]:
    """Distinct client ids (each a ``str`` or an integer, what a state file stores) as a list."""
    if isinstance(client_ids, str | bytes) or not isinstance(client_ids, Iterable):
        raise ProblemTypeError(
            f"`client_ids` must be an iterable of client ids; got {type(client_ids).__name__}"
        )
    ids = list(client_ids)
    try:
        distinct = len(set(ids)) == len(ids)
    except TypeError:
        unhashable = next(c for c in ids if not _hashable(c))
        raise ProblemTypeError(
            f"`client_ids` must hold hashable ids; got {type(unhashable).__name__}"
        ) from None
    other = [c for c in ids if not _saveable(c)]
    if other:
        raise ProblemTypeError(
            "`client_ids` must hold str or integer ids (what a planner state file "
            f"stores); got {type(other[0]).__name__} {other[0]!r}"
        )
    if not distinct:
        seen: set[Hashable] = set()
        for c in ids:
            if c in seen:
                raise InvalidProblemError(f"`client_ids` lists {c!r} more than once")
            seen.add(c)
    return ids


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def id_to_json(client_id: Hashable) -> str | int:
    """A client id as saved in state files (``str`` or ``int`` only)."""
    if isinstance(client_id, str):
        return client_id
    if is_int(client_id):
        return int(client_id)  # type: ignore[call-overload]
    raise InvalidProblemError(
        f"`client_id` {client_id!r} of type {type(client_id).__name__} cannot be saved; "
        "only str and int client ids are supported by the JSON state file"
    )


def id_from_json(where: str, value: Any) -> Hashable:
    """A client id read from a state file, or an error naming ``where``."""
    if isinstance(value, str) or (is_int(value) and isinstance(value, int)):
        return value
    raise InvalidProblemError(
        f"`{where}` holds a client id of type {type(value).__name__}; ids are str or int"
    )


class ClientRegistry:
    """Capacities, profiles and dropout counts of the clients a planner knows."""

    def __init__(self) -> None:
        self.capacity: dict[Hashable, int] = {}
        self.profiles: dict[Hashable, ClientProfile] = {}
        self.dropouts: dict[Hashable, int] = {}

    def register(
        self,
        client_id: Hashable,
        profile: ClientProfile | None = None,
        *,
        device_class: str | None = None,
        capacity: int | None = None,
    ) -> None:
        """Declare a profile (or a preset ``device_class``) and/or a capacity."""
        check_id(client_id)
        if profile is not None and device_class is not None:
            raise InvalidProblemError("give `profile` or `device_class`, not both")
        if device_class is not None:
            profile = ClientProfile.preset(device_class)
        if profile is not None and not isinstance(profile, ClientProfile):
            raise ProblemTypeError(
                f"`profile` must be a ClientProfile; got {type(profile).__name__}"
            )
        k = None if capacity is None else check_int("capacity", capacity, lo=0)
        if profile is not None:
            self.profiles[client_id] = profile
        if k is not None:
            self.capacity[client_id] = k

    def set_capacity(self, client_id: Hashable, capacity: int | None) -> None:
        """Fix a client's :math:`k_c`; ``None`` clears it."""
        check_id(client_id)
        if capacity is None:
            self.capacity.pop(client_id, None)
        else:
            self.capacity[client_id] = check_int("capacity", capacity, lo=0)

    def limits(self, client_id: Hashable, config: PlannerConfig) -> CapacityLimits:
        """:math:`k_c` and memory budget for the next round."""
        e = config.num_experts
        prof = self.profiles.get(client_id)
        lim = None
        if prof is not None:
            lim = capacity_limits(prof, config.cost, config.deadline)
        declared = self.capacity.get(client_id)
        if declared is not None:
            budget = None if lim is None else lim.memory_budget
            return CapacityLimits(min(declared, e), budget, math.nan, "declared")
        if lim is not None:
            return lim
        return CapacityLimits(min(config.default_capacity, e), None, math.nan, "default")

    def forget(self, client_id: Hashable) -> None:
        self.capacity.pop(client_id, None)
        self.profiles.pop(client_id, None)
        self.dropouts.pop(client_id, None)

    def count_dropouts(self, client_ids: Iterable[Hashable]) -> None:
        for c in client_ids:
            self.dropouts[c] = self.dropouts.get(c, 0) + 1
            _LOG.info("client %r sent no feedback this round (dropout %d)", c, self.dropouts[c])

    # ----------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        return {
            "capacities": [[id_to_json(c), k] for c, k in self.capacity.items()],
            "profiles": [[id_to_json(c), p.to_dict()] for c, p in self.profiles.items()],
            "dropouts": [[id_to_json(c), n] for c, n in self.dropouts.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, rounds: int) -> ClientRegistry:
        """Rebuild from :meth:`to_dict`; every entry is checked (errors name the field).

        ``rounds`` (rounds planned so far) bounds the dropout counts.
        """
        reg = cls()
        for cid, k in _pairs("state.capacities", data["capacities"]):
            reg.capacity[cid] = check_int(
                f"state.capacities[{cid!r}]", k, lo=0, type_error=InvalidProblemError
            )
        for cid, p in _pairs("state.profiles", data["profiles"]):
            if not isinstance(p, Mapping):
                raise InvalidProblemError(f"`state.profiles[{cid!r}]` must be an object")
            try:
                reg.profiles[cid] = ClientProfile(**p)
            except (InvalidProblemError, ProblemTypeError) as exc:
                raise InvalidProblemError(f"`state.profiles[{cid!r}]`: {exc}") from None
            except TypeError as exc:
                raise InvalidProblemError(
                    f"`state.profiles[{cid!r}]` has wrong fields: {exc}"
                ) from None
        for cid, n in _pairs("state.dropouts", data["dropouts"]):
            reg.dropouts[cid] = check_int(
                f"state.dropouts[{cid!r}]", n, lo=0, hi=rounds, type_error=InvalidProblemError
            )
        return reg


def _pairs(where: str, value: Any) -> list[tuple[Hashable, Any]]:
    """``[[id, value], ...]`` with valid, distinct ids."""
    if not isinstance(value, list):
        raise InvalidProblemError(f"`{where}` must be a list of [client id, value] pairs")
    out: list[tuple[Hashable, Any]] = []
    seen: set[Hashable] = set()
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise InvalidProblemError(f"`{where}` must hold [client id, value] pairs; got {item!r}")
        cid = id_from_json(where, item[0])
        if cid in seen:
            raise InvalidProblemError(f"`{where}` lists client {cid!r} more than once")
        seen.add(cid)
        out.append((cid, item[1]))
    return out
