"""The FL-harness study behind docs/results.md, in one command.

    python examples/harness_study.py                      # the study (about 1 h, 2 workers)
    python examples/harness_study.py --smoke --out runs/smoke   # the same pipeline, tiny
    python examples/harness_study.py --lr-sweep --out runs/lr-sweep
    python examples/harness_study.py --tune --out runs/tune     # issue 9 D, tuning seeds
    python examples/harness_study.py --report-only        # re-write the report

The study runs MNIST-1D, digits and synthetic x {IID, Dirichlet 0.8, 4 classes per
client} x {default, starved} x {flex, greedy, random, balance} x seeds 0-4 (360 runs)
with two worker processes, one torch thread each. Every run is saved under
``OUT/<dataset>-<partition>-<regime>/<strategy>-s<seed>/`` (``result.json``,
``rounds.csv``, ``config.json``) and skipped when already there, so an interrupted
study resumes. ``OUT/report.md`` then holds the tables (mean ± std over seeds, paired
flex − greedy differences with 95% t-intervals, rounds to target, utilization CV and
variance) and ``OUT/*.png`` the plots.

Sizing (to fit about an hour on a shared 2-core machine): 25 rounds, evaluation every
5 rounds (so also after the last), the harness's default model and data sizes. Seeds 0-4 are the
evaluation seeds; seeds 100-102 (``--tune``, ``--lr-sweep``) are for choices and are
never used in the study.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATASETS = ("mnist1d", "digits", "synthetic")
PARTITIONS = ("iid", "dirichlet", "shards")
REGIMES = ("default", "starved")
STRATEGIES = ("flex", "greedy", "random", "balance")
EVAL_SEEDS = (0, 1, 2, 3, 4)
TUNING_SEEDS = (100, 101, 102)
ROUNDS = 25
EVAL_EVERY = 5
TUNE_ROUNDS = 30
METRICS = ("global_accuracy", "personal_accuracy", "newcomer_accuracy", "pool_accuracy",
           "expert_accuracy_mean", "expert_accuracy_min")
SHORT = {"final_accuracy": "global", "global_accuracy": "global", "personal_accuracy": "personal",
         "newcomer_accuracy": "newcomer", "pool_accuracy": "pool",
         "expert_accuracy_mean": "expert mean", "expert_accuracy_min": "expert min"}

Job = tuple[str, dict[str, Any]]   # (output folder, ExperimentConfig fields)


def _config(fields: dict[str, Any]) -> Any:
    from fl_harness.config import ExperimentConfig

    regime = fields.pop("regime", "default")
    return ExperimentConfig().with_regime(regime).replace(**fields)


def _run_job(job: Job) -> tuple[str, float]:
    """Run one experiment in a worker and save it (returns its folder and wall time)."""
    from fl_harness.experiment import run_experiment

    dest, fields = job
    t0 = time.perf_counter()
    res = run_experiment(_config(dict(fields)))
    res.save(dest)
    return dest, time.perf_counter() - t0


def run_jobs(jobs: Sequence[Job], workers: int) -> None:
    """Run the jobs not yet done, ``workers`` at a time, printing progress."""
    todo = [j for j in jobs if not (Path(j[0]) / "result.json").exists()]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done, {len(todo)} to run "
          f"with {workers} workers", flush=True)
    t0 = time.perf_counter()
    if workers <= 1:
        for i, j in enumerate(todo, 1):
            dest, wall = _run_job(j)
            print(f"[{i}/{len(todo)}] {dest} {wall:.1f}s", flush=True)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_job, j) for j in todo]
        for i, f in enumerate(as_completed(futures), 1):
            dest, wall = f.result()
            print(f"[{i}/{len(todo)}] {dest} {wall:.1f}s "
                  f"(elapsed {time.perf_counter() - t0:.0f}s)", flush=True)


def study_jobs(out: Path, *, datasets: Iterable[str] = DATASETS,
               partitions: Iterable[str] = PARTITIONS, regimes: Iterable[str] = REGIMES,
               strategies: Iterable[str] = STRATEGIES, seeds: Iterable[int] = EVAL_SEEDS,
               rounds: int = ROUNDS, eval_every: int = EVAL_EVERY,
               extra: dict[str, Any] | None = None) -> list[Job]:
    """One job per (dataset, partition, regime, strategy, seed), seed-major: if the study
    is cut short, every setting has the same first seeds."""
    jobs = []
    for seed in seeds:
        for ds in datasets:
            for regime in regimes:
                for part in partitions:
                    for st in strategies:
                        fields = {"dataset": ds, "partition": part, "alpha": 0.8,
                                  "classes_per_client": 4, "regime": regime, "strategy": st,
                                  "seed": seed, "rounds": rounds, "eval_every": eval_every,
                                  **(extra or {})}
                        jobs.append((str(out / f"{ds}-{part}-{regime}" / f"{st}-s{seed}"),
                                     fields))
    return jobs


# ----------------------------------------------------------------------------- analysis
def load_runs(out: Path) -> pd.DataFrame:
    """One row per saved run: setting, strategy, seed and its summary fields."""
    rows = []
    for f in sorted(out.glob("*/*/result.json")):
        d = json.loads(f.read_text())
        cfg = d["config"]
        setting = f.parent.parent.name
        row = {k: v for k, v in d.items() if not isinstance(v, list | dict)}
        row.update(setting=setting, run=f.parent.name, num_experts=cfg["num_experts"],
                   lr=cfg["lr"], feedback=cfg["feedback"],
                   planner_options=json.dumps(cfg["planner_options"]))
        rnds = d["rounds"]
        for m in METRICS:                     # mean of the last two evaluations
            vals = [r[m] for r in rnds if r[m] is not None]
            row[f"{m}_last2"] = float(np.mean(vals[-2:])) if vals else math.nan
        row["global_curve"] = [(r["round"], r["global_accuracy"]) for r in rnds
                               if r["global_accuracy"] is not None]
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(v: pd.Series) -> str:
    v = pd.to_numeric(v, errors="coerce").dropna()
    if v.empty:
        return "—"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def paired_ci(a: pd.Series, b: pd.Series) -> tuple[float, float, float, int]:
    """Mean of the per-seed differences a − b and its 95% t-interval."""
    from scipy import stats

    d = (a - b).dropna()
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(d.mean())
    if n == 1:
        return m, math.nan, math.nan, 1
    h = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return m, m - h, m + h, n


def _by_seed(df: pd.DataFrame, setting: str, strategy: str, col: str) -> pd.Series:
    s = df[(df.setting == setting) & (df.strategy == strategy)]
    return pd.to_numeric(s.set_index("seed")[col], errors="coerce")


def rounds_to_level(curve: list[tuple[int, float]], level: float) -> float:
    """First evaluated round whose global accuracy reaches ``level`` (NaN if never)."""
    for rnd, acc in curve:
        if acc >= level:
            return float(rnd)
    return math.nan


def report(df: pd.DataFrame, a: str = "flex", b: str = "greedy") -> str:
    """The markdown report: per setting, every metric as mean ± std and the paired
    difference ``a`` − ``b`` with its 95% interval; then the pooled claim checks."""
    lines = ["# Harness study report", "",
             "Accuracies are after the last round (`final`); paired differences are in "
             "points (x100), per seed, with 95% t-intervals.", ""]
    for setting in sorted(df.setting.unique()):
        sub = df[df.setting == setting]
        lines += [f"## {setting}", "",
                  "| strategy | n | " + " | ".join(SHORT[m] for m in METRICS)
                  + " | util. CV | util. var | rounds to target | diverged |",
                  "|---" * (len(METRICS) + 6) + "|"]
        for st in [s for s in (*STRATEGIES, "full") if s in set(sub.strategy)]:
            r = sub[sub.strategy == st]
            rtt = pd.to_numeric(r.rounds_to_target, errors="coerce")
            reached = int(rtt.notna().sum())
            rtt_s = (f"{rtt.mean():.1f} ({reached}/{len(r)})" if reached
                     else f"— (0/{len(r)})")
            lines.append(f"| {st} | {len(r)} | "
                         + " | ".join(_mean_std(r[m if m != 'global_accuracy'
                                                  else 'final_accuracy'])
                                      for m in METRICS)
                         + f" | {_mean_std(r.utilization_cv)} | "
                         f"{pd.to_numeric(r.utilization_var).mean():.1f} | {rtt_s} | "
                         f"{int(r.diverged_updates.sum())} |")
        cells = []
        for m in METRICS:
            col = "final_accuracy" if m == "global_accuracy" else m
            d, lo, hi, n = paired_ci(_by_seed(df, setting, a, col), _by_seed(df, setting, b, col))
            cells.append(f"{SHORT[m]} {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                         if n > 1 else f"{SHORT[m]} n/a")
        lines += ["", f"**{a} − {b}** (n={n}): " + "; ".join(cells), ""]
    lines += pooled(df) + compact(df, a, b) + compact(df, a, "balance") + claims(df, a, b)
    return "\n".join(lines) + "\n"


def _col(m: str) -> str:
    return "final_accuracy" if m == "global_accuracy" else m


def pooled(df: pd.DataFrame) -> list[str]:
    """Mean of each metric over settings and seeds, per dataset, regime and strategy."""
    out = ["## Pooled over partitions and seeds (mean)", "",
           "| dataset | regime | strategy | " + " | ".join(SHORT[m] for m in METRICS)
           + " | util. CV |", "|---" * (len(METRICS) + 4) + "|"]
    d = df.assign(dataset=df.setting.str.split("-").str[0],
                  regime=df.setting.str.split("-").str[-1])
    for (ds, regime), sub in d.groupby(["dataset", "regime"]):
        for st in [s for s in STRATEGIES if s in set(sub.strategy)]:
            r = sub[sub.strategy == st]
            out.append(f"| {ds} | {regime} | {st} | "
                       + " | ".join(f"{pd.to_numeric(r[_col(m)]).mean():.3f}" for m in METRICS)
                       + f" | {pd.to_numeric(r.utilization_cv).mean():.3f} |")
    return [*out, ""]


def compact(df: pd.DataFrame, a: str, b: str) -> list[str]:
    """Paired ``a`` − ``b`` per setting (points, 95% interval), the four client metrics
    and the worst expert; a bold cell's interval excludes 0."""
    ms = ("global_accuracy", "personal_accuracy", "newcomer_accuracy", "pool_accuracy",
          "expert_accuracy_min")
    out = [f"## {a} − {b}, paired by seed (points, 95% interval)", "",
           "| setting | n | " + " | ".join(SHORT[m] for m in ms) + " |",
           "|---" * (len(ms) + 2) + "|"]
    for setting in sorted(df.setting.unique()):
        cells, n = [], 0
        for m in ms:
            d, lo, hi, n = paired_ci(_by_seed(df, setting, a, _col(m)),
                                     _by_seed(df, setting, b, _col(m)))
            txt = f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if n > 1 else "n/a"
            cells.append(f"**{txt}**" if n > 1 and (lo > 0 or hi < 0) else txt)
        out.append(f"| {setting} | {n} | " + " | ".join(cells) + " |")
    return [*out, ""]


