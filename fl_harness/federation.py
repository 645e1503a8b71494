"""Setting up a federation: seed streams, clients (training and held-out newcomers)
and the planner that derives every client's capacity.

:func:`make_planner` is the one place a run's planner is built; the CLI, the study
and the Flower app use it, so they plan identically.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from flexassign.alignment import DEVICE_PRESETS, FitnessConfig, Planner
from flexassign.errors import InvalidProblemError

from .config import ExperimentConfig
from .data import Dataset
from .model import StateDict
from .partition import partition, split_local

__all__ = [
    "FLEX_DEFAULTS",
    "BalancePlanner",
    "SeedStreams",
    "SimClient",
    "make_planner",
    "planner_kwargs",
    "setup_clients",
]


class SeedStreams(NamedTuple):
    """The independent random streams of one experiment, all derived from its seed.

    Integrations that must reproduce a harness run (e.g. the Flower app) take their
    streams from here instead of re-deriving them. ``holdout`` and then ``probe`` were
    added last, so the first seven streams are those of earlier versions.
    """

    partition: np.random.SeedSequence
    local_split: np.random.SeedSequence
    capacity: np.random.SeedSequence
    selection: np.random.SeedSequence
    dropout: np.random.SeedSequence
    training: np.random.SeedSequence
    init: np.random.SeedSequence
    holdout: np.random.SeedSequence
    probe: np.random.SeedSequence

    @classmethod
    def from_seed(cls, seed: int) -> SeedStreams:
        """The streams of ``seed``."""
        return cls(*np.random.SeedSequence(seed).spawn(9))

    def init_seed(self) -> int:
        """Seed of the initial global model's ``torch.Generator``."""
        return int(np.random.default_rng(self.init).integers(2**62))


@dataclass
class SimClient:
    """One simulated client: its data, device, capacity and (client-side) router.

    ``capacity`` is set by :func:`make_planner` from the planner's own derivation (a
    ``declared_capacity`` is also its capacity from the start).
    ``router`` and ``held`` are the client's private state: the router it keeps
    between rounds and the experts it last trained. ``x_val``/``y_val`` is a training
    client's validation slice (``probe_fraction`` of its local data, never trained on;
    empty for newcomers or with ``probe_fraction=0``): the data of its training-time
    probes.
    """

    cid: str
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    device: str | None = None
    declared_capacity: int | None = None
    newcomer: bool = False
    capacity: int = 0
    router: StateDict | None = None
    held: tuple[int, ...] = ()
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def has_val(self) -> bool:
        """Whether the client has a validation slice to probe on."""
        return self.y_val is not None and len(self.y_val) > 0


class BalancePlanner(Planner):
    """Flex with the fitness term switched off (strategy ``"balance"``).

    Every score is zero, so flex's balanced solve picks among balanced assignments
    by the planner's seeded tie-break :math:`U(0, 10^{-6})` alone: balance only, no
    fitness, no exploration, no usage penalty. Feedback is still recorded (loads and
    the cumulative deficit that flex's bounds correct), it just never changes a plan.
    """

    def scores(self, client_ids: Sequence[Hashable], strategy: str | None = None
               ) -> NDArray[np.float64]:
        """All zeros, shape ``(len(client_ids), num_experts)``."""
        return np.zeros((len(list(client_ids)), self.num_experts))


#: Planner options the harness gives ``flex`` and its ablation ``balance`` unless
#: ``planner_options`` sets them: a switching cost, chosen on the tuning seeds (100-101,
#: capacity regime, synthetic; docs/results.md, "Tuning"). ``greedy`` and ``random``
#: run as the papers' baselines, without it.
FLEX_DEFAULTS: dict[str, Any] = {"stickiness": 0.3}


def planner_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    """``planner_options`` as Planner keyword arguments (a ``fitness`` dict becomes a
    :class:`~flexassign.alignment.FitnessConfig`, so configs stay plain JSON), over
    :data:`FLEX_DEFAULTS` for ``flex`` and ``balance``."""
    opts = dict(FLEX_DEFAULTS) if cfg.strategy in ("flex", "balance") else {}
    opts.update(dict(cfg.planner_options))
    if isinstance(opts.get("fitness"), Mapping):
        opts["fitness"] = FitnessConfig(**opts["fitness"])
    return opts


