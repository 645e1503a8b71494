r"""Which parameters of a model are experts, which stay on the client, which are shared.

Framework-neutral: this module imports numpy and flexassign only (no Flower, no
torch), and its functions accept numpy arrays and torch tensors alike (anything that
slices like an array). :mod:`flexassign.integrations.flower` re-exports it; an
NVIDIA FLARE job or a hand-written loop uses it directly.

:class:`ExpertLayout` reads a model's own parameter names (its ``state_dict`` keys):

* a name matching ``local`` (routers, gates) never leaves the client;
* a name matching ``stacked`` holds *every* expert of a layer in one tensor (Mixtral,
  Qwen-MoE, DeepSeek-V3, GPT-OSS, ...: ``mlp.experts.gate_up_proj`` of shape
  ``[E, ...]``; DBRX: ``[E * ffn, d]``). Along ``expert_axis`` it is cut into
  ``num_experts`` equal contiguous blocks, block *e* belonging to expert *e*. Block
  *e* of parameter ``name`` travels as its own array named ``name[e]``
  (:func:`block_name`), of the parameter's shape with ``expert_axis`` cut to one
  block (``[1, ...]`` for ``[E, ...]``; ``[ffn, d]`` for DBRX);
* a name matching ``expert`` belongs to the expert whose id is the pattern's first
  group, so one expert id may span several layers (``blocks.0.experts.3.w`` and
  ``blocks.1.experts.3.w`` are both expert 3);
* every other name is shared by all clients.

Named and stacked experts may be mixed in one model. Patterns are Python regular
expressions applied with :func:`re.search` (anchor them with ``^``/``$``); ``local``
is checked first, then ``stacked``, then ``expert``. The default reproduces the
harness model's naming: ``experts.<e>.*`` are experts, ``router.*`` is local.

The round trip every integration makes, server and client:

* :meth:`ExpertLayout.split` -- ``(shared, {e: {name: array}})``, stacked tensors cut
  into their blocks;
* :meth:`ExpertLayout.select` -- shared plus the given experts only: what a node is
  sent, and what it sends back;
* :meth:`ExpertLayout.merge` -- received arrays written into a full state strictly
  (a name the state lacks, a wrong shape or dtype is a :class:`LayoutError` naming
  it); blocks land in their slice of the stacked tensor, every other block is kept;
* :meth:`ExpertLayout.check_update` -- the server's check of one client's arrays
  against the global model and the client's plan.

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

A stacked model (Mixtral's naming), two experts per tensor:

>>> moe = ExpertLayout(expert=None, local=r"\.mlp\.gate\.",
...                    stacked=r"\.mlp\.experts\.(gate_up|down)_proj$")
>>> state = {"model.embed.weight": np.zeros(2), "model.layers.0.mlp.gate.weight": np.zeros(2),
...          "model.layers.0.mlp.experts.down_proj": np.arange(8.0).reshape(2, 4)}
>>> sent = moe.select(state, [1])
>>> sorted(sent), sent["model.layers.0.mlp.experts.down_proj[1]"]
(['model.embed.weight', 'model.layers.0.mlp.experts.down_proj[1]'], array([[4., 5., 6., 7.]]))
>>> back = moe.merge(state, {"model.layers.0.mlp.experts.down_proj[1]": np.zeros((1, 4))})
>>> back["model.layers.0.mlp.experts.down_proj"]
array([[0., 1., 2., 3.],
       [0., 0., 0., 0.]])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..errors import FlexAssignError
from ._arrays import copy_array as _copy
from ._arrays import dtype_name as _dtype_name
from ._arrays import like as _like
from ._arrays import nbytes
from ._arrays import shape as _shape
from .aggregation import check_arrays

__all__ = [
    "DEFAULT_EXPERT_PATTERN",
    "DEFAULT_LOCAL_PATTERN",
    "ExpertLayout",
    "LayoutError",
    "block_name",
    "nbytes",
]

#: Expert parameters of the harness model: ``experts.<e>.<param>``.
DEFAULT_EXPERT_PATTERN = r"^experts\.(\d+)\."
#: The harness model's per-client router.
DEFAULT_LOCAL_PATTERN = r"^router\."

#: ``name[e]``: block ``e`` of stacked parameter ``name`` (ASCII digits only).
_BLOCK_RE = re.compile(r"^(.+)\[([0-9]+)\]$")

V = TypeVar("V")
Role = int | Literal["local", "shared", "stacked"]


class LayoutError(FlexAssignError, ValueError):
    """A layout pattern is invalid, or a model's parameters do not fit the layout."""


