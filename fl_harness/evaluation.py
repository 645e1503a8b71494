r"""The evaluation metrics of a round (definitions: docs/harness.md, "Metrics").

Everything here runs where the simulation says it runs: a client's router is only
ever used (and fine-tuned) for that client, and nothing computed from it flows back
into the global model. Evaluation consumes no random numbers, so evaluating more or
less often never changes training.

A client's *deployed* model depends on ``deploy`` (:mod:`fl_harness.deploy`): with
``"probe"`` (the default) the :math:`k_c` experts that a forward-only probe on its own
training split finds best, its router then fine-tuned on them (:func:`finetune_routers`);
(a client whose best experts are those it last trained keeps its router as trained);
with ``"plan"`` the experts of its last training plan and its router as trained (a
newcomer: the experts a planning round from the planner's prior gives it).

``global_accuracy``
    each trained client's deployed model on the global test set, weighted by the
    client's training samples. Every client is scored on every class, so this is a
    *generalist* metric: it rewards experts that cover everything, not a client's fit;
``personal_accuracy``
    the same models on each client's own local test split, mean over clients;
``newcomer_accuracy``
    held-out clients, with deployed experts, each fine-tuning only its router
    (:func:`finetune_routers`) on its train split, on its test split;
``personal_accuracy_plan`` / ``newcomer_accuracy_plan``
    the same with plan deployment (equal to the primary values under ``"plan"``);
``fitness_rank_corr``
    mean over trained clients of the Spearman correlation between the planner's
    fitness row and the probe's fit (negated loss) of every expert on the client's
    training split: how well the planner knows which experts fit whom;
``pool_accuracy``
    trained clients with *every* expert and their router fine-tuned the same way,
    on their local test split;
``expert_accuracy_mean`` / ``expert_accuracy_min``
    each expert alone (shared extractor, the expert, the head) on the global test set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from .deploy import DEPLOY_MODES, deploy_clients
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
    deploy: str = "plan",
    capacity_of: Callable[[SimClient], int] | None = None,
    planner: Any = None,
) -> dict[str, float]:
    """The evaluation metrics of :data:`~fl_harness.results.EVAL_METRICS` and
    :data:`~fl_harness.results.EXTRA_METRICS`.

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
        ``global``/``personal`` with every expert instead of the deployed ones.
    finetune_steps, finetune_lr : int, float
        Router fine-tuning budget of ``newcomer``, ``pool`` and probe deployment.
    deploy : {"plan", "probe"}
        How clients choose the experts they use (:mod:`fl_harness.deploy`). With
        ``"probe"`` ``global``, ``personal`` and ``newcomer`` follow the probe
        deployment, and ``personal_accuracy_plan``/``newcomer_accuracy_plan`` keep the
        plan-deployed values; with ``"plan"`` both are the plan-deployed values.
    capacity_of : callable, optional
        ``client -> k_c`` experts it may deploy (default ``client.capacity``).
    planner : Planner, optional
        For ``fitness_rank_corr``: the Spearman correlation, mean over trained clients,
        between the planner's fitness rows and the fit a probe of every expert on each
        client's own data measures (NaN without a planner).

    Returns
    -------
    dict of str to float
        NaN for a metric with nobody to evaluate.
    """
    if deploy not in DEPLOY_MODES:
        raise ValueError(f"`deploy` must be one of {list(DEPLOY_MODES)}; got {deploy!r}")
    cap = capacity_of or (lambda c: c.capacity)
    out = dict.fromkeys(("global_accuracy", "personal_accuracy", "newcomer_accuracy",
                         "pool_accuracy", "personal_accuracy_plan", "newcomer_accuracy_plan",
                         "fitness_rank_corr"), math.nan)
    ex = expert_accuracies(model, test)
    out["expert_accuracy_mean"], out["expert_accuracy_min"] = float(ex.mean()), float(ex.min())
    every = model.held_experts
    trained = [c for c in clients if c.router is not None and not c.newcomer]
    if trained:
        routers = [c.router for c in trained if c.router is not None]
        own = [(c.x, c.y) for c in trained]
        local = [(c.x_test, c.y_test) for c in trained]
        weights = [len(c.y) for c in trained]
        deployed, probes = deploy_clients(model, own, [cap(c) for c in trained])
        if planner is not None and hasattr(planner, "fitness_rank_corr"):
            out["fitness_rank_corr"] = float(planner.fitness_rank_corr(
                {c.cid: p for c, p in zip(trained, probes, strict=True)}))
        plan_held = [every if all_experts else c.held for c in trained]
        out["personal_accuracy_plan"] = _mean_accuracy(model, routers, plan_held, local)
        if deploy == "probe" and not all_experts:
            held: Sequence[Sequence[int]] = deployed
            used = list(routers)
            moved = [i for i, c in enumerate(trained) if set(deployed[i]) != set(c.held)]
            if moved:   # a client that deploys what it trained keeps its router as is
                tuned_moved = finetune_routers(
                    model, [routers[i] for i in moved], [deployed[i] for i in moved],
                    [own[i] for i in moved], steps=finetune_steps, lr=finetune_lr)
                for i, r in zip(moved, tuned_moved, strict=True):
                    used[i] = r
            out["personal_accuracy"] = _mean_accuracy(model, used, held, local)
        else:
            used, held = list(routers), plan_held
            out["personal_accuracy"] = out["personal_accuracy_plan"]
        g = evaluate_clients(model, used, held, test)
        out["global_accuracy"] = float(np.average(g, weights=weights))
        tuned = finetune_routers(model, routers, [every] * len(trained), own,
                                 steps=finetune_steps, lr=finetune_lr)
        out["pool_accuracy"] = _mean_accuracy(model, tuned, [every] * len(trained), local)
    new = [c for c in clients if c.newcomer]
    planned = [c for c in new if newcomer_plan.get(c.cid)]
    if planned:
        out["newcomer_accuracy_plan"] = _newcomer_accuracy(
            model, init_router, [tuple(newcomer_plan[c.cid]) for c in planned], planned,
            finetune_steps, finetune_lr)
    if deploy == "probe" and new:
        chosen, _ = deploy_clients(model, [(c.x, c.y) for c in new], [cap(c) for c in new])
        out["newcomer_accuracy"] = _newcomer_accuracy(model, init_router, chosen, new,
                                                      finetune_steps, finetune_lr)
    else:
        out["newcomer_accuracy"] = out["newcomer_accuracy_plan"]
    return out


def _newcomer_accuracy(model: MoEModel, init_router: Mapping[str, Tensor],
                       held: Sequence[Sequence[int]], newcomers: Sequence[SimClient],
                       steps: int, lr: float) -> float:
    """Newcomers holding ``held``, routers fine-tuned from ``init_router`` on their train
    split, on their test split (mean)."""
    tuned = finetune_routers(model, [init_router] * len(newcomers), held,
                             [(c.x, c.y) for c in newcomers], steps=steps, lr=lr)
    return _mean_accuracy(model, tuned, held, [(c.x_test, c.y_test) for c in newcomers])
