"""One federated MoE experiment, driven round by round by the planner.

Round :math:`t`:

1. the server selects ``clients_per_round`` of the training clients (seeded;
   newcomers never train);
2. the planner (:func:`~fl_harness.federation.make_planner`) assigns each its experts
   (``strategy="full"`` gives every client every expert, ignoring capacity);
3. each selected client drops out with probability ``dropout`` (it returns nothing);
   each other one, before training, probes the global experts the planner names
   (``Planner.probe_candidates``; every expert by default) on its validation slice
   (:func:`~fl_harness.deploy.probe_experts`, with ``probe_fraction > 0``);
4. the others train locally on their assigned experts with their own routers; a
   client whose loss or weights become non-finite is *diverged*: its update is
   dropped from aggregation and feedback (and counted), its router is not kept;
5. the server averages shared parts by sample count and each expert over its trainers
   by usage, and reports the feedback and the probe rows to the planner
   (``Planner.report``, ``Planner.report_probe``);
6. every ``eval_every`` rounds (and after the last) the metrics of
   :mod:`fl_harness.evaluation` are computed with the run's deployment
   (:mod:`fl_harness.deploy`); newcomers are planned on a copy of the planner, so
   evaluation never changes training.

Configuration lives in :mod:`.config`, results in :mod:`.results`, setup in
:mod:`.federation`; this module is the loop.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from flexassign.alignment import Planner
from flexassign.metrics import coefficient_of_variation

from .aggregation import aggregate_experts, aggregate_shared
from .client import ClientUpdate, train_client
from .config import DEFAULT_DEVICE_MIX, DEFAULT_TARGETS, STRATEGIES, ExperimentConfig
from .data import Dataset, load_dataset
from .deploy import ProbeCost, probe_experts
from .evaluation import evaluate_round
from .federation import SeedStreams, SimClient, make_planner, setup_clients
from .metrics import model_bytes, rounds_to_target
from .model import MoEModel, expert_state, shared_state
from .results import EVAL_METRICS, EXTRA_METRICS, ExperimentResult, HarnessRound

__all__ = [
    "DEFAULT_DEVICE_MIX",
    "DEFAULT_TARGETS",
    "STRATEGIES",
    "ExperimentConfig",
    "ExperimentResult",
    "HarnessRound",
    "SeedStreams",
    "run_experiment",
    "setup_clients",
]


def run_experiment(
    config: ExperimentConfig,
    *,
    dataset: Dataset | None = None,
    progress: bool = False,
    planner_factory: Callable[[ExperimentConfig], Any] | None = None,
) -> ExperimentResult:
    """Run one federated MoE experiment.

    Parameters
    ----------
    config : ExperimentConfig
        The run's definition.
    dataset : Dataset, optional
        Preloaded data (otherwise loaded from ``config``).
    progress : bool
        Show a tqdm progress bar over rounds.
    planner_factory : callable, optional
        ``config -> planner`` replacing :func:`~fl_harness.federation.make_planner`
        (it must offer ``set_capacity``, ``plan_round``, ``report`` and
        ``utilization_cv``); capacities are still derived by ``make_planner``.

    Returns
    -------
    ExperimentResult

    Examples
    --------
    >>> cfg = ExperimentConfig(dataset="digits", rounds=2, num_clients=10, local_epochs=1,
    ...                        hidden=8, expert_hidden=8, finetune_steps=2)
    >>> r = run_experiment(cfg)
    >>> len(r.rounds), 0 <= r.final("newcomer_accuracy") <= 1
    (2, True)
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        return _run(config, dataset, progress, planner_factory)
    finally:
        torch.set_num_threads(prev_threads)


def _plan(planner: Planner | None, chosen: Sequence[SimClient], num_experts: int
          ) -> dict[str, tuple[int, ...]]:
    if planner is None:
        return {c.cid: tuple(range(num_experts)) for c in chosen}
    raw = planner.plan_round([c.cid for c in chosen])
    return {c.cid: tuple(int(e) for e in raw[c.cid]) for c in chosen}


