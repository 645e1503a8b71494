r"""Which parameters of a model are experts, which stay on the client, which are shared.

:class:`ExpertLayout` reads a model's own parameter names (its ``state_dict`` keys):

* a name matching ``local`` (routers, gates) never leaves the client;
* a name matching ``expert`` belongs to the expert whose id is the pattern's first
  group, so one expert id may span several layers
  (``blocks.0.experts.3.w`` and ``blocks.1.experts.3.w`` are both expert 3);
* every other name is shared by all clients.

Patterns are Python regular expressions applied with :func:`re.search` (anchor them
with ``^`` to match from the start of the name). ``local`` is checked first.
The default reproduces the harness model's naming: ``experts.<e>.*`` are experts,
``router.*`` is local.

Examples
--------
>>> import numpy as np
>>> layout = ExpertLayout(expert=r"^blocks\.\d+\.experts\.(\d+)\.", local=r"\.gate\.")
>>> names = ["embed.weight", "blocks.0.gate.weight", "blocks.0.experts.1.w",
...          "blocks.1.experts.1.w", "blocks.1.experts.0.w"]
>>> [layout.role(n) for n in names]
['shared', 'local', 1, 1, 0]
>>> shared, experts = layout.split({n: np.zeros(1) for n in names})
>>> sorted(shared)
['embed.weight']
>>> {e: sorted(p) for e, p in experts.items()}  # doctest: +NORMALIZE_WHITESPACE
{0: ['blocks.1.experts.0.w'],
 1: ['blocks.0.experts.1.w', 'blocks.1.experts.1.w']}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ...errors import FlexAssignError

__all__ = ["DEFAULT_EXPERT_PATTERN", "DEFAULT_LOCAL_PATTERN", "ExpertLayout", "LayoutError"]

#: Expert parameters of the harness model: ``experts.<e>.<param>``.
DEFAULT_EXPERT_PATTERN = r"^experts\.(\d+)\."
#: The harness model's per-client router.
DEFAULT_LOCAL_PATTERN = r"^router\."

V = TypeVar("V")


class LayoutError(FlexAssignError, ValueError):
    """A layout pattern is invalid, or a model's parameters do not fit the layout."""


@dataclass(frozen=True)
class ExpertLayout:
    """Expert, local and shared parameters of a model, by parameter name.

    Parameters
    ----------
    expert : str
        Regular expression; a matching name belongs to the expert whose id is the
        first group (digits).
    local : str or None
        Regular expression; matching names never leave the client. ``None``: no
        local parameters.

    Raises
    ------
    LayoutError
        If a pattern does not compile or ``expert`` has no group.
    """

    expert: str = DEFAULT_EXPERT_PATTERN
    local: str | None = DEFAULT_LOCAL_PATTERN
    _expert_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _local_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expert, str):
            raise LayoutError(f"`layout.expert` must be a str; got {type(self.expert).__name__}")
        if self.local is not None and not isinstance(self.local, str):
            raise LayoutError(f"`layout.local` must be a str or None; got "
                              f"{type(self.local).__name__}")
        try:
            expert_re = re.compile(self.expert)
            local_re = None if self.local is None else re.compile(self.local)
        except re.error as exc:
            raise LayoutError(f"`layout` pattern does not compile: {exc}") from exc
        if expert_re.groups < 1:
            raise LayoutError(
                f"`layout.expert` {self.expert!r} needs a group capturing the expert id, "
                r"e.g. r'^experts\.(\d+)\.'"
            )
        object.__setattr__(self, "_expert_re", expert_re)
        object.__setattr__(self, "_local_re", local_re)

    def role(self, name: str) -> int | Literal["local", "shared"]:
        """``"local"``, ``"shared"`` or the expert id of parameter ``name``.

        Raises
        ------
        LayoutError
            If ``name`` matches ``expert`` but the first group is not a non-negative
            integer.
        """
        if self._local_re is not None and self._local_re.search(name):
            return "local"
        m = self._expert_re.search(name)
        if m is None:
            return "shared"
        gid = m.group(1)
        if gid is None or not gid.isdigit():
            raise LayoutError(
                f"`layout.expert` matched `{name}` but its first group is {gid!r}, not an "
                "expert id (digits)"
            )
        return int(gid)

    def is_local(self, name: str) -> bool:
        """Whether ``name`` stays on the client."""
        return self.role(name) == "local"

    def public(self, arrays: Mapping[str, V]) -> dict[str, V]:
        """``arrays`` without the local entries (what may leave a client)."""
        return {k: v for k, v in arrays.items() if self.role(k) != "local"}

    def local_part(self, arrays: Mapping[str, V]) -> dict[str, V]:
        """Only the local entries of ``arrays``."""
        return {k: v for k, v in arrays.items() if self.role(k) == "local"}

    def split(self, arrays: Mapping[str, V]) -> tuple[dict[str, V], dict[int, dict[str, V]]]:
        """``(shared, {expert id: {name: value}})``; local entries are dropped.

        Names keep the model's own spelling; experts are sorted by id.
        """
        shared: dict[str, V] = {}
        experts: dict[int, dict[str, V]] = {}
        for k, v in arrays.items():
            r = self.role(k)
            if r == "local":
                continue
            if r == "shared":
                shared[k] = v
            else:
                experts.setdefault(int(r), {})[k] = v
        return shared, dict(sorted(experts.items()))

    def expert_ids(self, names: Iterable[str]) -> list[int]:
        """Sorted ids of the experts among ``names``."""
        return sorted({r for n in names if isinstance(r := self.role(n), int)})

    def check_model(self, arrays: Mapping[str, Any], *, num_experts: int | None = None) -> None:
        """Check that ``arrays`` (a model's state) holds experts under this layout.

        Parameters
        ----------
        arrays : mapping of str to array
        num_experts : int, optional
            When given, the expert ids must be exactly ``0 .. num_experts - 1``.

        Raises
        ------
        LayoutError
            Naming ``layout`` and showing some parameter names, if no parameter is an
            expert or the ids do not match ``num_experts``.
        """
        ids = self.expert_ids(arrays)
        sample = ", ".join(list(arrays)[:6]) or "(none)"
        if not ids:
            raise LayoutError(
                f"`layout` finds 0 experts: no parameter name matches expert pattern "
                f"{self.expert!r} (names: {sample}{', ...' if len(arrays) > 6 else ''}); "
                "pass FlexMoEStrategy(layout=ExpertLayout(expert=..., local=...)) for your "
                "model's naming"
            )
        if num_experts is not None and ids != list(range(num_experts)):
            raise LayoutError(
                f"`layout` finds experts {ids} but the planner plans {num_experts} experts "
                f"(ids 0..{num_experts - 1})"
            )
