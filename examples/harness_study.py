"""The FL-harness study behind docs/results.md.

Runs ``fl-harness compare`` (strategies x seeds) for every built-in dataset under
Dirichlet(0.8) and 4-classes-per-client partitions, writing one folder per setting
under ``--out`` (default ``runs/study``); settings already done are skipped, so the
study can be resumed. Then ``--report`` prints the markdown tables used in results.md.

    python examples/harness_study.py --out runs/study
    python examples/harness_study.py --out runs/study --report \
        --overview docs/results/overview.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from fl_harness.comparison import compare, format_table
from fl_harness.experiment import ExperimentConfig

SETTINGS = [
    (ds, part) for ds in ("mnist1d", "digits", "synthetic") for part in ("dirichlet", "shards")
]


def run(out: Path, strategies: list[str], seeds: list[int], rounds: int) -> None:
    for ds, part in SETTINGS:
        dest = out / f"{ds}-{part}"
        if (dest / "summary.csv").exists():
            print(f"skip {dest} (done)")
            continue
        cfg = ExperimentConfig(dataset=ds, partition=part, alpha=0.8, classes_per_client=4,
                               rounds=rounds)
        t0 = time.perf_counter()
        res = compare(cfg, strategies=strategies, seeds=seeds)
        res.save(dest)
        print(f"\n== {ds} / {part} ({time.perf_counter() - t0:.0f}s)\n{format_table(res)}",
              flush=True)


def report(out: Path) -> None:
    for ds, part in SETTINGS:
        f = out / f"{ds}-{part}" / "summary.csv"
        if not f.exists():
            continue
        s = pd.read_csv(f)
        print(f"\n### {ds}, {part}\n")
        print("| strategy | final acc | last-5 acc | pers. acc | rounds to target "
              "(reached) | util. CV | util. var |")
        print("|---|---|---|---|---|---|---|")
        for _, r in s.iterrows():
            rtt = (f"{r.rounds_to_target_mean:.1f} ± {r.rounds_to_target_std:.1f} "
                   f"({int(r.reached_target)}/{int(r.seeds)})" if r.reached_target
                   else f"— (0/{int(r.seeds)})")
            print(f"| {r.strategy} | {r.final_accuracy_mean:.3f} ± {r.final_accuracy_std:.3f} "
                  f"| {r.last5_accuracy_mean:.3f} ± {r.last5_accuracy_std:.3f} "
                  f"| {r.personalized_accuracy_mean:.3f} ± {r.personalized_accuracy_std:.3f} "
                  f"| {rtt} | {r.utilization_cv_mean:.3f} ± {r.utilization_cv_std:.3f} "
                  f"| {r.utilization_var_mean:.0f} ± {r.utilization_var_std:.0f} |")
        cfg = ExperimentConfig.load(out / f"{ds}-{part}" / "config.json")
        print(f"\n(target accuracy {cfg.resolved_target}, {cfg.rounds} rounds)")
        paired(out / f"{ds}-{part}")


def paired(setting: Path, a: str = "flex", b: str = "greedy") -> None:
    """Per-seed differences a - b (same seed = same partition, capacities and init)."""
    runs = pd.read_csv(setting / "runs.csv")
    x = runs[runs.strategy == a].set_index("seed")
    y = runs[runs.strategy == b].set_index("seed")
    seeds = sorted(set(x.index) & set(y.index))
    if not seeds:
        return
    d_acc = (x.loc[seeds, "last5_accuracy"] - y.loc[seeds, "last5_accuracy"]) * 100
    d_pers = (x.loc[seeds, "final_personalized_accuracy"]
              - y.loc[seeds, "final_personalized_accuracy"]) * 100
    var_red = 1 - x.loc[seeds, "utilization_var"] / y.loc[seeds, "utilization_var"]
    # convergence: first round reaching 90% of the baseline's mean last-5 accuracy
    rounds = pd.read_csv(setting / "rounds.csv")
    level = 0.9 * float(y.loc[seeds, "last5_accuracy"].mean())

    def first(strategy: str, seed: int) -> float:
        r = rounds[(rounds.strategy == strategy) & (rounds.seed == seed)]
        hit = r[r.global_accuracy >= level]["round"]
        return float(hit.iloc[0]) if len(hit) else float("nan")

    ra = pd.Series([first(a, sd) for sd in seeds], index=seeds)
    rb = pd.Series([first(b, sd) for sd in seeds], index=seeds)
    rtt = (ra - rb).dropna()
    print(f"\n{a} - {b}, paired by seed ({len(seeds)} seeds): last-5 accuracy "
          f"{d_acc.mean():+.1f} ± {d_acc.std():.1f} points (per seed "
          f"{', '.join(f'{v:+.1f}' for v in d_acc)}); personalized "
          f"{d_pers.mean():+.1f} ± {d_pers.std():.1f} points; utilization variance "
          f"{100 * var_red.mean():.2f}% lower; rounds to {level:.3f} (90% of {b}'s "
          f"last-5 accuracy): {a} {ra.mean():.1f}, {b} {rb.mean():.1f}, paired "
          + (f"{rtt.mean():+.1f} ± {rtt.std():.1f}" if len(rtt) else "n/a"))


def overview(out: Path, dest: Path) -> None:
    """One figure: last-5-round accuracy and final utilization CV per setting and
    strategy (mean +- std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    frames = []
    for ds, part in SETTINGS:
        f = out / f"{ds}-{part}" / "summary.csv"
        if f.exists():
            s = pd.read_csv(f)
            s["setting"] = f"{ds}\n{part}"
            frames.append(s)
    if not frames:
        return
    df = pd.concat(frames)
    settings = list(dict.fromkeys(df.setting))
    strategies = list(dict.fromkeys(df.strategy))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    w = 0.8 / len(strategies)
    x = np.arange(len(settings))
    for i, st in enumerate(strategies):
        d = df[df.strategy == st].set_index("setting").reindex(settings)
        off = (i - (len(strategies) - 1) / 2) * w
        axes[0].bar(x + off, d.last5_accuracy_mean, w, yerr=d.last5_accuracy_std,
                    label=st, capsize=2)
        axes[1].bar(x + off, d.utilization_cv_mean.clip(lower=1e-4), w,
                    yerr=d.utilization_cv_std, label=st, capsize=2)
    for ax, title in zip(axes, ("global accuracy, mean of last 5 rounds",
                                "utilization CV after the last round"), strict=True):
        ax.set_xticks(x, settings, fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8, ncol=len(strategies), loc="lower left")
    axes[1].set_title("utilization CV after the last round (full: 0, drawn at 1e-4)",
                      fontsize=10)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/study"))
    p.add_argument("--strategies", nargs="+",
                   default=["flex", "greedy", "desirability", "random", "full"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--report", action="store_true")
    p.add_argument("--overview", type=Path, help="write the overview PNG here")
    a = p.parse_args()
    if not (a.overview or a.report):
        run(a.out, a.strategies, a.seeds, a.rounds)
    if a.overview:
        overview(a.out, a.overview)
    if a.report:
        report(a.out)


if __name__ == "__main__":
    main()
