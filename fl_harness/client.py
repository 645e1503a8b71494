r"""Local training of one client on its assigned experts.

The client receives the shared parts and its assigned experts, trains them together
with its own router (which never leaves it), and returns a :class:`ClientUpdate`
(shared and expert weights, sample count, routed-sample usage, per-expert feedback)
for the server. The router comes back separately, in :class:`LocalResult`, for the
client to keep.

Local training clips each step's gradient norm (``grad_clip``) and stops at the first
non-finite loss; a client whose loss or weights are non-finite is marked
``diverged`` and its update must not be aggregated or reported.

``usage[e]`` (the expert's aggregation weight) counts the client's training samples
whose top-k gates include expert ``e``. Per-expert feedback
(:class:`flexassign.alignment.Feedback`), measured on the client's training data after
local training, comes in two kinds (``LocalTraining.feedback``):

``"mixture"`` (the paper's signal)
    :math:`D_{ce}` = samples whose *top-1* gate is ``e``; ``counts[e]`` =
    :math:`|D_{ce}|`, and ``accuracy[e]``/``loss[e]`` are the accuracy and mean
    cross-entropy of the client's whole model (the gated mixture) on :math:`D_{ce}`.
``"expert"``
    ``counts[e]`` = ``usage[e]`` (top-k), and ``accuracy[e]``/``loss[e]`` are those of
    expert ``e`` *alone* (the head applied to its output) on those samples.

Where a count is 0 the accuracy and loss are NaN (nothing was measured), as
:class:`~flexassign.alignment.Feedback` allows; with its default
``zero_count_signal=None`` the planner leaves such a pair unknown (never 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from flexassign._validation import check_int, check_optional_real, check_real
from flexassign.alignment import Feedback
from flexassign.errors import InvalidFeedbackError, InvalidProblemError

from .config import FEEDBACK_KINDS
from .model import MoEModel, StateDict, build_client_model, expert_state, shared_state

__all__ = [
    "FEEDBACK_KINDS",
    "ClientUpdate",
    "LocalResult",
    "LocalTraining",
    "expert_feedback",
    "train_client",
]


@dataclass(frozen=True, kw_only=True)
class LocalTraining:
    """Local optimization settings.

    Attributes
    ----------
    epochs, batch_size : int
        Passes over the local data and mini-batch size.
    lr, momentum, weight_decay : float
        Optimizer settings (momentum is ignored by Adam).
    optimizer : {"sgd", "adam"}
        Optimizer kind.
    grad_clip : float, optional
        Clip each step's gradient norm to this value (``None``: no clipping).
    feedback : {"mixture", "expert"}
        Which per-expert feedback to measure (see the module docstring).
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    grad_clip: float | None = None
    feedback: str = "mixture"

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        check_real("lr", self.lr, lo=0.0, lo_open=True)
        check_real("momentum", self.momentum, lo=0.0)
        check_real("weight_decay", self.weight_decay, lo=0.0)
        check_optional_real("grad_clip", self.grad_clip, lo=0.0, lo_open=True)
        if self.optimizer not in ("sgd", "adam"):
            raise InvalidProblemError(
                f"`optimizer` must be 'sgd' or 'adam'; got {self.optimizer!r}")
        if self.feedback not in FEEDBACK_KINDS:
            raise InvalidProblemError(
                f"`feedback` must be one of {list(FEEDBACK_KINDS)}; got {self.feedback!r}")


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientUpdate:
    """What a client sends to the server. It holds no router weights.

    Attributes
    ----------
    client_id : str
    experts : tuple of int
        The experts it trained.
    shared : dict
        ``features.*`` and ``head.*`` tensors after local training.
    expert_states : dict of int to dict
        Each trained expert's tensors (keys relative to ``experts.{e}.``).
    num_samples : int
        Local training samples (the weight of the shared average).
    usage : tuple of int
        Per trained expert (in ``experts`` order), training samples whose top-k gates
        include it: the expert's aggregation weight.
    feedback : flexassign.alignment.Feedback
        Per-expert feedback for the planner.
    train_loss : float
        Mean training loss over the last local epoch.
    """

    client_id: str
    experts: tuple[int, ...]
    shared: StateDict
    expert_states: dict[int, StateDict]
    num_samples: int
    usage: tuple[int, ...]
    feedback: Feedback
    train_loss: float

    @property
    def expert_weights(self) -> dict[int, float]:
        """Usage-count weight of each trained expert, for :func:`aggregate_experts`."""
        return {e: float(c) for e, c in zip(self.experts, self.usage, strict=True)}


