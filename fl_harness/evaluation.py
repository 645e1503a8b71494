r"""The evaluation metrics of a round (definitions: docs/harness.md, "Metrics").

Everything here runs where the simulation says it runs: a client's router is only
ever used (and fine-tuned) for that client, and nothing computed from it flows back
into the global model. Evaluation consumes no random numbers, so evaluating more or
less often never changes training.

``global_accuracy``
    each trained client's deployed model (its held experts, its router) on the global
    test set, weighted by the client's training samples;
``personal_accuracy``
    the same models on each client's own local test split, mean over clients;
``newcomer_accuracy``
    held-out clients, planned like new clients, each fine-tuning only its router
    (:func:`finetune_routers`) on its train split, on its test split;
``pool_accuracy``
    trained clients with *every* expert and their router fine-tuned the same way,
    on their local test split;
``expert_accuracy_mean`` / ``expert_accuracy_min``
    each expert alone (shared extractor, the expert, the head) on the global test set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from .federation import SimClient
from .metrics import evaluate_clients
from .model import MoEModel, StateDict

__all__ = ["evaluate_round", "expert_accuracies", "finetune_routers"]


@torch.no_grad()
def expert_accuracies(model: MoEModel, test: tuple[Tensor, Tensor]) -> NDArray[np.float64]:
    """Accuracy of each held expert alone (extractor, expert, head) on ``test``.

    Returns
    -------
    ndarray, shape (len(model.held_experts),)
    """
    model.eval()
    x, y = test
    out = model.expert_outputs(model.features(x))               # (n, E, hidden)
    pred = model.head(torch.relu(out)).argmax(-1)               # (n, E)
    return (pred == y[:, None]).double().mean(0).numpy()


def _padded(model: MoEModel, data: Sequence[tuple[Tensor, Tensor]]
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Features ``(C, N, H)``, expert outputs ``(C, N, E, H)``, labels ``(C, N)`` and a
    sample mask ``(C, N)`` for every client's set, zero-padded to the largest."""
    sizes = [len(y) for _, y in data]
    n_max = max(sizes)
    with torch.no_grad():
        x_all = torch.cat([x for x, _ in data])
        h_all = model.features(x_all)
        out_all = model.expert_outputs(h_all)
    c, e, hid = len(data), out_all.shape[1], h_all.shape[1]
    h = torch.zeros(c, n_max, hid)
    out = torch.zeros(c, n_max, e, hid)
    y = torch.zeros(c, n_max, dtype=torch.long)
    mask = torch.zeros(c, n_max)
    start = 0
    for i, ((_, yi), n) in enumerate(zip(data, sizes, strict=True)):
        h[i, :n], out[i, :n] = h_all[start:start + n], out_all[start:start + n]
        y[i, :n], mask[i, :n] = yi, 1.0
        start += n
    return h, out, y, mask


def _mixture_logits(model: MoEModel, h: Tensor, out: Tensor, w: Tensor, b: Tensor,
                    held: Tensor) -> Tensor:
    """Class logits ``(C, N, K)`` of every client's model, batched: top-k softmax gates
    over its held experts (``held`` a ``(C, E)`` mask), as :meth:`MoEModel.gates`."""
    logits = torch.einsum("cnh,ceh->cne", h, w) + b[:, None, :]
    logits = logits.masked_fill(~held[:, None, :], -math.inf)
    k = min(model.top_k, logits.shape[-1])
    top, idx = logits.topk(k, dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))
    mixed = torch.einsum("cne,cneh->cnh", gates, out)
    return F.linear(torch.relu(mixed), model.head.weight.detach(), model.head.bias.detach())


def _held_mask(model: MoEModel, held: Sequence[Sequence[int]]) -> Tensor:
    order = {e: j for j, e in enumerate(model.held_experts)}
    mask = torch.zeros(len(held), len(order), dtype=torch.bool)
    for i, ids in enumerate(held):
        mask[i, [order[int(e)] for e in ids]] = True
    return mask


