"""Why does (or doesn't) flex beat greedy in the harness? Variants of the default
MNIST-1D / Dirichlet(0.8) setting that change one thing each: the planner's balance
tolerance, exploration, the fitness signal, the number of rounds, a capacity-starved
device mix, evaluation over all experts, and (on digits) wider experts. Results feed
the "Investigation" section of docs/results.md.

    python examples/harness_investigation.py --out runs/investigation [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fl_harness.comparison import compare, format_table
from fl_harness.experiment import ExperimentConfig

BASE = ExperimentConfig(dataset="mnist1d", partition="dirichlet", alpha=0.8, rounds=40)

VARIANTS: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("flex-tolerance-0.3", ("flex",), {"tolerance": 0.3}),
    ("no-exploration", ("flex", "greedy"),
     {"planner_options": (("fitness", {"exploration": 0.0}),)}),
    ("loss-signal", ("flex", "greedy"),
     {"planner_options": (("fitness", {"signal": "loss"}),)}),
    ("phones-only", ("flex", "greedy"),
     {"device_mix": (("low-end-phone", 0.7), ("high-end-phone", 0.3))}),
    ("80-rounds", ("flex", "greedy"), {"rounds": 80}),
    ("eval-all-experts", ("flex", "greedy"), {"eval_experts": "all"}),
    ("no-exploration-phones", ("flex", "greedy"),
     {"planner_options": (("fitness", {"exploration": 0.0}),),
      "device_mix": (("low-end-phone", 0.7), ("high-end-phone", 0.3))}),
    # model size, on digits (fast): experts 4x wider than the default 64
    ("digits-wide-experts", ("flex", "greedy"), {"dataset": "digits", "expert_hidden": 256}),
    ("mnist1d-wide-experts", ("flex", "greedy"), {"expert_hidden": 256}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/investigation"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--only", nargs="*", help="variant names to run")
    a = p.parse_args()
    for name, strategies, changes in VARIANTS:
        if a.only and name not in a.only:
            continue
        dest = a.out / name
        if (dest / "summary.csv").exists():
            print(f"skip {name} (done)")
            continue
        t0 = time.perf_counter()
        res = compare(BASE.replace(**changes), strategies=strategies, seeds=a.seeds)
        res.save(dest)
        print(f"\n== {name} ({time.perf_counter() - t0:.0f}s)\n{format_table(res)}", flush=True)


if __name__ == "__main__":
    main()
