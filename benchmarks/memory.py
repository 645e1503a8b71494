"""Extra memory of building and solving one large count-based problem.

``python -m benchmarks.memory [NxE] [--method auto]`` builds the benchmark's fitness
matrix, then measures with tracemalloc (numpy reports its allocations to it) the peak
memory *beyond that fitness array* of

* ``AssignmentProblem.balanced(...)`` (validation and the problem's own read-only copy),
* ``solve_assignment(problem, method=...)`` cold, and again warm with the cold solve's
  ``stats["expert_prices"]`` (the problem itself excluded),

and prints one JSON object. The issue's target: 1,000,000 x 64 solves within 1.5 GiB
beyond the fitness array.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from flexassign import AssignmentProblem, solve_assignment

from .instances import make_fitness, size_arg

__all__ = ["measure"]

MIB = 2.0**20


def measure(n: int, e: int, method: str = "auto", seed: int = 0) -> dict[str, object]:
    """Peak extra MiB of construction and of a cold and a warm solve."""
    rng = np.random.default_rng([seed, n, e, 0])
    fitness = make_fitness(n, e, rng)
    capacity = np.minimum(rng.choice([1, 2, 3, 4], size=n, p=[0.2, 0.4, 0.3, 0.1]), e)
    out: dict[str, object] = {"n": n, "e": e, "method": method, "fitness_mib": fitness.nbytes / MIB}
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        problem = AssignmentProblem.balanced(fitness, capacity=capacity, tolerance=0.1)
        out["construct_s"] = time.perf_counter() - t0
        out["construct_peak_mib"] = (tracemalloc.get_traced_memory()[1] - base) / MIB
        del fitness  # the problem holds its own copy
        prices = None
        for mode in ("cold", "warm"):
            options = {"prices": prices} if mode == "warm" else None
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            res = solve_assignment(problem, method=method, options=options)
            out[f"{mode}_s"] = time.perf_counter() - t0
            out[f"{mode}_peak_mib"] = (tracemalloc.get_traced_memory()[1] - base) / MIB
            out[f"{mode}_status"] = res.status.value
            out[f"{mode}_backend"] = res.method
            out[f"{mode}_objective"] = res.objective
            prices = res.stats.get("expert_prices")
            if prices is None:
                break
    finally:
        tracemalloc.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    ap.add_argument(
        "size", nargs="?", default="1000000x64", type=size_arg, help="NxE (default 1000000x64)"
    )
    ap.add_argument("--method", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n, e = args.size
    print(json.dumps(measure(n, e, args.method, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
