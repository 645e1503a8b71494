"""Fixed overhead of one federated round in the Planner: ``plan_round`` + N ``report()`` calls.

Issue 12's target: a 100-client x 8-expert round (plan + 100 reports) under 2 ms.
The planner is warmed up first (every client has reported a few rounds, so fitness,
usage and the prior are in their steady state); then each repeat times one
``plan_round`` over all clients and the ``report`` calls that follow, with the
:class:`~flexassign.alignment.Feedback` objects built beforehand (they are the
clients' side). The solver's own share is ``plan.result.runtime``. Repeats run in one
process; best and median are reported (the machine is shared, so the best is the
overhead and the median shows the noise).

Run::

    .venv/bin/python benchmarks/planner_overhead.py                 # 100 x 8, flex
    .venv/bin/python benchmarks/planner_overhead.py --strategy greedy --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexassign.alignment import STRATEGIES, Feedback, Planner


def _feedback(plan: Any, rng: np.random.Generator) -> dict[Any, Feedback]:
    out = {}
    for c, experts in plan.items():
        k = len(experts)
        out[c] = Feedback(
            experts,
            rng.integers(1, 50, size=k).tolist(),
            accuracy=rng.uniform(0.2, 0.9, size=k).tolist(),
            loss=rng.uniform(0.1, 2.0, size=k).tolist(),
        )
    return out


def measure(
    clients: int, experts: int, strategy: str, repeats: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Time ``repeats`` rounds of a warmed-up planner; times in seconds."""
    rng = np.random.default_rng(seed)
    planner = Planner(experts, strategy=strategy, seed=seed)
    ids = [f"client-{i}" for i in range(clients)]
    for i, c in enumerate(ids):
        planner.set_capacity(c, 1 + i % 3)
    for _ in range(warmup):
        plan = planner.plan_round(ids)
        for c, fb in _feedback(plan, rng).items():
            planner.report(c, fb)
    plan_t, report_t, total_t, solver_t = [], [], [], []
    balanced = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        plan = planner.plan_round(ids)
        t1 = time.perf_counter()
        feedback = _feedback(plan, rng)  # the clients' side: not timed
        t2 = time.perf_counter()
        for c in ids:
            planner.report(c, feedback[c])
        t3 = time.perf_counter()
        plan_t.append(t1 - t0)
        report_t.append(t3 - t2)
        total_t.append((t1 - t0) + (t3 - t2))
        solver_t.append(plan.result.runtime)
        balanced += plan.balanced
    assert planner.pending == ()
    if strategy == "flex":
        assert balanced == repeats, "every flex plan must meet its balance bounds"

    def summary(xs: list[float]) -> dict[str, float]:
        return {"best": min(xs), "median": statistics.median(xs)}

    return {
        "clients": clients,
        "experts": experts,
        "strategy": strategy,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "plan_round": summary(plan_t),
        "reports": summary(report_t),
        "round": summary(total_t),
        "solver": summary(solver_t),
        "planner_overhead": summary([p - s for p, s in zip(plan_t, solver_t, strict=True)]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--strategy", choices=STRATEGIES, default="flex")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the result as JSON here")
    args = ap.parse_args(argv)
    if min(args.clients, args.experts, args.repeats) < 1 or args.warmup < 0:
        ap.error("--clients, --experts and --repeats must be >= 1, --warmup >= 0")
    res = measure(args.clients, args.experts, args.strategy, args.repeats, args.warmup, args.seed)
    res["python"] = platform.python_version()
    res["machine"] = platform.machine()
    ms = {
        k: {s: round(v * 1e3, 3) for s, v in res[k].items()}
        for k in ("round", "plan_round", "reports", "solver", "planner_overhead")
    }
    print(
        f"{args.clients} clients x {args.experts} experts, {args.strategy}, "
        f"{args.repeats} repeats (ms, best / median):"
    )
    for key, val in ms.items():
        print(f"  {key:<17} {val['best']:8.3f} / {val['median']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
