"""Glue between a Flower run config and the PyTorch harness (:mod:`fl_harness`).

A Flower app's ``[tool.flwr.app.config]`` uses hyphenated keys; every key that names
an :class:`fl_harness.experiment.ExperimentConfig` field (``local-epochs`` ->
``local_epochs``) overrides it. ``num_clients`` is the number of partitions (the
``num-partitions`` entry of each node's ``node_config``; the number of supernodes in
simulation), so node ``partition-id = i`` is the harness's client ``i``: same data
partition, same local train/test split, same capacity and the same client id
(``client-03``). Server and nodes build the same initial model from the seed.

Everything here is cached per process, since Flower reuses ClientApp processes
across rounds and nodes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexassign.integrations.flower.app import APP_KEYS as STRATEGY_KEYS

__all__ = ["HarnessFederation", "experiment_config", "federation"]

#: Run-config keys used by the Flower app itself (not ExperimentConfig fields).
APP_KEYS = tuple(sorted({"num-server-rounds", "round-timeout", "report-round-time",
                         *STRATEGY_KEYS} - {"fraction-train"}))


def experiment_config(run_config: Mapping[str, Any], *, num_clients: int) -> Any:
    """An :class:`~fl_harness.experiment.ExperimentConfig` from a Flower run config.

    Parameters
    ----------
    run_config : mapping
        Hyphenated keys; keys naming no ExperimentConfig field are ignored, except
        that unknown keys which are not app keys raise (typos should not pass).
    num_clients : int
        Number of partitions in the federation.

    Raises
    ------
    ValueError
        If a key is neither an ExperimentConfig field nor an app key.
    """
    from fl_harness.experiment import ExperimentConfig

    names = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in run_config.items():
        name = key.replace("-", "_")
        if key in APP_KEYS:
            continue
        if name not in names:
            valid = sorted(n.replace("_", "-") for n in names) + sorted(APP_KEYS)
            raise ValueError(f"unknown run-config key `{key}`; valid keys: {', '.join(valid)}")
        if name in ("device_mix", "planner_options", "capacity_choices"):
            if value in ("", None):
                continue  # TOML has no null: "" means "the harness default"
            value = _tuple_value(name, value)
        kwargs[name] = value
    kwargs["num_clients"] = int(num_clients)
    kwargs.setdefault("client_fraction", 1.0)
    kwargs.setdefault("holdout_fraction", 0.0)   # every Flower node trains: no newcomers
    # A node holds only its assigned experts, so the app sends no probe rows: no
    # validation slice either, unless the run config asks for one.
    kwargs.setdefault("probe_fraction", 0.0)
    return ExperimentConfig(**kwargs)


def _tuple_value(name: str, value: Any) -> Any:
    """``device-mix`` / ``planner-options`` as JSON strings, ``capacity-choices`` as
    ``"1,2,3"``; TOML has no tuples of pairs."""
    if name == "capacity_choices":
        return tuple(int(v) for v in str(value).split(","))
    data = json.loads(value) if isinstance(value, str) else value
    if name == "planner_options":
        return tuple(sorted(dict(data).items()))
    return tuple((str(k), float(v)) for k, v in data)


@dataclass(frozen=True, eq=False)
class HarnessFederation:
    """The harness federation a Flower run stands for.

    Attributes
    ----------
    config : ExperimentConfig
    dataset : fl_harness.data.Dataset
    model_kwargs : dict
        Keyword arguments of :class:`fl_harness.model.MoEModel` (without ``experts``).
    init_seed : int
        Seed of the initial global model, derived from ``config.seed`` exactly as
        :func:`fl_harness.experiment.run_experiment` does.
    """

    config: Any
    dataset: Any
    model_kwargs: dict[str, Any]
    init_seed: int

    @functools.cached_property
    def clients(self) -> list[Any]:
        """Per-client records, built on first use (the server never needs them)."""
        from fl_harness.experiment import setup_clients

        return list(setup_clients(self.config, self.dataset))

    def initial_model(self) -> Any:
        """The initial global :class:`~fl_harness.model.MoEModel` (every expert)."""
        import torch

        from fl_harness.model import MoEModel

        return MoEModel(**self.model_kwargs,
                        generator=torch.Generator().manual_seed(self.init_seed))

    @functools.cached_property
    def initial_router(self) -> dict[str, Any]:
        """The initial router every client starts from (``weight``, ``bias``)."""
        model = self.initial_model()
        return {k: v.detach().clone() for k, v in model.router.state_dict().items()}

    def initial_arrays(self) -> dict[str, np.ndarray]:
        """Initial global shared and expert parameters as numpy (no router)."""
        sd = self.initial_model().state_dict()
        return {k: v.detach().cpu().numpy().copy() for k, v in sd.items()
                if not k.startswith("router.")}

    def client(self, partition_id: int) -> Any:
        """The harness client record of partition ``partition_id``."""
        if not 0 <= partition_id < len(self.clients):
            raise ValueError(
                f"`partition-id` {partition_id} is outside [0, {len(self.clients)})"
            )
        return self.clients[partition_id]


def _freeze(run_config: Mapping[str, Any]) -> str:
    return json.dumps(dict(sorted(run_config.items())), sort_keys=True, default=str)


@functools.lru_cache(maxsize=4)
def _federation(frozen: str, num_clients: int) -> HarnessFederation:
    from fl_harness.data import load_dataset

    cfg = experiment_config(json.loads(frozen), num_clients=num_clients)
    data = load_dataset(cfg.dataset, seed=cfg.data_seed, num_samples=cfg.num_samples,
                        path=cfg.dataset_path, domains=cfg.num_domains)
    from fl_harness.experiment import SeedStreams

    init_seed = SeedStreams.from_seed(cfg.seed).init_seed()
    model_kwargs = {
        "in_features": data.num_features,
        "num_classes": data.num_classes,
        "num_experts": cfg.num_experts,
        "hidden": cfg.hidden,
        "expert_hidden": cfg.expert_hidden,
        "top_k": cfg.top_k,
        "extractor": cfg.resolved_extractor,
    }
    return HarnessFederation(config=cfg, dataset=data, model_kwargs=model_kwargs,
                             init_seed=init_seed)


def federation(run_config: Mapping[str, Any], *, num_clients: int) -> HarnessFederation:
    """The (cached) :class:`HarnessFederation` for a run config and federation size."""
    return _federation(_freeze(run_config), int(num_clients))
