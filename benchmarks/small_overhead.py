"""Fixed overhead of one small ``solve_assignment`` call against a raw OR-Tools solve.

Issue 12: at 10 clients x 8 experts ``method="auto"`` cost about 285 us against about
52 us for OR-Tools' ``SimpleMinCostFlow`` on the same network, the rest being fixed
Python overhead (validation, backend choice, network building, verification). This
times both (and ``auto`` with the problem's cached derived values dropped before each
call, as on a problem's first solve), interleaved in one process (best and median of
``--repeats`` batches of ``--number`` calls each; the machine is shared, so the best is
the overhead and the median shows the noise), and checks that both reach the same
optimum.

Run::

    .venv/bin/python -m benchmarks.small_overhead                # 10 x 8, capacity 2
    .venv/bin/python -m benchmarks.small_overhead --size 100x8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

import numpy as np

from flexassign import AssignmentProblem, solve_assignment

from . import peers
from .instances import size_arg


def measure(n: int, e: int, *, number: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Best and median microseconds per call of ``auto`` and of the raw OR-Tools peer."""
    rng = np.random.default_rng([seed, n, e])
    problem = AssignmentProblem.balanced(rng.random((n, e)), capacity=2, tolerance=0.1)
    auto = solve_assignment(problem)
    raw = peers.ortools_full(problem)
    if not auto.success or abs(auto.objective - raw.objective) > 1e-9 * max(1.0, raw.objective):
        raise RuntimeError(f"auto {auto.objective} and OR-Tools {raw.objective} disagree")

    def first_solve() -> Any:
        # what the first solve of a new problem pays (a Planner round builds one):
        # the problem's cached derived values (count bounds, masks) are dropped first
        problem._cache.clear()
        return solve_assignment(problem)

    runs = {
        "auto": lambda: solve_assignment(problem),
        "auto-uncached": first_solve,
        "ortools-full": lambda: peers.ortools_full(problem),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timeit.timeit(fn, number=number) / number * 1e6)
    out: dict[str, Any] = {"size": f"{n}x{e}", "method": auto.method, "number": number}
    for name, ts in times.items():
        out[name] = {"best_us": min(ts), "median_us": statistics.median(ts)}
    out["ratio"] = out["auto"]["best_us"] / out["ortools-full"]["best_us"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="10x8", type=size_arg, help="NxE (default 10x8)")
    ap.add_argument("--number", type=int, default=500, help="calls per timed batch")
    ap.add_argument("--repeats", type=int, default=7, help="timed batches per method")
    ap.add_argument("--json", type=Path, help="also write the result as JSON")
    args = ap.parse_args(argv)
    n, e = args.size
    res = measure(n, e, number=args.number, repeats=args.repeats)
    for name in ("auto", "auto-uncached", "ortools-full"):
        r = res[name]
        print(
            f"{res['size']} {name:13s} best {r['best_us']:7.1f} us  median {r['median_us']:7.1f} us"
        )
    print(f"auto ({res['method']}) / raw OR-Tools: {res['ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
