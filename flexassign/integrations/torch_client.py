r"""Client-side helpers for a PyTorch MoE model: strict loading, held-expert routing, feedback.

The two jobs every FLEX-MoE client writes for its model, whatever the framework
(Flower, NVIDIA FLARE, a hand-written loop):

* :func:`load_received` -- write the arrays a node received (shared parameters plus
  the blocks of its experts, :meth:`ExpertLayout.select
  <flexassign.integrations.layout.ExpertLayout.select>`) and its local router state
  into the full model, **strictly**: a received name the model lacks, a wrong shape or
  dtype is a :class:`~flexassign.integrations.layout.LayoutError` naming it (never
  ``load_state_dict(strict=False)``, which silently drops what it does not know).
  :func:`trained_arrays` is the way back: shared plus the held experts, as numpy.
* :func:`restrict_routers` -- forward hooks that keep every router on the node's held
  experts (the logits of the other experts become :math:`-\infty` before top-k) and
  count the tokens each expert receives; :func:`expert_feedback` turns one pass's
  routing and per-token loss into the per-expert ``counts``, ``loss`` (and
  ``accuracy``) of a :class:`~flexassign.alignment.Feedback`.

Two kinds of router are recognised, by what the hooked module returns:

``(logits, scores, indices)``
    a top-k router module of the Mixtral kind (``MixtralTopKRouter``,
    ``Qwen2MoeTopKRouter``, ``Qwen3MoeTopKRouter``, ``OlmoeTopKRouter`` in
    ``transformers`` 5.x: ``model.layers.<i>.mlp.gate``). The hook re-derives the
    routing from the masked logits the way those modules do (softmax in float32,
    top-k, renormalised unless the module's ``norm_topk_prob`` is false); with every
    expert held the output is unchanged. If a node holds fewer experts than ``k``,
    the spare slots get weight 0 and point at the token's first choice, so no other
    expert is computed.
a logits tensor ``[..., num_experts]``
    a plain gate (an ``nn.Linear``: DBRX's ``router.layer``, SwitchTransformers'
    ``router.classifier``, the Flower example's gates): its output is masked, the
    model's own top-k then picks held experts only; pass ``top_k`` for the counts.

This module imports torch lazily (inside the functions); importing it needs numpy and
flexassign only. The server never imports it.

Examples
--------
>>> import torch
>>> from flexassign.integrations.layout import ExpertLayout
>>> gate = torch.nn.Linear(3, 4, bias=False)
>>> model = torch.nn.ModuleDict({"gate": gate})
>>> with restrict_routers(model, [1, 3], num_experts=4, routers=r"^gate$", top_k=2) as r:
...     logits = model["gate"](torch.ones(5, 3))
>>> bool(torch.isinf(logits[:, [0, 2]]).all()), r.counts.tolist()
(True, [0, 5, 0, 5])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .layout import ExpertLayout, LayoutError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_ROUTER_PATTERN",
    "RouterRestriction",
    "expert_feedback",
    "load_received",
    "restrict_routers",
    "trained_arrays",
]

#: Router modules of the Mixtral / Qwen-MoE / OLMoE families in transformers 5.x.
DEFAULT_ROUTER_PATTERN = r"\.mlp\.gate$"


def load_received(
    model: torch.nn.Module,
    arrays: Mapping[str, Any],
    *,
    layout: ExpertLayout,
    local: Mapping[str, Any] | None = None,
) -> None:
    """Load a node's received arrays (and its local state) into ``model``, strictly.

    ``model.load_state_dict(layout.merge(model.state_dict(), {**arrays, **local}),
    strict=True)``: shared parameters and named experts are replaced, blocks ``name[e]``
    are written into their slice of the stacked tensor, every other parameter (the
    experts the node does not hold) keeps its value.

    Parameters
    ----------
    model : torch.nn.Module
    arrays : mapping of str to array
        What the node received (numpy arrays or tensors), under the names
        :meth:`ExpertLayout.select` gives them.
    layout : ExpertLayout
    local : mapping of str to array, optional
        The node's own router / gate state (``None`` in its first round).

    Raises
    ------
    LayoutError
        Naming the entry, if the model lacks a received name (and it is no block of
        one of its stacked parameters), or its shape or dtype differs.
    """
    if not isinstance(layout, ExpertLayout):
        raise LayoutError(f"`layout` must be an ExpertLayout; got {type(layout).__name__}")
    received = dict(arrays)
    if local:
        bad = [k for k in local if not layout.is_local(k)]
        if bad:
            raise LayoutError(f"`local` holds `{bad[0]}`, which the layout does not mark local")
        received.update(local)
    merged = layout.merge(model.state_dict(), received)
    model.load_state_dict(merged, strict=True)


def trained_arrays(
    model: torch.nn.Module, expert_ids: Iterable[int], *, layout: ExpertLayout
) -> dict[str, np.ndarray]:
    """What a node sends back: shared parameters plus experts ``expert_ids``, as numpy.

    The same names :meth:`ExpertLayout.select` sends (blocks ``name[e]`` of stacked
    tensors); no local parameter, no other expert.
    """
    sel = layout.select(model.state_dict(), [int(e) for e in expert_ids])
    return {k: np.array(v.detach().cpu().numpy(), copy=True) for k, v in sel.items()}


class RouterRestriction:
    """Forward hooks keeping a model's routers on held experts; counts tokens per expert.

    Built by :func:`restrict_routers`; use it as a context manager or call
    :meth:`remove`.

    Attributes
    ----------
    held : tuple of int
    num_experts : int
    modules : list of str
        Names of the hooked router modules.
    counts : numpy.ndarray
        ``[num_experts]`` int64: token routings to each expert (slots with weight > 0),
        summed over routers and forward passes since construction or
        :meth:`reset_counts`.
    """

    def __init__(self, model: Any, held: Sequence[int], *, num_experts: int, routers: str,
                 top_k: int | None) -> None:
        import torch

        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
            raise LayoutError(f"`num_experts` must be an int >= 1; got {num_experts!r}")
        ids = [int(e) for e in held]
        if not ids or any(not 0 <= e < num_experts for e in ids):
            raise LayoutError(f"`held` must name experts in 0..{num_experts - 1}; got {ids}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise LayoutError(f"`top_k` must be an int >= 1 or None; got {top_k!r}")
        try:
            pattern = re.compile(routers)
        except (re.error, TypeError) as exc:
            raise LayoutError(f"`routers` is not a regular expression: {exc}") from exc
        self.held = tuple(sorted(set(ids)))
        self.num_experts = num_experts
        self.top_k = top_k
        self.counts = np.zeros(num_experts, dtype=np.int64)
        self._mask = torch.zeros(num_experts, dtype=torch.bool)
        self._mask[list(self.held)] = True
        self._hits: list[torch.Tensor] = []
        self.modules = [n for n, _ in model.named_modules() if pattern.search(n)]
        if not self.modules:
            names = [n for n, _ in model.named_modules() if n][:8]
            raise LayoutError(f"`routers` pattern {routers!r} matches no module of the model "
                              f"(modules: {', '.join(names)}, ...)")
        mods = dict(model.named_modules())
        self._handles = [mods[n].register_forward_hook(self._hook) for n in self.modules]

    # ------------------------------------------------------------------ hooks

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        import torch

        if isinstance(output, tuple) and len(output) == 3:
            return self._topk_router(module, output)
        if isinstance(output, torch.Tensor):
            return self._gate(module, output)
        raise LayoutError(f"router module {type(module).__name__} returned "
                          f"{type(output).__name__}; expected a logits tensor or "
                          "(logits, scores, indices)")

    def _check_width(self, logits: torch.Tensor, module: Any) -> torch.Tensor:
        if logits.shape[-1] != self.num_experts:
            raise LayoutError(f"router {type(module).__name__} gives {logits.shape[-1]} logits "
                              f"per token; `num_experts` is {self.num_experts}")
        return self._mask.to(logits.device)

    def _topk_router(self, module: Any, output: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        import torch

        logits, scores, indices = output
        mask = self._check_width(logits, module)
        masked = logits.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(masked.float(), dim=-1)
        top, idx = torch.topk(probs, indices.shape[-1], dim=-1)
        if getattr(module, "norm_topk_prob", True):
            top = top / top.sum(dim=-1, keepdim=True)
        valid = mask[idx]
        idx = torch.where(valid, idx, idx[..., :1])
        top = torch.where(valid, top, torch.zeros_like(top)).to(scores.dtype)
        self._record(idx.reshape(-1, idx.shape[-1]), valid.reshape(-1, idx.shape[-1]))
        return masked, top, idx.to(indices.dtype)

    def _gate(self, module: Any, logits: torch.Tensor) -> torch.Tensor:
        import torch

        mask = self._check_width(logits, module)
        masked = logits.masked_fill(~mask, float("-inf"))
        k = self.top_k if self.top_k is not None else getattr(module, "top_k", None)
        if k is None:
            raise LayoutError(f"router {type(module).__name__} returns logits; pass `top_k` "
                              "(experts per token) to count its routing")
        flat = masked.detach().reshape(-1, self.num_experts)
        top, idx = torch.topk(flat, min(int(k), self.num_experts), dim=-1)
        self._record(idx, torch.isfinite(top))
        return masked

    def _record(self, idx: torch.Tensor, valid: torch.Tensor) -> None:
        import torch

        hits = torch.zeros(idx.shape[0], self.num_experts, dtype=torch.int64, device=idx.device)
        hits.scatter_add_(1, idx.detach(), valid.to(torch.int64))
        hits = hits.clamp_(max=1)
        self._hits.append(hits.cpu())
        self.counts += hits.sum(dim=0).numpy()

    # ------------------------------------------------------------------- state

    def routing(self) -> torch.Tensor:
        """``[tokens, num_experts]``: per token, how many routers sent it to each expert.

        Over the forward passes since the last :meth:`clear` (one pass of a batch:
        tokens are the router's flattened batch x sequence positions).

        Raises
        ------
        LayoutError
            If nothing was routed, or the hooked routers saw different token counts.
        """
        if not self._hits:
            raise LayoutError("no routing recorded since the last clear(); run a forward pass")
        sizes = {h.shape[0] for h in self._hits}
        if len(sizes) != 1:
            raise LayoutError(f"the routers saw different numbers of tokens {sorted(sizes)}; "
                              "routing() needs one token set (clear() between passes)")
        return sum(self._hits[1:], self._hits[0])

    def clear(self) -> None:
        """Forget the routing of past forward passes (:attr:`counts` is kept)."""
        self._hits = []

    def reset_counts(self) -> None:
        """Set :attr:`counts` to zero."""
        self.counts[:] = 0

    def remove(self) -> None:
        """Remove the hooks: the routers route over every expert again."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._hits = []

    def __enter__(self) -> RouterRestriction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def restrict_routers(
    model: torch.nn.Module,
    held: Iterable[int],
    *,
    num_experts: int,
    routers: str = DEFAULT_ROUTER_PATTERN,
    top_k: int | None = None,
) -> RouterRestriction:
    r"""Route ``model``'s tokens to the ``held`` experts only, and count them.

    Hooks every module whose name matches ``routers`` (:func:`re.search` on
    ``model.named_modules()`` names); see the module docstring for the two router
    kinds. The logits of experts not in ``held`` become :math:`-\infty`, so those
    experts are neither used nor trained.

    Parameters
    ----------
    model : torch.nn.Module
    held : iterable of int
        The node's experts this round (the instruction's ``expert_ids``).
    num_experts : int
        Logits per token of each router.
    routers : str
        Regular expression on module names; default :data:`DEFAULT_ROUTER_PATTERN`
        (``model.layers.<i>.mlp.gate`` of Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE).
    top_k : int, optional
        Experts per token of a router that returns plain logits (for the counts);
        top-k routers of the Mixtral kind report their own.

    Returns
    -------
    RouterRestriction

    Raises
    ------
    LayoutError
        If ``held`` is empty or out of range, or ``routers`` matches no module.
    """
    return RouterRestriction(model, list(held), num_experts=num_experts, routers=routers,
                             top_k=top_k)


def expert_feedback(
    routing: torch.Tensor,
    token_loss: torch.Tensor,
    expert_ids: Sequence[int],
    *,
    token_correct: torch.Tensor | None = None,
) -> tuple[list[int], list[float], list[float] | None]:
    r"""Per-expert ``counts``, ``loss`` and ``accuracy`` from one pass's routing.

    For expert :math:`e`: :math:`u_e` = the number of tokens (with a finite loss)
    routed to :math:`e` by at least one router; :math:`l_e = \sum_t r_{te} \ell_t /
    \sum_t r_{te}`, the model's loss on the tokens routed to :math:`e`, each weighted
    by :math:`r_{te}`, the number of routers that sent token :math:`t` to :math:`e`
    (NaN when :math:`u_e = 0`); the accuracy likewise from ``token_correct``.

    Parameters
    ----------
    routing : torch.Tensor
        ``[tokens, num_experts]`` from :meth:`RouterRestriction.routing`.
    token_loss : torch.Tensor
        ``[tokens]`` per-token loss, in the routers' token order; NaN for tokens
        without a target (a causal LM's last position), which are left out.
    expert_ids : sequence of int
        The experts to report (the node's held experts), in order.
    token_correct : torch.Tensor, optional
        ``[tokens]`` 0/1 (or bool): whether the token's prediction was right.

    Returns
    -------
    counts, loss, accuracy
        Lists aligned with ``expert_ids``; ``accuracy`` is ``None`` without
        ``token_correct``.

    Examples
    --------
    >>> import torch
    >>> routing = torch.tensor([[1, 0], [2, 0], [0, 1]])
    >>> expert_feedback(routing, torch.tensor([1.0, 4.0, float("nan")]), [0, 1])
    ([2, 0], [3.0, nan], None)
    """
    import torch

    loss = token_loss.detach().reshape(-1).double().cpu()
    r = routing.detach().cpu().double()
    if r.ndim != 2 or r.shape[0] != loss.shape[0]:
        raise LayoutError(f"`routing` has shape {tuple(r.shape)} but `token_loss` has "
                          f"{loss.shape[0]} tokens")
    keep = torch.isfinite(loss)
    r = r[keep]
    loss = loss[keep]
    correct = None
    if token_correct is not None:
        correct = token_correct.detach().reshape(-1).double().cpu()
        if correct.shape[0] != keep.shape[0]:
            raise LayoutError(f"`token_correct` has {correct.shape[0]} tokens; `token_loss` "
                              f"has {keep.shape[0]}")
        correct = correct[keep]
    counts, losses, accs = [], [], []
    for e in expert_ids:
        if not 0 <= int(e) < r.shape[1]:
            raise LayoutError(f"`expert_ids` names expert {e}; `routing` has {r.shape[1]}")
        w = r[:, int(e)]
        total = float(w.sum())
        counts.append(int((w > 0).sum()))
        losses.append(float((w * loss).sum()) / total if total > 0 else float("nan"))
        if correct is not None:
            accs.append(float((w * correct).sum()) / total if total > 0 else float("nan"))
    return counts, losses, accs if correct is not None else None
