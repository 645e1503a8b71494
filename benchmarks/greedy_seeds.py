"""``auto`` against greedy over many seeds of one size, cold and warm (round 2).

The speed suite (``python -m benchmarks --speed``) times one seed per cell, and whether
``flow-warm`` certifies in one round or needs a second depends on the instance (at
10,000 x 256 a second round adds about 40 % to a warm solve). This runs the suite's
round-2 cell (:func:`benchmarks.speed.next_round`: round 1's fitness plus drift, round
1's ``stats["expert_prices"]`` handed to the warm solve) for ``--seeds`` seeds from
``--first-seed``, interleaved in one process (best of ``--repeats`` per method and
seed), checks every answer against the full network's optimum, and prints each seed's
ratios to greedy, the certificate rounds and a summary (median, mean, worst, and how
many seeds meet a ratio).

The constants of ``flow-warm`` (open-set share, refinement steps) were tuned on seeds
1-14 of these instances; the default seeds 100-119 were never used for tuning.

Run::

    .venv/bin/python -m benchmarks.greedy_seeds                     # 10000x256, seeds 100-119
    .venv/bin/python -m benchmarks.greedy_seeds --size 100000x64 --seeds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from flexassign import solve_assignment

from .instances import make_instance, size_arg
from .speed import DRIFT, TOLERANCE, next_round

#: The ratios the issue asks for at 10,000 x 256 (cold, warm).
TARGETS = {"cold": 3.0, "warm": 2.0}


def measure(n: int, e: int, *, first_seed: int, seeds: int, repeats: int) -> dict[str, Any]:
    """Per seed: best seconds of greedy and of ``auto`` cold and warm, ratios, rounds."""
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        p1 = make_instance(n, e, "count", seed=seed, tolerance=TOLERANCE).problem
        prices = solve_assignment(p1, method="flow-warm").stats["expert_prices"]
        p2 = next_round(p1, drift=DRIFT, seed=seed)
        ref = solve_assignment(p2, method="flow").objective
        runs = {
            "greedy": lambda p=p2: solve_assignment(p, method="greedy"),
            "cold": lambda p=p2: solve_assignment(p, method="auto"),
            "warm": lambda p=p2, q=prices: solve_assignment(
                p, method="auto", options={"prices": q}
            ),
        }
        best = {m: float("inf") for m in runs}
        last: dict[str, Any] = {}
        for _ in range(repeats):
            for name, run in runs.items():
                t0 = time.perf_counter()
                last[name] = run()
                best[name] = min(best[name], time.perf_counter() - t0)
        row: dict[str, Any] = {"seed": seed, "greedy": best["greedy"]}
        for mode in ("cold", "warm"):
            res = last[mode]
            if abs(res.objective - ref) > 1e-6 * max(1.0, abs(ref)):
                raise AssertionError(f"seed {seed} {mode}: {res.objective} != optimum {ref}")
            row[mode] = best[mode]
            row[f"{mode}_ratio"] = best[mode] / best["greedy"]
            row[f"{mode}_method"] = res.method
            row[f"{mode}_rounds"] = res.stats.get("rounds")
        rows.append(row)
    summary = {}
    for mode in ("cold", "warm"):
        ratios = [r[f"{mode}_ratio"] for r in rows]
        summary[mode] = {
            "median": statistics.median(ratios),
            "mean": statistics.fmean(ratios),
            "worst": max(ratios),
            "met": sum(x <= TARGETS[mode] for x in ratios),
        }
    return {"size": f"{n}x{e}", "repeats": repeats, "rows": rows, "summary": summary}


def report(result: dict[str, Any]) -> str:
    """The per-seed table and the summary as text."""
    lines = [
        f"{result['size']}, best of {result['repeats']} (interleaved); ratio = auto / greedy",
        "seed  greedy(s)  cold(s)  ratio  rounds  warm(s)  ratio  rounds",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['seed']:4d}  {r['greedy']:9.4f}  {r['cold']:7.4f}  {r['cold_ratio']:5.2f}"
            f"  {r['cold_rounds']!s:>6}  {r['warm']:7.4f}  {r['warm_ratio']:5.2f}"
            f"  {r['warm_rounds']!s:>6}"
        )
    n = len(result["rows"])
    for mode, s in result["summary"].items():
        lines.append(
            f"{mode}: median {s['median']:.2f}x, mean {s['mean']:.2f}x, worst {s['worst']:.2f}x;"
            f" <= {TARGETS[mode]:g}x on {s['met']} of {n} seeds"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.greedy_seeds", description=__doc__)
    ap.add_argument("--size", default="10000x256", type=size_arg, help="NxE (default 10000x256)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the result as JSON")
    args = ap.parse_args(argv)
    n, e = args.size
    if args.seeds < 1 or args.repeats < 1:
        ap.error("`--seeds` and `--repeats` must be >= 1")
    result = measure(n, e, first_seed=args.first_seed, seeds=args.seeds, repeats=args.repeats)
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
