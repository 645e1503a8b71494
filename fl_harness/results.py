"""What a harness run produces: one :class:`HarnessRound` per round and the
:class:`ExperimentResult` that holds them (``result.json``, ``rounds.csv``).

The accuracy metrics are defined in docs/harness.md ("Metrics") and computed in
:mod:`fl_harness.evaluation`; rounds that were not evaluated hold NaN (``null`` in
JSON, empty in CSV).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexassign._files import atomic_write, jsonable, write_json_atomic

from .config import ExperimentConfig

__all__ = ["EVAL_METRICS", "EXTRA_METRICS", "ExperimentResult", "HarnessRound"]

#: The evaluated accuracy metrics, in the order tables show them.
EVAL_METRICS = (
    "global_accuracy",
    "personal_accuracy",
    "newcomer_accuracy",
    "pool_accuracy",
    "expert_accuracy_mean",
    "expert_accuracy_min",
)

#: Further evaluated values: the plan-deployed accuracies (secondary fields under probe
#: deployment) and the planner's signal health (definitions: :mod:`.evaluation`).
EXTRA_METRICS = ("personal_accuracy_plan", "newcomer_accuracy_plan", "fitness_rank_corr")


@dataclass(frozen=True, kw_only=True)
class HarnessRound:
    """Metrics of one harness round (the Flower strategy's record is ``FlowerRoundRecord``).

    The six :data:`EVAL_METRICS` and the :data:`EXTRA_METRICS` are NaN in rounds that
    were not evaluated.
    ``expert_load`` counts this round's client-trainings per expert and
    ``utilization`` the cumulative ones; ``utilization_cv``/``utilization_var`` are
    their coefficient of variation (NaN before anything trained) and variance.
    ``diverged`` counts clients whose update was dropped because their loss or
    weights became non-finite. ``assignment_churn`` is the mean, over this round's
    trained clients that trained before, of the share of their experts that differ
    from their previous assignment (the ``churn`` of :mod:`flexassign.alignment.stability`).
    ``probe_*`` count this round's training-time probes (:class:`fl_harness.deploy.ProbeCost`):
    clients that probed, probed (client, expert) pairs, experts downloaded for the probe
    alone and their bytes, expert forward passes (probed experts x validation samples).
    """

    round: int
    selected: int
    dropped: int
    diverged: int
    global_accuracy: float
    personal_accuracy: float
    newcomer_accuracy: float
    pool_accuracy: float
    expert_accuracy_mean: float
    expert_accuracy_min: float
    personal_accuracy_plan: float
    newcomer_accuracy_plan: float
    fitness_rank_corr: float
    train_loss: float
    expert_load: tuple[int, ...]
    utilization: tuple[int, ...]
    utilization_cv: float
    utilization_var: float
    never_trained: int
    assignment_churn: float
    bytes_down: int
    bytes_up: int
    probe_clients: int
    probe_pairs: int
    probe_downloads: int
    probe_bytes: int
    probe_forward: int
    solve_time_s: float
    eval_time_s: float
    round_time_s: float
    elapsed_s: float

    @property
    def evaluated(self) -> bool:
        """Whether this round was evaluated."""
        return not math.isnan(self.global_accuracy) or not math.isnan(self.expert_accuracy_mean)

    def flat(self) -> dict[str, Any]:
        """A CSV row: per-expert tuples become ``load_e{e}`` / ``util_e{e}`` columns."""
        d = dataclasses.asdict(self)
        load, util = d.pop("expert_load"), d.pop("utilization")
        d.update({f"load_e{e}": v for e, v in enumerate(load)})
        d.update({f"util_e{e}": v for e, v in enumerate(util)})
        return d


def _resolved_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The planner options the run used (harness defaults included)."""
    from .federation import planner_kwargs

    opts = planner_kwargs(cfg)
    fit = opts.get("fitness")
    if fit is not None and not isinstance(fit, dict):
        opts["fitness"] = dataclasses.asdict(fit)
    return opts


def _mean_last(values: list[float], n: int) -> float:
    a = np.array([v for v in values if not math.isnan(v)], dtype=float)
    return float(a[-n:].mean()) if a.size else math.nan


@dataclass(frozen=True, kw_only=True, eq=False)
class ExperimentResult:
    """Outcome of :func:`~fl_harness.experiment.run_experiment`.

    Attributes
    ----------
    config : ExperimentConfig
    rounds : tuple of HarnessRound
    final_accuracy : float
        ``global_accuracy`` after the last round, in [0, 1].
    final_personalized_accuracy : float
        ``personal_accuracy`` after the last round (name kept for ``result.json``).
    utilization_cv, utilization_var : float
        Of the cumulative client-trainings per expert.
    rounds_to_target : int or None
        First round with global accuracy >= ``target_accuracy``.
    target_accuracy : float or None
    wall_time_s : float
    capacities : dict of str to int
        Each training client's capacity (max experts per round), as the planner
        derived it.
    newcomers : tuple of str
        The held-out clients.
    planner_utilization_cv : float or None
        The planner's own cumulative CV (counts reported trainings; None without one).
    final_state : dict
        The server's final global state dict (its ``router.*`` is the initial router:
        the server never receives client routers). Not written by :meth:`save`.
    """

    config: ExperimentConfig
    rounds: tuple[HarnessRound, ...]
    final_accuracy: float
    final_personalized_accuracy: float
    utilization_cv: float
    utilization_var: float
    rounds_to_target: int | None
    target_accuracy: float | None
    wall_time_s: float
    capacities: dict[str, int] = field(default_factory=dict)
    newcomers: tuple[str, ...] = ()
    planner_utilization_cv: float | None = None
    final_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def utilization(self) -> tuple[int, ...]:
        """Cumulative client-trainings per expert."""
        return self.rounds[-1].utilization

    @property
    def diverged_updates(self) -> int:
        """Client updates dropped over the run because they diverged."""
        return sum(r.diverged for r in self.rounds)

    def final(self, metric: str) -> float:
        """A metric of :data:`EVAL_METRICS` after the last round."""
        if metric not in EVAL_METRICS:
            raise ValueError(f"`metric` must be one of {list(EVAL_METRICS)}; got {metric!r}")
        return float(getattr(self.rounds[-1], metric))

    def curve(self, metric: str = "global_accuracy") -> np.ndarray:
        """A metric per round (NaN where not evaluated)."""
        return np.array([getattr(r, metric) for r in self.rounds], dtype=float)

    def accuracy_curve(self) -> np.ndarray:
        """Global accuracy per round (NaN where not evaluated)."""
        return self.curve("global_accuracy")

    def last_accuracy(self, n: int = 5, metric: str = "global_accuracy") -> float:
        """Mean of ``metric`` over the last ``n`` evaluated rounds."""
        return _mean_last(list(self.curve(metric)), n)

    def summary(self) -> dict[str, Any]:
        """The scalar results (the ``result.json`` contract fields and more)."""
        last = self.rounds[-1]
        churn = [r.assignment_churn for r in self.rounds if not math.isnan(r.assignment_churn)]
        out: dict[str, Any] = {
            "strategy": self.config.strategy,
            "dataset": self.config.dataset,
            "partition": self.config.partition,
            "seed": self.config.seed,
            "final_accuracy": self.final_accuracy,
            "final_personalized_accuracy": self.final_personalized_accuracy,
        }
        out.update({m: self.final(m) for m in EVAL_METRICS[1:]})
        out.update({m: float(getattr(last, m)) for m in EXTRA_METRICS})
        n = len(self.rounds)
        out.update({
            "last5_accuracy": self.last_accuracy(5),
            "utilization_cv": self.utilization_cv,
            "utilization_var": self.utilization_var,
            "planner_utilization_cv": self.planner_utilization_cv,
            "rounds_to_target": self.rounds_to_target,
            "target_accuracy": self.target_accuracy,
            "target_metric": self.config.target_metric,
            "planner_options_used": _resolved_options(self.config),
            "deploy": self.config.deploy,
            "never_trained": last.never_trained,
            "diverged_updates": self.diverged_updates,
            "mean_assignment_churn": float(np.mean(churn)) if churn else None,
            "churn": float(np.mean(churn)) if churn else None,
            "probe_downloads_per_round": sum(r.probe_downloads for r in self.rounds) / n,
            "probe_bytes_per_round": sum(r.probe_bytes for r in self.rounds) / n,
            "probe_forward_per_round": sum(r.probe_forward for r in self.rounds) / n,
            "probe_pairs_per_round": sum(r.probe_pairs for r in self.rounds) / n,
            "utilization": list(self.utilization),
            "bytes_down": sum(r.bytes_down for r in self.rounds),
            "bytes_up": sum(r.bytes_up for r in self.rounds),
            "mean_solve_time_s": float(np.mean([r.solve_time_s for r in self.rounds])),
            "eval_time_s": float(sum(r.eval_time_s for r in self.rounds)),
            "wall_time_s": self.wall_time_s,
        })
        return out

    def to_dict(self) -> dict[str, Any]:
        """Summary, config, capacities and every round (NaN written as null)."""
        d = self.summary()
        d["config"] = self.config.to_dict()
        d["capacities"] = dict(self.capacities)
        d["newcomers"] = list(self.newcomers)
        d["rounds"] = [dataclasses.asdict(r) for r in self.rounds]
        out: dict[str, Any] = jsonable(d)
        return out

    def save(self, out_dir: str | Path) -> Path:
        """Write ``result.json``, ``rounds.csv`` and ``config.json`` into ``out_dir``."""
        import pandas as pd

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "result.json", self.to_dict(), indent=2)
        csv = pd.DataFrame([r.flat() for r in self.rounds]).to_csv(index=False).encode()
        atomic_write(out / "rounds.csv", lambda fh: fh.write(csv))
        self.config.save(out / "config.json")
        return out
