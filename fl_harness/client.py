r"""Local training of one client on its assigned experts.

The client receives the shared parts and its assigned experts, trains them together
with its own router (which never leaves it), and returns a :class:`ClientUpdate`
(shared and expert weights, sample count, per-expert feedback) for the server. The
router comes back separately, in :class:`LocalResult`, for the client to keep.

Per-expert feedback, measured on the client's training data after local training:

``counts[e]``
    samples routed to expert ``e`` (``e`` among the sample's top-k gates);
``accuracy[e]``, ``loss[e]``
    accuracy and mean cross-entropy of expert ``e`` *alone* (the head applied to its
    output) on those samples. If the router sent no sample to ``e`` (``counts[e] = 0``)
    are NaN (nothing was measured), as :class:`flexassign.alignment.Feedback` allows;
    the planner then records its ``zero_count_signal``.

The same usage counts weight the expert in server-side aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from .model import MoEModel, StateDict, build_client_model, expert_state, shared_state

__all__ = ["ClientUpdate", "ExpertFeedback", "LocalResult", "LocalTraining", "train_client"]


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
        Clip each step's gradient norm to this value (off by default).
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("`epochs` and `batch_size` must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0; got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"`optimizer` must be 'sgd' or 'adam'; got {self.optimizer!r}")


@dataclass(frozen=True, kw_only=True)
class ExpertFeedback:
    """Per assigned expert: routed-sample count, accuracy and mean loss (see module doc)."""

    experts: tuple[int, ...]
    counts: tuple[int, ...]
    accuracy: tuple[float, ...]
    loss: tuple[float, ...]


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
    feedback : ExpertFeedback
    train_loss : float
        Mean training loss over the last local epoch.
    """

    client_id: str
    experts: tuple[int, ...]
    shared: StateDict
    expert_states: dict[int, StateDict]
    num_samples: int
    feedback: ExpertFeedback
    train_loss: float

    @property
    def expert_weights(self) -> dict[int, float]:
        """Usage-count weight of each trained expert, for :func:`aggregate_experts`."""
        return {e: float(c) for e, c in zip(self.feedback.experts, self.feedback.counts,
                                            strict=True)}


@dataclass(frozen=True, kw_only=True, eq=False)
class LocalResult:
    """The update for the server plus the router state the client keeps."""

    update: ClientUpdate
    router_state: StateDict


def _optimizer(params: Sequence[Tensor], cfg: LocalTraining) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


@torch.no_grad()
def expert_feedback(model: MoEModel, x: Tensor, y: Tensor) -> ExpertFeedback:
    """Measure per-expert usage, accuracy and loss of ``model`` on ``(x, y)``."""
    model.eval()
    _, g, own = model.forward_detailed(x)
    routed = g > 0                                            # (n, held)
    n_held = own.shape[1]
    losses = F.cross_entropy(own.reshape(-1, own.shape[-1]), y.repeat_interleave(n_held),
                             reduction="none").reshape(-1, n_held)
    correct = (own.argmax(-1) == y[:, None]).float()
    counts = routed.sum(0)
    use = routed.float()
    denom = use.sum(0)                      # 0 -> 0/0 = NaN where nothing was routed
    acc = (correct * use).sum(0) / denom
    loss = (losses * use).sum(0) / denom
    return ExpertFeedback(
        experts=model.held_experts,
        counts=tuple(int(c) for c in counts.tolist()),
        accuracy=tuple(float(a) for a in acc.tolist()),
        loss=tuple(float(v) for v in loss.tolist()),
    )


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
        raise ValueError(f"client {client_id!r} has no training samples")
    model = build_client_model(global_model, experts, router_state=router_state)
    model.train()
    opt = _optimizer(list(model.parameters()), training)
    n = len(xt)
    last = 0.0
    for _ in range(training.epochs):
        perm = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, training.batch_size):
            idx = perm[start:start + training.batch_size]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if training.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
        last = total / n
    fb = expert_feedback(model, xt, yt)
    update = ClientUpdate(
        client_id=client_id,
        experts=model.held_experts,
        shared=shared_state(model),
        expert_states=expert_state(model),
        num_samples=n,
        feedback=fb,
        train_loss=last,
    )
    router = {k: v.detach().clone() for k, v in model.router.state_dict().items()}
    return LocalResult(update=update, router_state=router)
