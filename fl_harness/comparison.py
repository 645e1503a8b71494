"""Run several strategies x seeds on one setting and summarize them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flexassign._files import jsonable, write_json_atomic

from .config import ExperimentConfig
from .data import load_dataset
from .experiment import run_experiment
from .results import EVAL_METRICS, ExperimentResult

__all__ = ["CompareResult", "compare", "format_table"]


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


@dataclass(frozen=True, eq=False)
class CompareResult:
    """All runs of a comparison, keyed by ``(strategy, seed)``."""

    base: ExperimentConfig
    runs: dict[tuple[str, int], ExperimentResult]

    @property
    def strategies(self) -> list[str]:
        """Strategies in run order."""
        return list(dict.fromkeys(s for s, _ in self.runs))

    def rounds_frame(self) -> pd.DataFrame:
        """Every round of every run, one row each."""
        rows = []
        for (s, seed), r in self.runs.items():
            for rec in r.rounds:
                rows.append({"strategy": s, "seed": seed, **rec.flat()})
        return pd.DataFrame(rows)

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with its scalar results."""
        rows = []
        for r in self.runs.values():
            d = r.summary()
            d["utilization"] = " ".join(str(u) for u in d["utilization"])
            d["planner_options_used"] = json.dumps(jsonable(d["planner_options_used"]))
            rows.append(d)
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Per strategy: mean and sample std over seeds of the key metrics."""
        rows = []
        for s in self.strategies:
            rs = [r for (k, _), r in self.runs.items() if k == s]
            row: dict[str, Any] = {"strategy": s, "seeds": len(rs)}
            for name, vals in (
                ("final_accuracy", [r.final_accuracy for r in rs]),
                *((m, [r.final(m) for r in rs]) for m in EVAL_METRICS[1:]),
                ("last5_accuracy", [r.last_accuracy(5) for r in rs]),
                ("utilization_cv", [r.utilization_cv for r in rs]),
                ("utilization_var", [r.utilization_var for r in rs]),
                ("diverged_updates", [float(r.diverged_updates) for r in rs]),
                ("wall_time_s", [r.wall_time_s for r in rs]),
            ):
                m, sd, _ = _mean_std(vals)
                row[f"{name}_mean"], row[f"{name}_std"] = m, sd
            rtt = [r.rounds_to_target for r in rs]
            m, sd, n = _mean_std([float(x) for x in rtt if x is not None])
            row["rounds_to_target_mean"], row["rounds_to_target_std"] = m, sd
            row["reached_target"] = n
            row["never_trained_mean"] = float(np.mean([r.rounds[-1].never_trained for r in rs]))
            rows.append(row)
        return pd.DataFrame(rows)

    def save(self, out_dir: str | Path, *, plots: bool = True) -> Path:
        """Write ``summary.csv``, ``summary.json``, ``runs.csv``, ``rounds.csv``,
        ``config.json``, each run's ``runs/<strategy>-s<seed>/`` and the plots."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summ = self.summary()
        summ.to_csv(out / "summary.csv", index=False)
        write_json_atomic(out / "summary.json", {
            "config": self.base.to_dict(),
            "summary": json.loads(summ.to_json(orient="records")),
            "table": format_table(self)}, indent=2)
        self.runs_frame().to_csv(out / "runs.csv", index=False)
        self.rounds_frame().to_csv(out / "rounds.csv", index=False)
        self.base.save(out / "config.json")
        for (s, seed), r in self.runs.items():
            r.save(out / "runs" / f"{s}-s{seed}")
        if plots:
            from .plots import plot_compare

            plot_compare(self, out)
        return out


def format_table(result: CompareResult) -> str:
    """A plain-text summary table: every metric after the last round, mean +- sample std
    over seeds (``div.`` = diverged updates over all seeds)."""
    summ = result.summary()
    target = result.base.resolved_target
    head = (f"{'strategy':<13} {'seeds':>5}  {'global acc':>13}  {'personal':>13}  "
            f"{'newcomer':>13}  {'pool':>13}  {'expert mean':>13}  {'expert min':>13}  "
            f"{'rounds to ' + (f'{target:.2f}' if target is not None else 'target'):>18}  "
            f"{'util. CV':>13}  {'div.':>4}  {'time/run':>8}")
    lines = [head, "-" * len(head)]
    for _, r in summ.iterrows():
        rtt = (f"{r.rounds_to_target_mean:5.1f} +- {r.rounds_to_target_std:4.1f} "
               f"({int(r.reached_target)}/{int(r.seeds)})"
               if r.reached_target else f"{'never':>11} (0/{int(r.seeds)})")
        accs = "  ".join(f"{r[f'{m}_mean']:.3f}+-{r[f'{m}_std']:.3f}"
                         for m in ("final_accuracy", *EVAL_METRICS[1:]))
        lines.append(
            f"{r.strategy:<13} {int(r.seeds):>5}  {accs}  {rtt:>18}  "
            f"{r.utilization_cv_mean:.3f}+-{r.utilization_cv_std:.3f}  "
            f"{int(r.diverged_updates_mean * r.seeds):>4}  {r.wall_time_s_mean:7.1f}s"
        )
    return "\n".join(lines)


def compare(
    base: ExperimentConfig,
    *,
    strategies: Sequence[str] = ("flex", "greedy", "random"),
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = False,
    on_run: Callable[[ExperimentResult], None] | None = None,
) -> CompareResult:
    """Run ``base`` for every strategy and seed (the dataset is loaded once).

    Parameters
    ----------
    base : ExperimentConfig
        Shared settings; ``strategy`` and ``seed`` are overridden per run.
    strategies, seeds : sequence
        What to run.
    progress : bool
        Show progress bars (over runs and over rounds).
    on_run : callable, optional
        Called with each finished run.

    Returns
    -------
    CompareResult
    """
    data = load_dataset(base.dataset, seed=base.data_seed, num_samples=base.num_samples,
                        path=base.dataset_path, domains=base.num_domains)
    runs: dict[tuple[str, int], ExperimentResult] = {}
    jobs = [(s, int(seed)) for seed in seeds for s in strategies]
    bar = None
    if progress:
        from flexassign._cli import progress as progress_bar  # tqdm on a TTY, plain lines else

        bar = progress_bar(len(jobs), "runs")
    for s, seed in jobs:
        r = run_experiment(base.replace(strategy=s, seed=seed), dataset=data,
                           progress=progress)
        runs[(s, seed)] = r
        if on_run is not None:
            on_run(r)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    ordered = {(s, seed): runs[(s, seed)] for s in strategies for seed in seeds}
    return CompareResult(base=base, runs=ordered)