def block_name(name: str, expert: int) -> str:
    """The name under which block ``expert`` of stacked parameter ``name`` travels.

    >>> block_name("model.layers.0.mlp.experts.down_proj", 3)
    'model.layers.0.mlp.experts.down_proj[3]'
    """
    return f"{name}[{int(expert)}]"


@dataclass(frozen=True)
class ExpertLayout:
    """Expert, local and shared parameters of a model, by parameter name.

    Parameters
    ----------
    expert : str or None
        Regular expression; a matching name belongs to the expert whose id is the
        first group (ASCII digits). ``None``: no named experts (``stacked`` only).
    local : str or None
        Regular expression; matching names never leave the client. ``None``: no
        local parameters.
    stacked : str or None
        Regular expression; a matching parameter holds every expert of its layer,
        cut along ``expert_axis`` into ``num_experts`` equal contiguous blocks
        (block *e* is expert *e*). ``None``: no stacked parameters.
    expert_axis : int
        The axis of a stacked parameter that runs over the experts (negative counts
        from the end, as in numpy).
    num_experts : int or None
        Blocks per stacked parameter. ``None``: the length of ``expert_axis`` (one
        row per expert, the ``[E, ...]`` case); set it when the axis holds
        ``E * rows`` (DBRX's ``[E * ffn, d]``).

    Raises
    ------
    LayoutError
        If a pattern does not compile, ``expert`` has no group, neither ``expert``
        nor ``stacked`` is given, or ``expert_axis`` / ``num_experts`` is not an
        integer (``num_experts`` >= 1).
    """

    expert: str | None = DEFAULT_EXPERT_PATTERN
    local: str | None = DEFAULT_LOCAL_PATTERN
    stacked: str | None = None
    expert_axis: int = 0
    num_experts: int | None = None
    _expert_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _local_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _stacked_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("expert", "local", "stacked"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise LayoutError(f"`layout.{key}` must be a str or None; got "
                                  f"{type(value).__name__}")
        if self.expert is None and self.stacked is None:
            raise LayoutError("`layout.expert` and `layout.stacked` are both None; give "
                              "named experts (`expert`) or stacked expert tensors (`stacked`)")
        if isinstance(self.expert_axis, bool) or not isinstance(self.expert_axis, int):
            raise LayoutError(f"`layout.expert_axis` must be an int; got {self.expert_axis!r}")
        if self.num_experts is not None and (
                isinstance(self.num_experts, bool) or not isinstance(self.num_experts, int)
                or self.num_experts < 1):
            raise LayoutError(f"`layout.num_experts` must be an int >= 1 or None; got "
                              f"{self.num_experts!r}")
        try:
            compiled = {key: None if getattr(self, key) is None else re.compile(getattr(self, key))
                        for key in ("expert", "local", "stacked")}
        except re.error as exc:
            raise LayoutError(f"`layout` pattern does not compile: {exc}") from exc
        expert_re = compiled["expert"]
        if expert_re is not None and expert_re.groups < 1:
            raise LayoutError(
                f"`layout.expert` {self.expert!r} needs a group capturing the expert id, "
                r"e.g. r'^experts\.(\d+)\.'"
            )
        object.__setattr__(self, "_expert_re", expert_re)
        object.__setattr__(self, "_local_re", compiled["local"])
        object.__setattr__(self, "_stacked_re", compiled["stacked"])

    # ------------------------------------------------------------------ names

    def role(self, name: str) -> Role:
        """``"local"``, ``"shared"``, ``"stacked"`` or the expert id of ``name``.

        ``"stacked"`` is a whole stacked parameter (all experts); its block
        ``name[e]`` (:func:`block_name`) has role ``e``.

        Raises
        ------
        LayoutError
            If ``name`` matches ``expert`` but the first group is not a non-negative
            integer in ASCII digits.
        """
        if self._local_re is not None and self._local_re.search(name):
            return "local"
        if self._stacked_re is not None:
            m = _BLOCK_RE.match(name)
            if m is not None and self._stacked_re.search(m.group(1)) \
                    and not (self._local_re is not None and self._local_re.search(m.group(1))):
                return int(m.group(2))
            if self._stacked_re.search(name):
                return "stacked"
        if self._expert_re is None:
            return "shared"
        m = self._expert_re.search(name)
        if m is None:
            return "shared"
        gid = m.group(1)
        # str.isdigit() accepts '²' and other digits int() rejects: ASCII only
        if gid is None or not gid.isascii() or not gid.isdigit():
            raise LayoutError(
                f"`layout.expert` matched `{name}` but its first group is {gid!r}, not an "
                "expert id (ASCII digits)"
            )
        try:
            return int(gid)
        except ValueError as exc:  # more digits than int() converts
            raise LayoutError(
                f"`layout.expert` matched `{name[:80]}` but its expert id has {len(gid)} "
                "digits") from exc

    def is_local(self, name: str) -> bool:
        """Whether ``name`` stays on the client."""
        return self.role(name) == "local"

    def public(self, arrays: Mapping[str, V]) -> dict[str, V]:
        """``arrays`` without the local entries (what may leave a client)."""
        return {k: v for k, v in arrays.items() if self.role(k) != "local"}

    def local_part(self, arrays: Mapping[str, V]) -> dict[str, V]:
        """Only the local entries of ``arrays``."""
        return {k: v for k, v in arrays.items() if self.role(k) == "local"}

    def expert_ids(self, names: Iterable[str]) -> list[int]:
        """Sorted ids of the experts among ``names`` (named experts and blocks).

        A whole stacked parameter names no single expert; use :meth:`split` (or
        :meth:`check_model`) to count the experts of a full state.
        """
        return sorted({r for n in names if isinstance(r := self.role(n), int)})

    # ----------------------------------------------------------------- stacked

    def _blocks(self, name: str, value: Any) -> tuple[int, int, int]:
        """``(axis, num_experts, rows per block)`` of stacked parameter ``name``."""
        shape = _shape(value)
        ndim = len(shape)
        if not -ndim <= self.expert_axis < ndim:
            raise LayoutError(
                f"stacked parameter `{name}` of shape {shape} has no axis "
                f"{self.expert_axis} (`layout.expert_axis`)")
        axis = self.expert_axis % ndim
        length = shape[axis]
        num = self.num_experts if self.num_experts is not None else length
        if num < 1 or length % num != 0:
            raise LayoutError(
                f"stacked parameter `{name}` of shape {shape}: axis {axis} has length "
                f"{length}, not divisible into {num} experts (`layout.num_experts`)")
        return axis, num, length // num

    def block(self, name: str, value: Any, expert: int) -> Any:
        """Block ``expert`` of stacked parameter ``name`` (a view of ``value``).

        Raises
        ------
        LayoutError
            If the axis cannot be cut into the experts, or ``expert`` is out of range.
        """
        axis, num, rows = self._blocks(name, value)
        if not 0 <= expert < num:
            raise LayoutError(f"stacked parameter `{name}` holds experts 0..{num - 1}; "
                              f"no block {expert}")
        index = (slice(None),) * axis + (slice(expert * rows, (expert + 1) * rows),)
        return value[index]

    def block_shapes(self, name: str, value: Any) -> tuple[int, tuple[int, ...]]:
        """``(num_experts, shape of one block)`` of stacked parameter ``name``."""
        axis, num, rows = self._blocks(name, value)
        shape = list(_shape(value))
        shape[axis] = rows
        return num, tuple(shape)

    # ------------------------------------------------------------ split / merge

    def split(self, arrays: Mapping[str, V]) -> tuple[dict[str, V], dict[int, dict[str, V]]]:
        """``(shared, {expert id: {name: value}})``; local entries are dropped.

        Named experts keep the model's own names; a stacked parameter ``name``
        contributes block ``name[e]`` (a view) to every expert ``e``. Experts are
        sorted by id.

        Raises
        ------
        LayoutError
            If a stacked parameter cannot be cut into the experts (naming it and its
            shape), or a name matches ``expert`` without a valid id.
        """
        shared: dict[str, V] = {}
        experts: dict[int, dict[str, V]] = {}
        for k, v in arrays.items():
            r = self.role(k)
            if r == "local":
                continue
            if r == "shared":
                shared[k] = v
            elif r == "stacked":
                _, num, _ = self._blocks(k, v)
                for e in range(num):
                    experts.setdefault(e, {})[block_name(k, e)] = self.block(k, v, e)
            else:
                experts.setdefault(int(r), {})[k] = v
        return shared, dict(sorted(experts.items()))

    def select(self, arrays: Mapping[str, V], expert_ids: Iterable[int]) -> dict[str, V]:
        """The shared entries of ``arrays`` plus experts ``expert_ids`` only.

        What a node is sent, and what it sends back: named experts under their names,
        stacked parameters as the blocks ``name[e]`` of the selected experts; local
        entries and other experts are left out.

        Raises
        ------
        LayoutError
            If an id in ``expert_ids`` is not an expert of ``arrays``.
        """
        shared, experts = self.split(arrays)
        out = dict(shared)
        for e in expert_ids:
            if int(e) not in experts:
                raise LayoutError(f"`expert_ids` names expert {e}; the model holds experts "
                                  f"{sorted(experts)}")
            out.update(experts[int(e)])
        return out

    def merge(self, base: Mapping[str, V], arrays: Mapping[str, Any]) -> dict[str, V]:
        """``base`` with ``arrays`` written in, strictly; inputs are not modified.

        Each name in ``arrays`` must be a name of ``base`` (replaced whole) or a block
        ``name[e]`` of a stacked parameter of ``base`` (written into its slice of a
        copy); every other entry and block of ``base`` is kept as it is. Values keep
        ``base``'s type: numpy arrays stay numpy, torch tensors stay torch tensors
        (so ``model.load_state_dict(layout.merge(model.state_dict(), received))``
        loads strictly).

        Parameters
        ----------
        base : mapping of str to array
            A full state (``model.state_dict()``, or the server's global arrays).
        arrays : mapping of str to array
            Received arrays: shared, named-expert and block names.

        Returns
        -------
        dict
            Same names and order as ``base``.

        Raises
        ------
        LayoutError
            Naming the entry: a name ``base`` lacks (and that is no block of one of
            its stacked parameters), a block of an expert the tensor does not hold,
            or a shape or dtype other than ``base``'s.
        """
        out: dict[str, Any] = dict(base)
        copied: set[str] = set()
        for name, value in arrays.items():
            m = _BLOCK_RE.match(name)
            if name in base:
                target, index = name, None
                want_shape, ref = _shape(base[name]), base[name]
            elif m is not None and m.group(1) in base and self.role(m.group(1)) == "stacked":
                target = m.group(1)
                ref = base[target]
                expert = int(m.group(2))
                axis, num, rows = self._blocks(target, ref)
                if expert >= num:
                    raise LayoutError(f"received block `{name}`, but `{target}` holds "
                                      f"experts 0..{num - 1}")
                index = (slice(None),) * axis + (slice(expert * rows, (expert + 1) * rows),)
                want_shape = self.block_shapes(target, ref)[1]
            else:
                raise LayoutError(f"received `{name}`, which the model does not have "
                                  "(neither a parameter nor a block of a stacked parameter)")
            if _shape(value) != want_shape:
                raise LayoutError(f"received `{name}` of shape {_shape(value)}; the model's "
                                  f"is {want_shape}")
            if _dtype_name(value) != _dtype_name(ref):
                raise LayoutError(f"received `{name}` of dtype {_dtype_name(value)}; the "
                                  f"model's is {_dtype_name(ref)}")
            if index is None:
                out[target] = _like(ref, value)
                copied.discard(target)
                continue
            if target not in copied:
                out[target] = _copy(out[target])
                copied.add(target)
            out[target][index] = _like(ref, value)
        return out

    # ------------------------------------------------------------------ checks

    def check_model(self, arrays: Mapping[str, Any], *, num_experts: int | None = None) -> None:
        """Check that ``arrays`` (a model's state) holds experts under this layout.

        Parameters
        ----------
        arrays : mapping of str to array
        num_experts : int, optional
            When given, the expert ids must be exactly ``0 .. num_experts - 1``, and
            every stacked parameter must hold that many blocks.

        Raises
        ------
        LayoutError
            Naming ``layout`` and showing some parameter names, if no parameter is an
            expert or the ids do not match ``num_experts``; naming the parameter and
            its shape if a stacked one does not cut into the experts.
        """
        sample = ", ".join(list(arrays)[:6]) or "(none)"
        ids: set[int] = set()
        for k, v in arrays.items():
            r = self.role(k)
            if r == "stacked":
                _, num, _ = self._blocks(k, v)
                if num_experts is not None and num != num_experts:
                    raise LayoutError(
                        f"stacked parameter `{k}` of shape {_shape(v)} holds {num} experts "
                        f"along axis {self.expert_axis} but the planner plans {num_experts}; "
                        "set `layout.num_experts` if the axis holds several rows per expert")
                ids.update(range(num))
            elif isinstance(r, int):
                ids.add(r)
        if not ids:
            patterns = " or ".join(f"{key} pattern {getattr(self, key)!r}"
                                   for key in ("expert", "stacked") if getattr(self, key))
            raise LayoutError(
                f"`layout` finds 0 experts: no parameter name matches {patterns} "
                f"(names: {sample}{', ...' if len(arrays) > 6 else ''}); "
                "pass ExpertLayout(expert=..., stacked=..., local=...) for your "
                "model's naming"
            )
        if num_experts is not None and sorted(ids) != list(range(num_experts)):
            raise LayoutError(
                f"`layout` finds experts {sorted(ids)} but the planner plans {num_experts} "
                f"experts (ids 0..{num_experts - 1})"
            )

    def check_update(
        self,
        arrays: Mapping[str, Any],
        global_arrays: Mapping[str, Any],
        assigned: Iterable[int],
    ) -> list[int]:
        """Check one client's returned arrays against the global model and its plan.

        The arrays must hold every shared parameter and, for each expert they return,
        all of that expert's parameters and blocks, for ``assigned`` experts only,
        under the names :meth:`select` uses, with the global shapes and dtypes and
        finite values; no local parameter.

        Returns
        -------
        list of int
            The experts the arrays return.

        Raises
        ------
        LayoutError or flexassign.integrations.aggregation.AggregationError
            Saying what is wrong (a name with an invalid expert id, a local
            parameter, an expert not assigned, a missing, extra, misshapen, wrongly
            typed or non-finite array).
        """
        allowed = {int(e) for e in assigned}
        for name in arrays:
            if self.is_local(name):
                raise LayoutError(f"reply carries local parameter `{name}`")
        returned = self.expert_ids(arrays)
        extra = [e for e in returned if e not in allowed]
        if extra:
            names = [n for n in arrays if self.role(n) in extra]
            raise LayoutError(f"reply carries experts {extra} the node was not assigned "
                              f"(`{names[0]}`{', ...' if len(names) > 1 else ''})")
        shared, experts = self.split(global_arrays)
        reference: dict[str, Any] = dict(shared)
        for e in returned:
            if e not in experts:  # pragma: no cover - assigned experts exist
                raise LayoutError(f"reply carries expert {e}, which the model lacks")
            reference.update(experts[e])
        check_arrays(arrays, reference, name="arrays")
        return returned