@dataclass(frozen=True, kw_only=True, eq=False)
class LocalResult:
    """The update for the server plus the router state the client keeps.

    ``diverged`` is True when a training loss or a trained weight became non-finite:
    then the update must be dropped (and the router not kept).
    """

    update: ClientUpdate
    router_state: StateDict
    diverged: bool = False


def _optimizer(params: Sequence[Tensor], cfg: LocalTraining) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


@torch.no_grad()
def expert_feedback(
    model: MoEModel, x: Tensor, y: Tensor, *, kind: str = "mixture"
) -> tuple[Feedback, tuple[int, ...]]:
    """Per-expert feedback of ``kind`` and top-k usage of ``model`` on ``(x, y)``.

    Returns
    -------
    (Feedback, tuple of int)
        The feedback (see the module docstring) and ``usage``, per held expert.
    """
    if kind not in FEEDBACK_KINDS:
        raise InvalidProblemError(f"`kind` must be one of {list(FEEDBACK_KINDS)}; got {kind!r}")
    model.eval()
    logits, g, own = model.forward_detailed(x)
    routed = g > 0                                            # (n, held)
    usage = routed.sum(0)
    if kind == "expert":
        n_held = own.shape[1]
        losses = F.cross_entropy(own.reshape(-1, own.shape[-1]),
                                 y.repeat_interleave(n_held),
                                 reduction="none").reshape(-1, n_held)
        correct = (own.argmax(-1) == y[:, None]).float()
        use = routed.float()
    else:
        losses = F.cross_entropy(logits, y, reduction="none")[:, None]
        correct = (logits.argmax(-1) == y).float()[:, None]
        use = F.one_hot(g.argmax(1), g.shape[1]).float()      # top-1 gate
    denom = use.sum(0)                      # 0 -> 0/0 = NaN where nothing was routed
    acc = (correct * use).sum(0) / denom
    loss = (losses * use).sum(0) / denom
    fb = Feedback(experts=model.held_experts,
                  counts=[int(c) for c in denom.tolist()],
                  accuracy=acc.tolist(),
                  loss=loss.tolist())
    return fb, tuple(int(u) for u in usage.tolist())


def _finite(model: MoEModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train_client(
    *,
    client_id: str,
    global_model: MoEModel,
    experts: Sequence[int],
    x: NDArray[np.float32] | Tensor,
    y: NDArray[np.int64] | Tensor,
    training: LocalTraining,
    generator: torch.Generator,
    router_state: Mapping[str, Tensor] | None = None,
) -> LocalResult:
    """Train one client locally on its assigned experts.

    Parameters
    ----------
    client_id : str
        Identifier carried in the update.
    global_model : MoEModel
        Current global model (not modified).
    experts : sequence of int
        Assigned global expert ids; the client model holds only these.
    x, y : array_like
        Local training data.
    training : LocalTraining
        Optimizer settings.
    generator : torch.Generator
        Seeds mini-batch shuffling.
    router_state : mapping, optional
        The client's router from its previous round; the global initial router if None.

    Returns
    -------
    LocalResult
        ``update`` for the server and ``router_state`` for the client to keep.
    """
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    if len(xt) == 0:
        raise InvalidProblemError(f"`x` is empty: client {client_id!r} has no training samples")
    model = build_client_model(global_model, experts, router_state=router_state)
    model.train()
    opt = _optimizer(list(model.parameters()), training)
    n = len(xt)
    last = 0.0
    diverged = False
    for _ in range(training.epochs):
        perm = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, training.batch_size):
            idx = perm[start:start + training.batch_size]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            if not bool(torch.isfinite(loss)):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if training.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
        if diverged:
            last = math.nan
            break
        last = total / n
    diverged = diverged or not _finite(model)
    held = model.held_experts
    if diverged:
        fb, usage = Feedback(experts=held, counts=[0] * len(held)), (0,) * len(held)
    else:
        try:
            fb, usage = expert_feedback(model, xt, yt, kind=training.feedback)
        except InvalidFeedbackError:    # an infinite loss on its own data: diverged
            diverged = True
            fb, usage = Feedback(experts=held, counts=[0] * len(held)), (0,) * len(held)
    update = ClientUpdate(
        client_id=client_id,
        experts=held,
        shared=shared_state(model),
        expert_states=expert_state(model),
        num_samples=n,
        usage=usage,
        feedback=fb,
        train_loss=last,
    )
    router = {k: v.detach().clone() for k, v in model.router.state_dict().items()}
    return LocalResult(update=update, router_state=router, diverged=diverged)