def claims(df: pd.DataFrame, a: str = "flex", b: str = "greedy") -> list[str]:
    """The seeds' three claims, checked against defined metrics, pooled over settings.

    1. accuracy: mean paired difference a − b in points, per metric;
    2. utilization variance: 1 − mean var(a) / mean var(b) per setting, then the median;
    3. rounds to converge: per setting, the level is 90% of b's mean final global
       accuracy; paired difference in first evaluated round reaching it (runs that never
       reach it count as ``rounds + eval_every``, i.e. censored just past the end).
    """
    out = ["## The three claims, pooled over settings", ""]
    for m in METRICS:
        col = "final_accuracy" if m == "global_accuracy" else m
        diffs = []
        for setting in df.setting.unique():
            x, y = _by_seed(df, setting, a, col), _by_seed(df, setting, b, col)
            diffs.extend((x - y).dropna().tolist())
        if diffs:
            d = pd.Series(diffs)
            _, lo, hi, n = paired_ci(d, pd.Series(0.0, index=d.index))
            out.append(f"- accuracy, {SHORT[m]}: {a} − {b} = {100 * d.mean():+.2f} points "
                       f"[{100 * lo:+.2f}, {100 * hi:+.2f}] over {n} paired runs; "
                       f"{a} ahead in {int((d > 0).sum())}, behind in {int((d < 0).sum())}")
    red = []
    for setting in df.setting.unique():
        va = pd.to_numeric(df[(df.setting == setting) & (df.strategy == a)].utilization_var)
        vb = pd.to_numeric(df[(df.setting == setting) & (df.strategy == b)].utilization_var)
        if len(va) and len(vb) and vb.mean() > 0:
            red.append(1 - va.mean() / vb.mean())
    if red:
        out.append(f"- utilization variance: {a} lower than {b} by {100 * np.median(red):.1f}% "
                   f"(median over {len(red)} settings; range {100 * min(red):.1f}% to "
                   f"{100 * max(red):.1f}%)")
    rel = []
    for setting in df.setting.unique():
        sa = df[(df.setting == setting) & (df.strategy == a)].set_index("seed")
        sb = df[(df.setting == setting) & (df.strategy == b)].set_index("seed")
        seeds = sorted(set(sa.index) & set(sb.index))
        if not seeds:
            continue
        level = 0.9 * float(pd.to_numeric(sb.final_accuracy).mean())
        cap = float(sa.config_rounds.iloc[0] + sa.config_eval_every.iloc[0]) \
            if "config_rounds" in sa else math.nan
        ra = [rounds_to_level(sa.loc[s, "global_curve"], level) for s in seeds]
        rb = [rounds_to_level(sb.loc[s, "global_curve"], level) for s in seeds]
        ra = [cap if math.isnan(v) else v for v in ra]
        rb = [cap if math.isnan(v) else v for v in rb]
        if np.mean(rb) > 0:
            rel.append(np.mean(ra) / np.mean(rb) - 1)
    if rel:
        out.append(f"- rounds to 90% of {b}'s final global accuracy: {a} needs "
                   f"{100 * np.median(rel):+.0f}% rounds vs {b} (median over {len(rel)} "
                   f"settings; range {100 * min(rel):+.0f}% to {100 * max(rel):+.0f}%)")
    return [*out, ""]


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    """``overview-<metric>.png``: mean ± std per setting and strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    settings = sorted(df.setting.unique())
    strategies = [s for s in STRATEGIES if s in set(df.strategy)]
    for m in (*METRICS, "utilization_cv"):
        col = "final_accuracy" if m == "global_accuracy" else m
        fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(settings)), 4.2))
        w = 0.8 / max(len(strategies), 1)
        x = np.arange(len(settings))
        for i, st in enumerate(strategies):
            g = df[df.strategy == st].groupby("setting")[col]
            mean = g.mean().reindex(settings)
            std = g.std().reindex(settings)
            ax.bar(x + (i - (len(strategies) - 1) / 2) * w, mean, w, yerr=std, label=st,
                   capsize=2)
        ax.set_xticks(x, [s.replace("-", "\n") for s in settings], fontsize=7)
        ax.set_title(f"{SHORT.get(m, m)} (final round, mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(strategies))
        fig.tight_layout()
        files.append(out / f"overview-{m}.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    return files


def write_report(out: Path) -> None:
    """``report.md``, ``runs.csv`` and the plots from the saved runs."""
    df = load_runs(out)
    if df.empty:
        print(f"no runs under {out}")
        return
    cfgs = {f.parent.parent.name: json.loads(f.read_text())
            for f in out.glob("*/*/config.json")}
    df["config_rounds"] = df.setting.map(lambda s: cfgs[s]["rounds"])
    df["config_eval_every"] = df.setting.map(lambda s: cfgs[s]["eval_every"])
    df.drop(columns=["global_curve"]).to_csv(out / "runs.csv", index=False)
    text = report(df)
    (out / "report.md").write_text(text)
    plots(df, out)
    print(text)


# ----------------------------------------------------------------------------- modes
def lr_sweep_jobs(out: Path) -> list[Job]:
    """The ``full`` reference per dataset at three learning rates, tuning seeds."""
    jobs = []
    for ds in DATASETS:
        for lr in (0.02, 0.05, 0.1):
            for seed in TUNING_SEEDS:
                jobs.append((str(out / f"{ds}-lr{lr}" / f"full-s{seed}"),
                             {"dataset": ds, "strategy": "full", "lr": lr, "seed": seed,
                              "rounds": TUNE_ROUNDS, "eval_every": EVAL_EVERY}))
    return jobs


#: Issue 9 C/D candidates, compared on the tuning seeds only and on digits only
#: (Dirichlet and shards, both regimes); MNIST-1D, synthetic and seeds 0-4 stay unseen.
TUNE_VARIANTS: dict[str, dict[str, Any]] = {
    "flex": {"strategy": "flex"},
    "balance": {"strategy": "balance"},
    "greedy": {"strategy": "greedy"},
    "flex-expert-feedback": {"strategy": "flex", "feedback": "expert"},
    "greedy-expert-feedback": {"strategy": "greedy", "feedback": "expert"},
    "flex-no-exploration": {"strategy": "flex",
                            "planner_options": (("fitness", {"exploration": 0.0}),)},
    "flex-tol0.5": {"strategy": "flex", "tolerance": 0.5},
    "flex-no-deficit": {"strategy": "flex", "planner_options": (("deficit_shift", 0.0),)},
    "flex-tol0.5-no-exploration": {
        "strategy": "flex", "tolerance": 0.5,
        "planner_options": (("fitness", {"exploration": 0.0}),)},
}


def tune_jobs(out: Path, variants: Sequence[str]) -> list[Job]:
    """The tuning runs: digits, seeds 100-102, both regimes, Dirichlet and shards."""
    jobs = []
    for seed in TUNING_SEEDS:
        for regime in REGIMES:
            for part in ("dirichlet", "shards"):
                for name in variants:
                    fields = {"dataset": "digits", "partition": part, "regime": regime,
                              "seed": seed, "rounds": TUNE_ROUNDS, "eval_every": EVAL_EVERY,
                              **TUNE_VARIANTS[name]}
                    jobs.append((str(out / f"digits-{part}-{regime}" / f"{name}-s{seed}"),
                                 fields))
    return jobs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/study"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--smoke", action="store_true",
                   help="the same grid, tiny: 2 rounds, seed 0 (checks the pipeline)")
    p.add_argument("--lr-sweep", action="store_true", help="the learning-rate sweep on full")
    p.add_argument("--tune", nargs="*", metavar="VARIANT",
                   help=f"issue 9 D tuning runs (seeds {TUNING_SEEDS}); variants: "
                        f"{list(TUNE_VARIANTS)} (default all)")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    if a.lr_sweep:
        jobs = lr_sweep_jobs(a.out)
    elif a.tune is not None:
        jobs = tune_jobs(a.out, a.tune or list(TUNE_VARIANTS))
    elif a.smoke:
        jobs = study_jobs(a.out, seeds=(0,), rounds=2, eval_every=1)
    else:
        jobs = study_jobs(a.out)
    if not a.report_only:
        run_jobs(jobs, a.workers)
    if a.lr_sweep or a.tune is not None:
        summarize_variants(a.out)
    else:
        write_report(a.out)
    print(f"total wall time {time.perf_counter() - t0:.0f}s")


#: Paired comparisons printed for the tuning runs (variant a − variant b, per seed and
#: setting).
TUNE_PAIRS = (("flex", "balance"), ("flex", "greedy"), ("flex-expert-feedback", "flex"),
              ("greedy-expert-feedback", "greedy"), ("flex-no-exploration", "flex"),
              ("flex-tol0.5", "flex"), ("flex-no-deficit", "flex"))


def summarize_variants(out: Path) -> None:
    """Mean final metrics per regime and variant, and the paired :data:`TUNE_PAIRS`
    (written to ``summary.txt``; for the sweep and the tuning runs)."""
    df = load_runs(out)
    if df.empty:
        return
    df["variant"] = df.run.str.replace(r"-s\d+$", "", regex=True)
    df["regime"] = df.setting.str.split("-").str[-1]
    cols = ["final_accuracy", "personal_accuracy", "newcomer_accuracy", "pool_accuracy",
            "expert_accuracy_mean", "expert_accuracy_min", "utilization_cv",
            "diverged_updates"]
    lines = [df.groupby(["setting", "variant"])[cols].mean().round(3).to_string(), "",
             df.groupby(["regime", "variant"])[cols].mean().round(3).to_string(), ""]
    for a, b in TUNE_PAIRS:
        if not {a, b} <= set(df.variant):
            continue
        cells = []
        for m in cols[:5]:
            x = df[df.variant == a].set_index(["setting", "seed"])[m]
            y = df[df.variant == b].set_index(["setting", "seed"])[m].reindex(x.index)
            d, lo, hi, n = paired_ci(x, y)
            cells.append(f"{SHORT.get(m, m)} {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
        lines.append(f"{a} − {b} (n={n}): " + "; ".join(cells))
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
