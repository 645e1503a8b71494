"""One federated MoE experiment, driven round by round by the planner.

Round :math:`t`:

1. the server selects ``client_fraction * num_clients`` clients (seeded);
2. the planner (:class:`flexassign.alignment.Planner`) assigns each its experts
   (``strategy="full"`` gives every client every expert, ignoring capacity);
3. each selected client drops out with probability ``dropout`` (it returns nothing);
4. the others train locally on their assigned experts with their own routers and
   return shared/expert weights plus per-expert feedback;
5. the server averages shared parts by sample count and each expert over its trainers
   by usage, and reports the feedback to the planner;
6. metrics are recorded (see :class:`RoundRecord`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .aggregation import aggregate_experts, aggregate_shared
from .client import LocalTraining, train_client
from .data import Dataset, load_dataset
from .metrics import coefficient_of_variation, evaluate_clients, model_bytes, rounds_to_target
from .model import MoEModel, expert_state, shared_state
from .partition import partition, split_local

__all__ = [
    "DEFAULT_DEVICE_MIX",
    "DEFAULT_TARGETS",
    "STRATEGIES",
    "ExperimentConfig",
    "ExperimentResult",
    "RoundRecord",
    "run_experiment",
]

STRATEGIES = ("flex", "greedy", "desirability", "random", "full")

#: Target global accuracy for "rounds to target", fixed per dataset before the study:
#: about 80% of what the ``full`` reference reaches over its last rounds of a 40-round
#: run (seed 0, Dirichlet 0.8, default settings).
DEFAULT_TARGETS: dict[str, float] = {"mnist1d": 0.45, "digits": 0.70, "synthetic": 0.65}

#: Device-class mix of the federation (preset name, share of clients). With the
#: planner's default model cost and deadline these presets take 1, 3 and 6 of 8
#: experts, i.e. 2.8 on average.
DEFAULT_DEVICE_MIX: tuple[tuple[str, float], ...] = (
    ("low-end-phone", 0.4),
    ("high-end-phone", 0.4),
    ("tablet", 0.2),
)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything that defines a run; with its seed it reproduces the run exactly.

    Attributes
    ----------
    dataset : {"mnist1d", "digits", "synthetic", "npz"}
        Dataset; ``dataset_path`` names the file for ``"npz"``.
    num_samples : int, optional
        Size of generated datasets.
    data_seed : int
        Seed of the dataset itself (fixed across experiment seeds).
    partition : {"iid", "dirichlet", "shards"}
        Client split; ``alpha`` for Dirichlet, ``classes_per_client`` for shards.
    local_test_fraction : float
        Share of each client's data kept as its local test split.
    strategy : {"flex", "greedy", "desirability", "random", "full"}
        Planner strategy; ``"full"`` trains every expert on every client.
    rounds, num_clients, client_fraction, dropout : int, int, float, float
        Federation schedule.
    num_experts, top_k, hidden, expert_hidden, extractor : int, int, int, int, str
        Model; ``extractor="auto"`` picks ``conv1d`` for MNIST-1D, ``mlp`` otherwise.
    local_epochs, batch_size, lr, momentum, optimizer : int, int, float, float, str
        Local training.
    grad_clip : float, optional
        Gradient-norm clipping in local training (off by default).
    device_mix : tuple of (str, float)
        Device classes (capacity-profile presets) and their shares of clients.
    capacity_choices : tuple of int, optional
        Overrides ``device_mix``: each client's capacity is drawn uniformly from these.
    tolerance : float
        Planner balance tolerance.
    planner_options : tuple of (str, value)
        Extra keyword arguments for :class:`~flexassign.alignment.Planner` (JSON
        values; ``("fitness", {...})`` is turned into a ``FitnessConfig``).
    target_accuracy : float, optional
        Global accuracy for "rounds to target"; a per-dataset default if None.
    eval_every : int
        Evaluate every this many rounds (always the last round).
    eval_experts : {"held", "all"}
        Experts a client's model uses at evaluation: those it last trained (local
        expert-subset deployment, the default) or every global expert (the client
        downloads the full MoE for inference; its router's logits for experts it never
        held are still at their initial values).
    seed : int
        Seeds selection, dropout, partition, capacities, model init and training.
    num_threads : int
        ``torch.set_num_threads`` for the run.
    """

    dataset: str = "mnist1d"
    dataset_path: str | None = None
    num_samples: int | None = None
    data_seed: int = 0
    partition: str = "dirichlet"
    alpha: float = 0.8
    classes_per_client: int = 4
    local_test_fraction: float = 0.2
    strategy: str = "flex"
    rounds: int = 40
    num_clients: int = 40
    client_fraction: float = 0.25
    dropout: float = 0.0
    num_experts: int = 8
    top_k: int = 2
    hidden: int = 64
    expert_hidden: int = 64
    extractor: str = "auto"
    local_epochs: int = 3
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    optimizer: str = "sgd"
    grad_clip: float | None = None
    device_mix: tuple[tuple[str, float], ...] = DEFAULT_DEVICE_MIX
    capacity_choices: tuple[int, ...] | None = None
    tolerance: float = 0.1
    planner_options: tuple[tuple[str, Any], ...] = ()
    target_accuracy: float | None = None
    eval_every: int = 1
    eval_experts: str = "held"
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}; got "
                             f"{self.strategy!r}")
        if self.rounds < 1 or self.num_clients < 1 or self.num_experts < 1:
            raise ValueError("`rounds`, `num_clients` and `num_experts` must be >= 1")
        if not 0 < self.client_fraction <= 1:
            raise ValueError(f"`client_fraction` must be in (0, 1]; got {self.client_fraction}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1); got {self.dropout}")
        if self.eval_experts not in ("held", "all"):
            raise ValueError(f"`eval_experts` must be 'held' or 'all'; got {self.eval_experts!r}")
        if self.eval_every < 1:
            raise ValueError(f"`eval_every` must be >= 1; got {self.eval_every}")
        if self.capacity_choices is not None and (
            not self.capacity_choices or min(self.capacity_choices) < 1
        ):
            raise ValueError("`capacity_choices` must hold integers >= 1")
        if not self.device_mix and self.capacity_choices is None:
            raise ValueError("give `device_mix` or `capacity_choices`")

    @property
    def resolved_extractor(self) -> str:
        """``extractor`` with ``"auto"`` resolved."""
        if self.extractor != "auto":
            return self.extractor
        return "conv1d" if self.dataset == "mnist1d" else "mlp"

    @property
    def resolved_target(self) -> float | None:
        """``target_accuracy`` or the dataset's default."""
        if self.target_accuracy is not None:
            return self.target_accuracy
        return DEFAULT_TARGETS.get(self.dataset)

    @property
    def local_training(self) -> LocalTraining:
        """Local optimizer settings."""
        return LocalTraining(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr,
                             momentum=self.momentum, optimizer=self.optimizer,
                             grad_clip=self.grad_clip)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["device_mix"] = [list(p) for p in self.device_mix]
        d["planner_options"] = [list(p) for p in self.planner_options]
        if self.capacity_choices is not None:
            d["capacity_choices"] = list(self.capacity_choices)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        d = dict(data)
        if "device_mix" in d:
            d["device_mix"] = tuple((str(k), float(v)) for k, v in d["device_mix"])
        if "planner_options" in d:
            d["planner_options"] = tuple((str(k), v) for k, v in d["planner_options"])
        if d.get("capacity_choices") is not None:
            d["capacity_choices"] = tuple(int(c) for c in d["capacity_choices"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """Metrics of one round (accuracies are NaN in rounds that were not evaluated).

    ``expert_load`` counts this round's client-trainings per expert and
    ``utilization`` the cumulative ones; ``utilization_cv``/``utilization_var`` are
    their coefficient of variation and variance. ``assignment_churn`` is the mean,
    over this round's trained clients that trained before, of the share of their
    experts that differ from their previous assignment.
    """

    round: int
    selected: int
    dropped: int
    global_accuracy: float
    personalized_accuracy: float
    train_loss: float
    expert_load: tuple[int, ...]
    utilization: tuple[int, ...]
    utilization_cv: float
    utilization_var: float
    never_trained: int
    assignment_churn: float
    bytes_down: int
    bytes_up: int
    solve_time_s: float
    round_time_s: float
    elapsed_s: float

    def flat(self) -> dict[str, Any]:
        """A CSV row: per-expert tuples become ``load_e{e}`` / ``util_e{e}`` columns."""
        d = dataclasses.asdict(self)
        load, util = d.pop("expert_load"), d.pop("utilization")
        d.update({f"load_e{e}": v for e, v in enumerate(load)})
        d.update({f"util_e{e}": v for e, v in enumerate(util)})
        return d


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_none(v) for v in x]
    return x


@dataclass(frozen=True, kw_only=True, eq=False)
class ExperimentResult:
    """Outcome of :func:`run_experiment`.

    Attributes
    ----------
    config : ExperimentConfig
    rounds : tuple of RoundRecord
    final_accuracy : float
        Global test accuracy after the last round, in [0, 1].
    final_personalized_accuracy : float
        Mean local-test accuracy after the last round.
    utilization_cv, utilization_var : float
        Of the cumulative client-trainings per expert.
    rounds_to_target : int or None
        First round with global accuracy >= ``target_accuracy``.
    target_accuracy : float or None
    wall_time_s : float
    capacities : dict of str to int
        Each client's capacity (max experts per round).
    planner_utilization_cv : float or None
        The planner's own cumulative CV (counts reported trainings; None for ``full``).
    final_state : dict
        The server's final global state dict (its ``router.*`` is the initial router:
        the server never receives client routers). Not written by :meth:`save`.
    """

    config: ExperimentConfig
    rounds: tuple[RoundRecord, ...]
    final_accuracy: float
    final_personalized_accuracy: float
    utilization_cv: float
    utilization_var: float
    rounds_to_target: int | None
    target_accuracy: float | None
    wall_time_s: float
    capacities: dict[str, int] = field(default_factory=dict)
    planner_utilization_cv: float | None = None
    final_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def utilization(self) -> tuple[int, ...]:
        """Cumulative client-trainings per expert."""
        return self.rounds[-1].utilization

    def accuracy_curve(self) -> np.ndarray:
        """Global accuracy per round (NaN where not evaluated)."""
        return np.array([r.global_accuracy for r in self.rounds])

    def last_accuracy(self, n: int = 5) -> float:
        """Mean global accuracy over the last ``n`` evaluated rounds (less noisy than
        the final round alone)."""
        a = self.accuracy_curve()
        a = a[~np.isnan(a)]
        return float(a[-n:].mean()) if a.size else float("nan")

    def summary(self) -> dict[str, Any]:
        """The scalar results (the ``result.json`` contract fields and more)."""
        last = self.rounds[-1]
        return {
            "strategy": self.config.strategy,
            "dataset": self.config.dataset,
            "partition": self.config.partition,
            "seed": self.config.seed,
            "final_accuracy": self.final_accuracy,
            "final_personalized_accuracy": self.final_personalized_accuracy,
            "last5_accuracy": self.last_accuracy(5),
            "utilization_cv": self.utilization_cv,
            "utilization_var": self.utilization_var,
            "planner_utilization_cv": self.planner_utilization_cv,
            "rounds_to_target": self.rounds_to_target,
            "target_accuracy": self.target_accuracy,
            "never_trained": last.never_trained,
            "mean_assignment_churn": float(np.nanmean([r.assignment_churn for r in self.rounds]))
            if any(np.isfinite(r.assignment_churn) for r in self.rounds) else None,
            "utilization": list(self.utilization),
            "bytes_down": sum(r.bytes_down for r in self.rounds),
            "bytes_up": sum(r.bytes_up for r in self.rounds),
            "mean_solve_time_s": float(np.mean([r.solve_time_s for r in self.rounds])),
            "wall_time_s": self.wall_time_s,
        }

    def to_dict(self) -> dict[str, Any]:
        """Summary, config, capacities and every round (NaN written as null)."""
        d = self.summary()
        d["config"] = self.config.to_dict()
        d["capacities"] = dict(self.capacities)
        d["rounds"] = [dataclasses.asdict(r) for r in self.rounds]
        out: dict[str, Any] = _nan_to_none(d)
        return out

    def save(self, out_dir: str | Path) -> Path:
        """Write ``result.json``, ``rounds.csv`` and ``config.json`` into ``out_dir``."""
        import pandas as pd

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        pd.DataFrame([r.flat() for r in self.rounds]).to_csv(out / "rounds.csv", index=False)
        self.config.save(out / "config.json")
        return out


# --------------------------------------------------------------------------- running


@dataclass
class _Client:
    cid: str
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    capacity: int
    device: str
    router: dict[str, torch.Tensor] | None = None
    held: tuple[int, ...] = ()


def _capacities(cfg: ExperimentConfig, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(device class, capacity k_c) per client.

    Device classes are :data:`flexassign.alignment.DEVICE_PRESETS` profiles; k_c is
    what :func:`flexassign.alignment.capacity_limits` derives from the profile, the
    planner's default model cost and round deadline (the same numbers the planner
    uses when the client is registered with that device class).
    """
    if cfg.capacity_choices is not None:
        caps = rng.choice(np.array(cfg.capacity_choices), size=cfg.num_clients)
        return [(f"k{int(k)}", min(int(k), cfg.num_experts)) for k in caps]
    from flexassign.alignment import (
        DEFAULT_DEADLINE,
        DEVICE_PRESETS,
        ClientProfile,
        capacity_limits,
        default_model_cost,
    )

    names = [n for n, _ in cfg.device_mix]
    unknown = [n for n in names if n not in DEVICE_PRESETS]
    if unknown:
        raise ValueError(f"`device_mix` names unknown device classes {unknown}; valid: "
                         f"{list(DEVICE_PRESETS)}")
    p = np.array([w for _, w in cfg.device_mix], dtype=float)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError("`device_mix` shares must be >= 0 with a positive sum")
    picks = rng.choice(len(names), size=cfg.num_clients, p=p / p.sum())
    opts = dict(cfg.planner_options)
    cost = default_model_cost(cfg.num_experts)
    deadline = opts.get("deadline", DEFAULT_DEADLINE)
    cap = {n: capacity_limits(ClientProfile.preset(n), cost, deadline).max_experts
           for n in names}
    return [(names[i], cap[names[i]]) for i in picks]


def _planner_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    """``planner_options`` as Planner keyword arguments (a ``fitness`` dict becomes a
    :class:`~flexassign.alignment.FitnessConfig`, so configs stay plain JSON)."""
    from flexassign.alignment import FitnessConfig

    opts = dict(cfg.planner_options)
    if isinstance(opts.get("fitness"), Mapping):
        opts["fitness"] = FitnessConfig(**opts["fitness"])
    return opts


def _make_planner(cfg: ExperimentConfig, clients: list[_Client]) -> Any:
    from flexassign.alignment import Planner

    planner = Planner(num_experts=cfg.num_experts, strategy=cfg.strategy,
                      tolerance=cfg.tolerance, seed=cfg.seed, **_planner_kwargs(cfg))
    for c in clients:
        if cfg.capacity_choices is None:
            planner.register(c.cid, device_class=c.device)
            c.capacity = int(planner.capacity_limits(c.cid).max_experts)
        else:
            planner.set_capacity(c.cid, c.capacity)
    return planner


class SeedStreams(NamedTuple):
    """The independent random streams of one experiment, all derived from its seed.

    Integrations that must reproduce a harness run (e.g. the Flower app) take their
    streams from here instead of re-deriving them.
    """

    partition: np.random.SeedSequence
    local_split: np.random.SeedSequence
    capacity: np.random.SeedSequence
    selection: np.random.SeedSequence
    dropout: np.random.SeedSequence
    training: np.random.SeedSequence
    init: np.random.SeedSequence

    @classmethod
    def from_seed(cls, seed: int) -> SeedStreams:
        return cls(*np.random.SeedSequence(seed).spawn(7))

    def init_seed(self) -> int:
        """Seed of the initial global model's ``torch.Generator``."""
        return int(np.random.default_rng(self.init).integers(2**62))


def setup_clients(cfg: ExperimentConfig, data: Dataset) -> list[_Client]:
    """The experiment's clients (partition, local splits, device classes), as a run builds them."""
    return _setup(cfg, data, SeedStreams.from_seed(cfg.seed))


def _setup(cfg: ExperimentConfig, data: Dataset, seeds: SeedStreams) -> list[_Client]:
    part_rng, local_rng, cap_rng = (
        np.random.default_rng(s) for s in (seeds.partition, seeds.local_split, seeds.capacity)
    )
    parts = partition(data.y_train, cfg.num_clients, scheme=cfg.partition, rng=part_rng,
                      alpha=cfg.alpha, classes_per_client=cfg.classes_per_client)
    caps = _capacities(cfg, cap_rng)
    clients = []
    width = len(str(cfg.num_clients - 1))
    for i, idx in enumerate(parts):
        tr, te = split_local(idx, test_fraction=cfg.local_test_fraction, rng=local_rng)
        clients.append(_Client(
            cid=f"client-{i:0{width}d}",
            x=torch.from_numpy(data.x_train[tr]), y=torch.from_numpy(data.y_train[tr]),
            x_test=torch.from_numpy(data.x_train[te]), y_test=torch.from_numpy(data.y_train[te]),
            capacity=caps[i][1], device=caps[i][0],
        ))
    return clients


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
        ``config -> planner`` replacing the default
        :class:`flexassign.alignment.Planner` (it must offer ``set_capacity``,
        ``plan_round``, ``report`` and ``utilization_cv``).

    Returns
    -------
    ExperimentResult
    """
    cfg = config
    t_start = time.perf_counter()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        return _run(cfg, dataset, progress, planner_factory, t_start)
    finally:
        torch.set_num_threads(prev_threads)


def _run(cfg: ExperimentConfig, dataset: Dataset | None, progress: bool,
         planner_factory: Callable[[ExperimentConfig], Any] | None,
         t_start: float) -> ExperimentResult:
    data = dataset or load_dataset(cfg.dataset, seed=cfg.data_seed,
                                   num_samples=cfg.num_samples, path=cfg.dataset_path)
    seeds = SeedStreams.from_seed(cfg.seed)
    clients = _setup(cfg, data, seeds)
    select_rng = np.random.default_rng(seeds.selection)
    drop_rng = np.random.default_rng(seeds.dropout)
    train_rng = np.random.default_rng(seeds.training)
    init_seed = seeds.init_seed()
    E = cfg.num_experts

    model = MoEModel(in_features=data.num_features, num_classes=data.num_classes,
                     num_experts=E, hidden=cfg.hidden, expert_hidden=cfg.expert_hidden,
                     top_k=cfg.top_k, extractor=cfg.resolved_extractor,
                     generator=torch.Generator().manual_seed(init_seed))
    init_router = {k: v.detach().clone() for k, v in model.router.state_dict().items()}
    shared_b = model_bytes(shared_state(model))
    expert_b = {e: model_bytes(s) for e, s in expert_state(model).items()}

    planner = None
    if cfg.strategy != "full":
        planner = planner_factory(cfg) if planner_factory else _make_planner(cfg, clients)
        if planner_factory:
            for c in clients:
                planner.set_capacity(c.cid, c.capacity)

    m = max(1, round(cfg.client_fraction * cfg.num_clients))
    test_x = torch.from_numpy(data.x_test)
    test_y = torch.from_numpy(data.y_test)
    utilization = np.zeros(E, dtype=np.int64)
    records: list[RoundRecord] = []
    training = cfg.local_training

    bar = None
    if progress:
        from flexassign._cli import progress as progress_bar  # tqdm on a TTY, plain lines else

        bar = progress_bar(cfg.rounds, f"{cfg.strategy} s{cfg.seed}", leave=False)
    for t in range(1, cfg.rounds + 1):
        t_round = time.perf_counter()
        chosen = [clients[i] for i in np.sort(select_rng.choice(len(clients), m,
                                                                 replace=False))]
        t_plan = time.perf_counter()
        if planner is None:
            plan = {c.cid: tuple(range(E)) for c in chosen}
        else:
            raw = planner.plan_round([c.cid for c in chosen])
            plan = {c.cid: tuple(int(e) for e in raw[c.cid]) for c in chosen}
        solve_time = time.perf_counter() - t_plan
        dropped = drop_rng.random(len(chosen)) < cfg.dropout
        bytes_down = sum(shared_b + sum(expert_b[e] for e in plan[c.cid]) for c in chosen)

        updates = []
        churn = []
        for c, gone in zip(chosen, dropped, strict=True):
            seed_c = int(train_rng.integers(2**62))   # drawn for dropouts too: stable streams
            if gone or not plan[c.cid]:
                continue
            res = train_client(client_id=c.cid, global_model=model, experts=plan[c.cid],
                               x=c.x, y=c.y, training=training,
                               generator=torch.Generator().manual_seed(seed_c),
                               router_state=c.router)
            c.router = res.router_state           # stays on the client
            if c.held:
                churn.append(1.0 - len(set(c.held) & set(res.update.experts))
                             / len(res.update.experts))
            c.held = res.update.experts
            updates.append(res.update)

        load = np.zeros(E, dtype=np.int64)
        bytes_up = 0
        if updates:
            new_shared = aggregate_shared([(u.shared, u.num_samples) for u in updates])
            new_experts = aggregate_experts(expert_state(model),
                                            [(u.expert_states, u.expert_weights)
                                             for u in updates])
            sd = dict(new_shared)
            for e, s in new_experts.items():
                sd.update({f"experts.{e}.{k}": v for k, v in s.items()})
            model.load_state_dict(sd, strict=False)
            for u in updates:
                load[list(u.experts)] += 1
                bytes_up += shared_b + sum(expert_b[e] for e in u.experts) + 16 * len(u.experts)
                if planner is not None:
                    planner.report(u.client_id, _feedback(u))
        utilization += load

        if t % cfg.eval_every == 0 or t == cfg.rounds:
            g_acc, p_acc = _evaluate(model, clients, init_router, (test_x, test_y),
                                     all_experts=cfg.eval_experts == "all")
        else:
            g_acc = p_acc = float("nan")
        now = time.perf_counter()
        records.append(RoundRecord(
            round=t, selected=len(chosen), dropped=int(dropped.sum()),
            global_accuracy=g_acc, personalized_accuracy=p_acc,
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
            solve_time_s=solve_time, round_time_s=now - t_round, elapsed_s=now - t_start,
        ))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(acc=f"{g_acc:.3f}", cv=f"{records[-1].utilization_cv:.3f}")
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
        final_personalized_accuracy=last.personalized_accuracy,
        utilization_cv=last.utilization_cv,
        utilization_var=last.utilization_var,
        rounds_to_target=rounds_to_target([r.global_accuracy for r in records],
                                          cfg.resolved_target),
        target_accuracy=cfg.resolved_target,
        wall_time_s=time.perf_counter() - t_start,
        capacities={c.cid: c.capacity for c in clients},
        planner_utilization_cv=p_cv,
        final_state={k: v.detach().clone() for k, v in model.state_dict().items()},
    )


def _feedback(update: Any) -> Any:
    from flexassign.alignment import Feedback

    fb = update.feedback
    return Feedback(experts=list(fb.experts), counts=list(fb.counts),
                    accuracy=list(fb.accuracy), loss=list(fb.loss))


def _evaluate(model: MoEModel, clients: list[_Client], init_router: dict[str, torch.Tensor],
              test: tuple[torch.Tensor, torch.Tensor], *, all_experts: bool = False
              ) -> tuple[float, float]:
    """Sample-weighted global and mean personalized accuracy over clients that have
    trained at least once (each with its own router and held experts)."""
    active = [c for c in clients if c.router is not None]
    if not active:
        return float("nan"), float("nan")
    routers = [c.router or init_router for c in active]
    held = [model.held_experts if all_experts else c.held for c in active]
    g = evaluate_clients(model, routers, held, test)
    w = np.array([len(c.y) for c in active], dtype=float)
    p = evaluate_clients(model, routers, held, [(c.x_test, c.y_test) for c in active])
    ok = ~np.isnan(p)
    return float(np.average(g, weights=w)), (float(p[ok].mean()) if ok.any() else float("nan"))
