"""fl_harness: a small PyTorch federated Mixture-of-Experts simulation that drives the
:mod:`flexassign.alignment` planner round by round and measures accuracy, convergence
and expert-utilization balance.

::

    from fl_harness import ExperimentConfig, run_experiment

    result = run_experiment(ExperimentConfig(dataset="mnist1d", strategy="flex", rounds=40))
    result.final_accuracy, result.utilization_cv, result.rounds_to_target
    result.save("runs/flex")                  # result.json, rounds.csv, config.json

Modules: :mod:`.data` (datasets), :mod:`.partition` (client splits), :mod:`.model`
(the MoE model and client subset models), :mod:`.client` (local training and
feedback), :mod:`.aggregation` (server-side pure functions), :mod:`.metrics`,
:mod:`.evaluation` (the evaluation metrics), :mod:`.config` (``ExperimentConfig``),
:mod:`.results` (``HarnessRound``, ``ExperimentResult``), :mod:`.federation` (clients,
seed streams, ``make_planner``), :mod:`.experiment` (the round loop),
:mod:`.comparison` (strategies x seeds), :mod:`.plots`, :mod:`.cli`.
Importing this package does not import torch; the submodules do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .comparison import CompareResult, compare
    from .config import ExperimentConfig
    from .experiment import run_experiment
    from .federation import make_planner
    from .results import ExperimentResult, HarnessRound

__all__ = [
    "CompareResult",
    "ExperimentConfig",
    "ExperimentResult",
    "HarnessRound",
    "compare",
    "make_planner",
    "run_experiment",
]

_LAZY = {
    "CompareResult": "comparison",
    "compare": "comparison",
    "ExperimentConfig": "config",
    "ExperimentResult": "results",
    "HarnessRound": "results",
    "make_planner": "federation",
    "run_experiment": "experiment",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
