r"""Metrics: batched per-client evaluation, rounds to target, communication.

Utilization of expert :math:`e` is the number of client-trainings it received (one per
client that trained it and returned an update). Its balance is summarized by
:func:`flexassign.metrics.coefficient_of_variation` (population standard deviation over
the mean, NaN before anything trained) and the variance :math:`\sigma^2(u)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .model import MoEModel

__all__ = [
    "evaluate_clients",
    "model_bytes",
    "rounds_to_target",
]


def rounds_to_target(accuracies: Sequence[float], target: float | None) -> int | None:
    """First 1-based round whose accuracy reaches ``target`` (None if never or no target)."""
    if target is None:
        return None
    for i, a in enumerate(accuracies, start=1):
        if a is not None and np.isfinite(a) and a >= target:
            return i
    return None


def model_bytes(state: Mapping[str, Tensor]) -> int:
    """Bytes of a state dict's tensors."""
    return int(sum(t.numel() * t.element_size() for t in state.values()))


@torch.no_grad()
def evaluate_clients(
    model: MoEModel,
    routers: Sequence[Mapping[str, Tensor]],
    held: Sequence[Sequence[int]],
    data: Sequence[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
) -> NDArray[np.float64]:
    """Accuracy of each client's deployed model, batched.

    Client :math:`i`'s model is the global shared parts and experts, restricted to the
    experts ``held[i]``, gated by its own router ``routers[i]``.

    Parameters
    ----------
    model : MoEModel
        The global model (holding every expert).
    routers : sequence of mapping
        Router tensors (``weight``, ``bias``) per client.
    held : sequence of sequence of int
        Expert ids each client holds.
    data : (x, y) or sequence of (x, y)
        One test set for every client (global accuracy), or one per client
        (personalized accuracy; an empty set gives NaN).

    Returns
    -------
    ndarray, shape (n_clients,)
    """
    model.eval()
    if isinstance(data, tuple):
        x_all, y_all = data
        bounds = [(0, len(y_all))] * len(routers)
    else:
        sets: list[tuple[Tensor, Tensor]] = list(data)
        x_all = torch.cat([x for x, _ in sets])
        y_all = torch.cat([y for _, y in sets])
        ends = np.cumsum([len(y) for _, y in sets])
        bounds = list(zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True))
    h = model.features(x_all)
    out = model.expert_outputs(h)                           # (n, E, hidden), E = all held
    order = {e: j for j, e in enumerate(model.held_experts)}
    acc = np.full(len(routers), np.nan)
    for i, (r, ids) in enumerate(zip(routers, held, strict=True)):
        lo, hi = bounds[i]
        if hi <= lo:
            continue
        cols = torch.tensor([order[int(e)] for e in sorted(ids)], dtype=torch.long)
        hs = h[lo:hi]
        logits = (hs @ r["weight"].T + r["bias"])[:, torch.tensor(sorted(ids))]
        k = min(model.top_k, len(cols))
        top, idx = logits.topk(k, dim=1)
        g = torch.zeros_like(logits).scatter(1, idx, torch.softmax(top, dim=1))
        mixed = torch.einsum("ne,neh->nh", g, out[lo:hi][:, cols])
        pred = model.head(torch.relu(mixed)).argmax(1)
        acc[i] = float((pred == y_all[lo:hi]).float().mean())
    return acc
