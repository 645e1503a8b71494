"""Where ``auto`` should switch from ``flow`` to ``flow-warm``: both on a grid of sizes.

``auto``'s rule for count-based problems (``min_cost_flow_order`` in
``flexassign/backends/registry.py``) says from which size ``flow-warm`` goes first.
This times ``flow`` and ``flow-warm`` (its ``engine="auto"``) on each ``--sizes``
cell, for ``--seeds`` seeds from ``--first-seed``, in three cases: the speed suite's
round-2 count instance solved cold and with round 1's prices, and its k = 1 cell (one
expert per client, exact loads). Methods are interleaved in one process, best of
``--repeats`` each; both answers must have the same objective. It prints, per cell and
case, the mean over seeds of each method's best time and the ratio ``flow-warm`` /
``flow`` (below 1: ``flow-warm`` is faster), and the method ``auto`` picks. The default
seeds 40-42 are neither the speed suite's (0) nor the seed-spread scripts' (0-11,
100-119). Re-run it whenever either backend changes.

Run::

    .venv/bin/python -m benchmarks.crossover                          # the default grid
    .venv/bin/python -m benchmarks.crossover --sizes 1000x64,256x256 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from flexassign import AssignmentProblem, solve_assignment
from flexassign.solve import auto_method

from .instances import make_instance, parse_size
from .speed import DRIFT, TOLERANCE, _k1_problem, next_round

SIZES = (
    "200x8,500x8,2000x8,1000x4,130x32,300x16,1000x64,1000x128,3000x128,10000x64,"
    "64x128,100x256,200x128,256x256,500x256,1000x256,3000x256"
)


def _cases(n: int, e: int, seed: int) -> dict[str, tuple[AssignmentProblem, dict[str, Any]]]:
    p1 = make_instance(n, e, "count", seed=seed, tolerance=TOLERANCE).problem
    prices = solve_assignment(p1, method="flow-warm").stats["expert_prices"]
    p2 = next_round(p1, drift=DRIFT, seed=seed)
    return {
        "cold": (p2, {}),
        "priced": (p2, {"prices": prices}),
        "k1": (_k1_problem(n, e, seed), {}),
    }


def measure(
    sizes: list[tuple[int, int]], *, first_seed: int, seeds: int, repeats: int
) -> list[dict[str, Any]]:
    """One row per cell and case: mean best seconds of both methods, their ratio, and
    what ``auto`` picks."""
    rows = []
    for n, e in sizes:
        times: dict[str, dict[str, list[float]]] = {}
        picks: dict[str, str] = {}
        for seed in range(first_seed, first_seed + seeds):
            for case, (p, options) in _cases(n, e, seed).items():
                best = {"flow": float("inf"), "flow-warm": float("inf")}
                objective = {}
                for _ in range(repeats):
                    for method in best:
                        t0 = time.perf_counter()
                        res = solve_assignment(p, method=method, options=options)
                        best[method] = min(best[method], time.perf_counter() - t0)
                        objective[method] = res.objective
                a, b = objective["flow"], objective["flow-warm"]
                if abs(a - b) > 1e-7 * max(1.0, abs(a)):
                    raise AssertionError(f"{n}x{e} seed {seed} {case}: {a} != {b}")
                for method, t in best.items():
                    times.setdefault(case, {}).setdefault(method, []).append(t)
                picks[case] = auto_method(p, priced=bool(options))
        for case, by_method in times.items():
            flow = statistics.fmean(by_method["flow"])
            warm = statistics.fmean(by_method["flow-warm"])
            rows.append(
                {
                    "size": f"{n}x{e}",
                    "case": case,
                    "flow_ms": flow * 1e3,
                    "flow_warm_ms": warm * 1e3,
                    "ratio": warm / flow,
                    "auto": picks[case],
                }
            )
    return rows


def report(rows: list[dict[str, Any]], seeds: str, repeats: int) -> str:
    lines = [
        f"seeds {seeds}, mean of best of {repeats} (interleaved); ratio = flow-warm / flow",
        "size        case     flow(ms)  flow-warm(ms)  ratio  auto",
    ]
    for r in rows:
        lines.append(
            f"{r['size']:<11} {r['case']:<7} {r['flow_ms']:9.2f} {r['flow_warm_ms']:14.2f}"
            f" {r['ratio']:6.2f}  {r['auto']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.crossover", description=__doc__)
    ap.add_argument("--sizes", default=SIZES, help="comma-separated NxE list")
    ap.add_argument("--first-seed", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",")]
    except ValueError as exc:
        ap.error(f"`--sizes`: {exc}")
    if args.seeds < 1 or args.repeats < 1:
        ap.error("`--seeds` and `--repeats` must be >= 1")
    rows = measure(sizes, first_seed=args.first_seed, seeds=args.seeds, repeats=args.repeats)
    last = args.first_seed + args.seeds - 1
    print(report(rows, f"{args.first_seed}-{last}", args.repeats))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
