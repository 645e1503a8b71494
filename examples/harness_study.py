"""The FL-harness study behind docs/results.md.

Runs ``fl-harness compare`` (strategies x seeds) for every built-in dataset under
Dirichlet(0.8) and 4-classes-per-client partitions, writing one folder per setting
under ``--out`` (default ``runs/study``); settings already done are skipped, so the
study can be resumed. Then ``--report`` prints the markdown tables used in results.md.

    python examples/harness_study.py --out runs/study
    python examples/harness_study.py --out runs/study --report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from fl_harness.compare import compare, format_table
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
        cfg = json.loads((out / f"{ds}-{part}" / "config.json").read_text())
        print(f"\n(target accuracy {cfg.get('target_accuracy')}, rounds {cfg['rounds']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/study"))
    p.add_argument("--strategies", nargs="+",
                   default=["flex", "greedy", "desirability", "random", "full"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.report:
        report(a.out)
    else:
        run(a.out, a.strategies, a.seeds, a.rounds)


if __name__ == "__main__":
    main()
