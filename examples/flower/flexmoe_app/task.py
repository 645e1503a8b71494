r"""Model, data, training and evaluation of the example, in plain sight.

The model is a small Mixture-of-Experts classifier of the kind a team brings along,
not the harness's model: an embedding, **two MoE blocks**, each with its own gate and
``num-experts`` feed-forward experts, and a head. Expert ``e`` is the pair
``blocks.0.experts.<e>`` and ``blocks.1.experts.<e>``: FLEX-MoE assigns, sends and
averages it as one unit. The gates (``blocks.<b>.gate``) are personal: they never
leave the node. :data:`LAYOUT` says exactly this to the strategy.

Data: scikit-learn's bundled handwritten digits (8x8 images, 10 classes, 1797
samples; shipped with scikit-learn, nothing is downloaded), split across
``num-partitions`` nodes with label skew (Dirichlet, ``alpha``), then 80/20 into a
local train and test set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexassign.integrations.flower import ExpertLayout

#: Expert ``e`` spans both blocks; the gates stay on the node.
LAYOUT = ExpertLayout(expert=r"^blocks\.\d+\.experts\.(\d+)\.", local=r"^blocks\.\d+\.gate\.")


# ------------------------------------------------------------------------ model


class MoEBlock(nn.Module):
    """A residual MoE layer: ``h + sum_k p_k(h) expert_k(h)`` over the top-k experts the
    node holds, ``p`` the gate's softmax over them (experts it was not sent are masked
    out of its gate)."""

    def __init__(self, dim: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) for _ in range(num_experts)
        )
        self.top_k = top_k

    def forward(self, h: Tensor, held: Tensor) -> tuple[Tensor, Tensor]:
        """Output and the (n, num_experts) 0/1 routing mask."""
        probs = torch.softmax(self.gate(h).masked_fill(~held, float("-inf")), dim=1)
        k = min(self.top_k, int(held.sum()))
        weights, idx = probs.topk(k, dim=1)  # gate probabilities: the gate gets gradients
        out = h.clone()
        routed = torch.zeros_like(probs).scatter(1, idx, 1.0)
        for e in torch.nonzero(held).flatten().tolist():
            rows = (idx == e).any(dim=1)
            if rows.any():
                w = (weights * (idx == e)).sum(dim=1, keepdim=True)[rows]
                out[rows] = out[rows] + w * self.experts[e](h[rows])
        return out, routed


class Net(nn.Module):
    """Embedding, two MoE blocks, head."""

    held: Tensor  # which experts this node routes to (a buffer, never in the state dict)

    def __init__(self, *, in_features: int = 64, num_classes: int = 10, dim: int = 32,
                 num_experts: int = 4, top_k: int = 1) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, dim)
        self.blocks = nn.ModuleList(MoEBlock(dim, num_experts, top_k) for _ in range(2))
        self.head = nn.Linear(dim, num_classes)
        self.register_buffer("held", torch.ones(num_experts, dtype=torch.bool), persistent=False)

    def hold(self, experts: list[int] | tuple[int, ...]) -> None:
        """Route only to ``experts`` (the ones this node was sent)."""
        self.held.zero_()
        self.held[list(experts)] = True

    def forward_routed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the (n, num_experts) mask of experts each sample used in any block."""
        h = F.relu(self.embed(x))
        used = torch.zeros(x.shape[0], self.held.numel(), dtype=torch.bool)
        for block in self.blocks:
            h, routed = block(h, self.held)
            used |= routed.bool()
        return self.head(h), used

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_routed(x)[0]


def make_model(num_experts: int, dim: int, top_k: int, seed: int) -> Net:
    """The initial model; server and nodes build the same one from ``seed``."""
    torch.manual_seed(seed)
    return Net(num_experts=num_experts, dim=dim, top_k=top_k)


# ------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Partition:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@functools.lru_cache(maxsize=8)
def load_data(partition_id: int, num_partitions: int, *, alpha: float = 0.5,
              seed: int = 0) -> Partition:
    """Node ``partition_id``'s digits: a label-skewed share, split 80/20."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        share = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].extend(chunk.tolist())
    mine = rng.permutation(np.array(parts[partition_id], dtype=int)) if parts[partition_id] \
        else np.arange(0)
    n_test = max(1, len(mine) // 5) if len(mine) > 1 else 0
    test, train = mine[:n_test], mine[n_test:]
    return Partition(torch.from_numpy(x[train]), torch.from_numpy(y[train]).long(),
                     torch.from_numpy(x[test]), torch.from_numpy(y[test]).long())


# -------------------------------------------------------------- train, evaluate


def train(model: Net, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int,
          seed: int) -> float:
    """Plain SGD on the node's data; returns the last epoch's mean loss."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    last = float("nan")
    for _ in range(epochs):
        total, n = 0.0, 0
        for batch in torch.randperm(len(y), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(batch), n + len(batch)
        last = total / max(n, 1)
    return last


@torch.no_grad()
def evaluate(model: Net, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Accuracy and mean cross-entropy."""
    if len(y) == 0:
        return float("nan"), float("nan")
    model.eval()
    logits = model(x)
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


@torch.no_grad()
def expert_feedback(model: Net, x: Tensor, y: Tensor,
                    experts: tuple[int, ...]) -> tuple[list[int], list[float], list[float]]:
    """Per held expert: samples routed to it (in either block, each sample counted
    once), and the model's accuracy and loss on those samples (NaN where none)."""
    model.eval()
    logits, used = model.forward_routed(x)
    correct = (logits.argmax(1) == y).float()
    losses = F.cross_entropy(logits, y, reduction="none")
    counts, acc, loss = [], [], []
    for e in experts:
        rows = used[:, e]
        n = int(rows.sum())
        counts.append(n)
        acc.append(float(correct[rows].mean()) if n else float("nan"))
        loss.append(float(losses[rows].mean()) if n else float("nan"))
    return counts, acc, loss
