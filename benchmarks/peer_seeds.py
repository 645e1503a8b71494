"""``auto`` against the exact peers over many seeds of one size (the speed suite's cells).

The speed suite (``python -m benchmarks --speed --peers``) times one seed per cell. At
1,000 x 64 ``auto`` and POT's ``ot.emd`` are within a few percent of each other, and
whether ``auto`` needs a second certificate round depends on the instance, so one seed
decides a verdict by chance. This runs both peer cells of :mod:`benchmarks.speed` (the
count-based round-2 instance against OR-Tools on the full graph, and the k = 1
fixed-load instance against ``ot.emd`` and OR-Tools) for ``--seeds`` seeds, interleaved
in one process (best of ``--repeats`` per method and seed), checks every ``auto`` answer
against the full network's optimum, and prints per-seed times, ``auto``'s certificate
rounds and a summary (median, mean, worst, seeds where ``auto`` is the fastest exact
method). ``ot.emd`` is skipped when POT is not installed (``pip install -e
".[bench]" -c constraints.txt``).

Run::

    .venv/bin/python -m benchmarks.peer_seeds                       # 1000x64, seeds 0-11
    .venv/bin/python -m benchmarks.peer_seeds --size 2000x64 --seeds 6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flexassign import AssignmentProblem, solve_assignment

from . import peers
from .instances import make_instance, size_arg
from .speed import DRIFT, TOLERANCE, _k1_problem, next_round


def _cells(n: int, e: int, seed: int) -> dict[str, AssignmentProblem]:
    p1 = make_instance(n, e, "count", seed=seed, tolerance=TOLERANCE).problem
    return {"count": next_round(p1, drift=DRIFT, seed=seed), "k1": _k1_problem(n, e, seed)}


def measure(n: int, e: int, *, seeds: int, repeats: int) -> dict[str, Any]:
    """Per cell and seed: best seconds of each method, and ``auto``'s rounds."""
    if peers.has_pot():
        import ot  # noqa: F401  (its import takes seconds: keep it out of the timings)
    out: dict[str, Any] = {"size": f"{n}x{e}", "repeats": repeats, "cells": {}}
    for seed in range(seeds):
        for cell, p in _cells(n, e, seed).items():
            ref = solve_assignment(p, method="flow", options={"prune": False}).objective
            methods: dict[str, Callable[[], Any]] = {
                "auto": lambda p=p: solve_assignment(p),
                "ortools-full": lambda p=p: peers.ortools_full(p),
            }
            if cell == "k1" and peers.has_pot():
                methods["pot-emd"] = lambda p=p: peers.pot_emd(p)
            best = {m: float("inf") for m in methods}
            rounds = None
            for _ in range(repeats):
                for name, fn in methods.items():
                    t0 = time.perf_counter()
                    res = fn()
                    best[name] = min(best[name], time.perf_counter() - t0)
                    if name == "auto":
                        if abs(res.objective - ref) > 1e-9 * max(1.0, abs(ref)):
                            raise RuntimeError(f"{cell} seed {seed}: auto is not optimal")
                        rounds = res.stats.get("rounds")
            row = {"seed": seed, "rounds": rounds, **best}
            out["cells"].setdefault(cell, []).append(row)
            print(
                f"{out['size']} {cell:5s} seed {seed:2d} rounds {rounds}: "
                + ", ".join(f"{m} {v * 1e3:.2f} ms" for m, v in best.items()),
                flush=True,
            )
    out["summary"] = {cell: _summary(rows) for cell, rows in out["cells"].items()}
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    names = [k for k in rows[0] if k not in ("seed", "rounds")]
    peer_names = [k for k in names if k != "auto"]
    summary: dict[str, Any] = {}
    for name in names:
        ts = [r[name] for r in rows]
        summary[name] = {
            "median_ms": statistics.median(ts) * 1e3,
            "mean_ms": statistics.fmean(ts) * 1e3,
            "worst_ms": max(ts) * 1e3,
        }
    summary["auto_fastest_seeds"] = sum(all(r["auto"] <= r[p] for p in peer_names) for r in rows)
    summary["seeds"] = len(rows)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1000x64", type=size_arg, help="NxE (default 1000x64)")
    ap.add_argument("--seeds", type=int, default=12, help="seeds 0..N-1 (default 12)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per method and seed")
    ap.add_argument("--json", type=Path, help="also write the result as JSON")
    args = ap.parse_args(argv)
    n, e = args.size
    res = measure(n, e, seeds=args.seeds, repeats=args.repeats)
    for cell, summ in res["summary"].items():
        parts = [
            f"{m} median {v['median_ms']:.2f} / mean {v['mean_ms']:.2f} / worst "
            f"{v['worst_ms']:.2f} ms"
            for m, v in summ.items()
            if isinstance(v, dict)
        ]
        print(f"{res['size']} {cell}: " + "; ".join(parts))
        print(
            f"  auto fastest exact method on {summ['auto_fastest_seeds']} of {summ['seeds']} seeds"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