def _newcomer_plan(planner: Planner | None, clients: Sequence[SimClient], num_experts: int
                   ) -> dict[str, tuple[int, ...]]:
    """Plan the newcomers together, as one round of new clients, on a *copy* of the
    planner (its prior for unseen clients, their own capacities)."""
    new = [c for c in clients if c.newcomer]
    if not new:
        return {}
    return _plan(copy.deepcopy(planner) if planner is not None else None, new, num_experts)


def _aggregate(model: MoEModel, updates: Sequence[ClientUpdate]) -> None:
    new_shared = aggregate_shared([(u.shared, u.num_samples) for u in updates])
    new_experts = aggregate_experts(expert_state(model),
                                    [(u.expert_states, u.expert_weights) for u in updates])
    sd = dict(new_shared)
    for e, s in new_experts.items():
        sd.update({f"experts.{e}.{k}": v for k, v in s.items()})
    model.load_state_dict(sd, strict=False)


def _run(cfg: ExperimentConfig, dataset: Dataset | None, progress: bool,
         planner_factory: Callable[[ExperimentConfig], Any] | None) -> ExperimentResult:
    t_start = time.perf_counter()
    data = dataset or load_dataset(cfg.dataset, seed=cfg.data_seed,
                                   num_samples=cfg.num_samples, path=cfg.dataset_path,
                                   domains=cfg.num_domains)
    seeds = SeedStreams.from_seed(cfg.seed)
    clients = setup_clients(cfg, data, seeds)
    planner: Any = make_planner(cfg, clients)           # sets every client's capacity
    if planner_factory is not None:
        planner = planner_factory(cfg)
        for c in clients:
            planner.set_capacity(c.cid, c.capacity)
    if cfg.strategy == "full":
        planner = None
    trainers = [c for c in clients if not c.newcomer]
    select_rng = np.random.default_rng(seeds.selection)
    drop_rng = np.random.default_rng(seeds.dropout)
    train_rng = np.random.default_rng(seeds.training)
    E = cfg.num_experts

    model = MoEModel(in_features=data.num_features, num_classes=data.num_classes,
                     num_experts=E, hidden=cfg.hidden, expert_hidden=cfg.expert_hidden,
                     top_k=cfg.top_k, extractor=cfg.resolved_extractor,
                     generator=torch.Generator().manual_seed(seeds.init_seed()))
    init_router = {k: v.detach().clone() for k, v in model.router.state_dict().items()}
    shared_b = model_bytes(shared_state(model))
    expert_b = {e: model_bytes(s) for e, s in expert_state(model).items()}
    test = (torch.from_numpy(data.x_test), torch.from_numpy(data.y_test))
    utilization = np.zeros(E, dtype=np.int64)
    records: list[HarnessRound] = []
    training = cfg.local_training
    m = min(cfg.clients_per_round, len(trainers))

    def deploy_k(c: SimClient) -> int:
        """Experts a client deploys: its capacity (every expert under ``full``)."""
        return E if cfg.strategy == "full" else c.capacity

    bar = None
    if progress:
        from flexassign._cli import progress as progress_bar  # tqdm on a TTY, plain lines else

        bar = progress_bar(cfg.rounds, f"{cfg.strategy} s{cfg.seed}", leave=False)
    for t in range(1, cfg.rounds + 1):
        t_round = time.perf_counter()
        chosen = [trainers[i] for i in np.sort(select_rng.choice(len(trainers), m,
                                                                  replace=False))]
        t_plan = time.perf_counter()
        plan = _plan(planner, chosen, E)
        solve_time = time.perf_counter() - t_plan
        dropped = drop_rng.random(len(chosen)) < cfg.dropout
        bytes_down = sum(shared_b + sum(expert_b[e] for e in plan[c.cid]) for c in chosen)

        probes = {}
        if planner is not None and hasattr(planner, "report_probe"):
            size = cfg.probe_experts or None
            for c, gone in zip(chosen, dropped, strict=True):
                if not gone and plan[c.cid] and c.has_val:
                    assert c.x_val is not None and c.y_val is not None  # has_val
                    probes[c.cid] = probe_experts(
                        model, planner.probe_candidates(c.cid, size), c.x_val, c.y_val)
        cost = ProbeCost.of(probes, plan, expert_b)

        updates: list[ClientUpdate] = []
        churn = []
        diverged = 0
        for c, gone in zip(chosen, dropped, strict=True):
            seed_c = int(train_rng.integers(2**62))   # drawn for dropouts too: stable streams
            if gone or not plan[c.cid]:
                continue
            res = train_client(client_id=c.cid, global_model=model, experts=plan[c.cid],
                               x=c.x, y=c.y, training=training,
                               generator=torch.Generator().manual_seed(seed_c),
                               router_state=c.router)
            if res.diverged:                    # dropped from aggregation and feedback
                diverged += 1
                continue
            c.router = res.router_state           # stays on the client
            if c.held:
                churn.append(1.0 - len(set(c.held) & set(res.update.experts))
                             / len(res.update.experts))
            c.held = res.update.experts
            updates.append(res.update)

        load = np.zeros(E, dtype=np.int64)
        bytes_up = 0
        if updates:
            _aggregate(model, updates)
            for u in updates:
                load[list(u.experts)] += 1
                bytes_up += shared_b + sum(expert_b[e] for e in u.experts) + 16 * len(u.experts)
                if planner is not None:
                    planner.report(u.client_id, u.feedback)
                    if u.client_id in probes:
                        planner.report_probe(u.client_id, probes[u.client_id])
        utilization += load

        t_eval = time.perf_counter()
        metrics = dict.fromkeys((*EVAL_METRICS, *EXTRA_METRICS), float("nan"))
        if t % cfg.eval_every == 0 or t == cfg.rounds:
            metrics = evaluate_round(
                model, clients, _newcomer_plan(planner, clients, E), init_router, test,
                all_experts=cfg.eval_experts == "all", finetune_steps=cfg.finetune_steps,
                finetune_lr=cfg.finetune_lr, deploy=cfg.deploy, capacity_of=deploy_k,
                planner=planner)
        now = time.perf_counter()
        records.append(HarnessRound(
            round=t, selected=len(chosen), dropped=int(dropped.sum()), diverged=diverged,
            **metrics,
            train_loss=(float(np.average([u.train_loss for u in updates],
                                         weights=[u.num_samples for u in updates]))
                        if updates else float("nan")),
            expert_load=tuple(int(v) for v in load),
            utilization=tuple(int(v) for v in utilization),
            utilization_cv=coefficient_of_variation(utilization),
            utilization_var=float(utilization.var()),
            never_trained=int((utilization == 0).sum()),
            assignment_churn=float(np.mean(churn)) if churn else float("nan"),
            bytes_down=int(bytes_down), bytes_up=int(bytes_up),
            probe_clients=cost.probes, probe_pairs=cost.experts_probed,
            probe_downloads=cost.extra_downloads, probe_bytes=cost.extra_bytes,
            probe_forward=cost.forward_passes,
            solve_time_s=solve_time, eval_time_s=now - t_eval,
            round_time_s=now - t_round, elapsed_s=now - t_start,
        ))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(acc=f"{metrics['global_accuracy']:.3f}",
                            cv=f"{records[-1].utilization_cv:.3f}")
    if bar is not None:
        bar.close()

    last = records[-1]
    p_cv = None
    if planner is not None and hasattr(planner, "utilization_cv"):
        p_cv = float(planner.utilization_cv())
    return ExperimentResult(
        config=cfg,
        rounds=tuple(records),
        final_accuracy=last.global_accuracy,
        final_personalized_accuracy=last.personal_accuracy,
        utilization_cv=last.utilization_cv,
        utilization_var=last.utilization_var,
        rounds_to_target=rounds_to_target([getattr(r, cfg.target_metric) for r in records],
                                          cfg.resolved_target),
        target_accuracy=cfg.resolved_target,
        wall_time_s=time.perf_counter() - t_start,
        capacities={c.cid: c.capacity for c in trainers},
        newcomers=tuple(c.cid for c in clients if c.newcomer),
        planner_utilization_cv=p_cv,
        final_state={k: v.detach().clone() for k, v in model.state_dict().items()},
    )