def finetune_routers(
    model: MoEModel,
    routers: Sequence[Mapping[str, Tensor]],
    held: Sequence[Sequence[int]],
    data: Sequence[tuple[Tensor, Tensor]],
    *,
    steps: int,
    lr: float,
) -> list[StateDict]:
    r"""Fine-tune only each client's router on its own data, everything else frozen.

    Client :math:`i` minimizes the mean cross-entropy of its model (the global
    extractor, experts ``held[i]`` and head, gated by its router) on ``data[i]`` with
    ``steps`` full-batch Adam steps of step size ``lr``, starting from ``routers[i]``.
    Clients are optimized together in one batch, but their losses and parameters are
    separate (Adam is per-coordinate), so each result is what the client would get on
    its own device. Deterministic: no random numbers are used.

    Returns
    -------
    list of dict
        The fine-tuned routers (``weight``, ``bias``); the inputs are not modified.
    """
    if not routers:
        return []
    w = torch.stack([r["weight"].detach() for r in routers]).clone()
    b = torch.stack([r["bias"].detach() for r in routers]).clone()
    if steps > 0:
        model.eval()
        h, out, y, mask = _padded(model, data)
        mask_e = _held_mask(model, held)
        sizes = mask.sum(1).clamp(min=1.0)
        w.requires_grad_(True)
        b.requires_grad_(True)
        opt = torch.optim.Adam([w, b], lr=lr)
        for _ in range(steps):
            logits = _mixture_logits(model, h, out, w, b, mask_e)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                   reduction="none").reshape(y.shape)
            total = ((loss * mask).sum(1) / sizes).sum()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
    return [{"weight": w[i].detach().clone(), "bias": b[i].detach().clone()}
            for i in range(len(routers))]


def _mean_accuracy(model: MoEModel, routers: Sequence[Mapping[str, Tensor]],
                   held: Sequence[Sequence[int]], data: Sequence[tuple[Tensor, Tensor]]
                   ) -> float:
    acc = evaluate_clients(model, routers, held, list(data))
    ok = ~np.isnan(acc)
    return float(acc[ok].mean()) if ok.any() else math.nan


def evaluate_round(
    model: MoEModel,
    clients: Sequence[SimClient],
    newcomer_plan: Mapping[str, Sequence[int]],
    init_router: Mapping[str, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    all_experts: bool = False,
    finetune_steps: int = 30,
    finetune_lr: float = 0.05,
) -> dict[str, float]:
    """The six evaluation metrics of :data:`~fl_harness.results.EVAL_METRICS`.

    Parameters
    ----------
    model : MoEModel
        The global model (every expert).
    clients : sequence of SimClient
        All clients; those with a router are the trained ones, ``newcomer`` ones are
        held out.
    newcomer_plan : mapping
        Experts planned for each newcomer (by the strategy under test).
    init_router : mapping
        The initial router, a newcomer's starting point.
    test : (x, y)
        The global test set.
    all_experts : bool
        ``global``/``personal`` with every expert instead of the held ones.
    finetune_steps, finetune_lr : int, float
        Router fine-tuning budget of ``newcomer`` and ``pool``.

    Returns
    -------
    dict of str to float
        NaN for a metric with nobody to evaluate.
    """
    out = dict.fromkeys(("global_accuracy", "personal_accuracy", "newcomer_accuracy",
                         "pool_accuracy"), math.nan)
    ex = expert_accuracies(model, test)
    out["expert_accuracy_mean"], out["expert_accuracy_min"] = float(ex.mean()), float(ex.min())
    every = model.held_experts
    trained = [c for c in clients if c.router is not None and not c.newcomer]
    if trained:
        routers = [c.router for c in trained if c.router is not None]
        held = [every if all_experts else c.held for c in trained]
        g = evaluate_clients(model, routers, held, test)
        out["global_accuracy"] = float(np.average(g, weights=[len(c.y) for c in trained]))
        local = [(c.x_test, c.y_test) for c in trained]
        out["personal_accuracy"] = _mean_accuracy(model, routers, held, local)
        tuned = finetune_routers(model, routers, [every] * len(trained),
                                 [(c.x, c.y) for c in trained],
                                 steps=finetune_steps, lr=finetune_lr)
        out["pool_accuracy"] = _mean_accuracy(model, tuned, [every] * len(trained), local)
    newcomers = [c for c in clients if c.newcomer and newcomer_plan.get(c.cid)]
    if newcomers:
        held = [tuple(newcomer_plan[c.cid]) for c in newcomers]
        tuned = finetune_routers(model, [init_router] * len(newcomers), held,
                                 [(c.x, c.y) for c in newcomers],
                                 steps=finetune_steps, lr=finetune_lr)
        out["newcomer_accuracy"] = _mean_accuracy(model, tuned, held,
                                                  [(c.x_test, c.y_test) for c in newcomers])
    return out