def make_planner(cfg: ExperimentConfig, clients: Iterable[SimClient] = ()) -> Planner:
    """The planner of a run, with ``clients`` registered and their capacities set.

    ``"balance"`` gets a :class:`BalancePlanner` (flex without fitness); ``"full"``
    gets a flex planner that is used only to derive capacities (a ``full`` run plans
    nothing). Each client is registered with its device class (the planner derives
    :math:`k_c` from the profile, its model cost and deadline) or its declared
    capacity (``capacity_choices``), and ``client.capacity`` is set to what the
    planner will use: capacities are derived once, by the planner.

    Examples
    --------
    >>> from fl_harness.config import ExperimentConfig
    >>> make_planner(ExperimentConfig(strategy="balance")).config.strategy
    'flex'
    """
    strategy = "flex" if cfg.strategy in ("balance", "full") else cfg.strategy
    cls = BalancePlanner if cfg.strategy == "balance" else Planner
    planner = cls(num_experts=cfg.num_experts, strategy=strategy, tolerance=cfg.tolerance,
                  seed=cfg.seed, **planner_kwargs(cfg))
    for c in clients:
        if c.declared_capacity is not None:
            planner.register(c.cid, capacity=c.declared_capacity)
        else:
            planner.register(c.cid, device_class=c.device)
        c.capacity = int(planner.capacity_limits(c.cid).max_experts)
    return planner


def _devices(cfg: ExperimentConfig, rng: np.random.Generator
             ) -> list[tuple[str | None, int | None]]:
    """(device class, declared capacity) per client: a device class drawn from
    ``device_mix``, or a capacity drawn uniformly from ``capacity_choices``."""
    if cfg.capacity_choices is not None:
        caps = rng.choice(np.array(cfg.capacity_choices), size=cfg.num_clients)
        return [(None, min(int(k), cfg.num_experts)) for k in caps]
    names = [n for n, _ in cfg.device_mix]
    unknown = [n for n in names if n not in DEVICE_PRESETS]
    if unknown:
        raise InvalidProblemError(f"`device_mix` names unknown device classes {unknown}; "
                                  f"valid: {list(DEVICE_PRESETS)}")
    p = np.array([w for _, w in cfg.device_mix], dtype=float)
    if (p < 0).any() or p.sum() <= 0:
        raise InvalidProblemError("`device_mix` shares must be >= 0 with a positive sum")
    picks = rng.choice(len(names), size=cfg.num_clients, p=p / p.sum())
    return [(names[i], None) for i in picks]


def setup_clients(cfg: ExperimentConfig, data: Dataset,
                  seeds: SeedStreams | None = None) -> list[SimClient]:
    """Every client of the experiment, as a run builds them (capacity still 0).

    The partition covers all ``num_clients`` clients; ``num_holdout`` of them, drawn
    from the ``holdout`` stream, are newcomers (``newcomer=True``) that never train.
    Each training client keeps ``probe_fraction`` of its training split (rounded down,
    at least one training sample left) as its validation slice, drawn from the
    ``probe`` stream.
    """
    seeds = seeds or SeedStreams.from_seed(cfg.seed)
    part_rng, local_rng, cap_rng, hold_rng, val_rng = (
        np.random.default_rng(s)
        for s in (seeds.partition, seeds.local_split, seeds.capacity, seeds.holdout,
                  seeds.probe)
    )
    domains = data.domains_of(data.y_train) if cfg.partition == "domains" else None
    parts = partition(data.y_train, cfg.num_clients, scheme=cfg.partition, rng=part_rng,
                      alpha=cfg.alpha, classes_per_client=cfg.classes_per_client,
                      domains=domains, domains_per_client=cfg.domains_per_client)
    devices = _devices(cfg, cap_rng)
    held_out = set(hold_rng.choice(cfg.num_clients, cfg.num_holdout, replace=False).tolist())
    clients = []
    width = len(str(cfg.num_clients - 1))
    for i, idx in enumerate(parts):
        tr, te = split_local(idx, test_fraction=cfg.local_test_fraction, rng=local_rng)
        val = tr[:0]
        if i not in held_out and cfg.probe_fraction > 0:
            n_val = max(0, min(int(cfg.probe_fraction * len(tr)), len(tr) - 1))
            perm = val_rng.permutation(len(tr))
            tr, val = np.sort(tr[perm[n_val:]]), np.sort(tr[perm[:n_val]])
        clients.append(SimClient(
            cid=f"client-{i:0{width}d}",
            x=torch.from_numpy(data.x_train[tr]), y=torch.from_numpy(data.y_train[tr]),
            x_test=torch.from_numpy(data.x_train[te]), y_test=torch.from_numpy(data.y_train[te]),
            device=devices[i][0], declared_capacity=devices[i][1], newcomer=i in held_out,
            capacity=devices[i][1] or 0,
            x_val=torch.from_numpy(data.x_train[val]), y_val=torch.from_numpy(data.y_train[val]),
        ))
    return clients
