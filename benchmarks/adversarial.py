"""Adversarial check of every exact backend's labels and bounds against brute force.

Random small weighted, knapsack and soft problems with fitness ``offset + scale * Z``
at scales 1e-12 to 1e12 and offsets up to +-1e12 (also per-client offsets), each solved
by every installed exact backend (and ``lp-round``, which also labels and bounds) and
compared with the brute-force optimum over every 0/1 matrix. A *wrong OPTIMAL* is an
``OPTIMAL`` result whose objective lies below the optimum by more than the optimality
tolerance (:func:`flexassign.backends._certify.optimality_tolerance`, which includes the
float64 rounding of the objective); an *invalid bound* is a bound below the optimum by
more than that tolerance.

Run ``python -m benchmarks.adversarial --instances 5000`` (``--methods`` to choose,
``--seed``); it prints one JSON summary (counts per backend and kind, and the first
failures) and exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexassign import AssignmentProblem, Status, available_backends, solve_assignment
from flexassign.backends._certify import optimality_tolerance

__all__ = ["KINDS", "Case", "brute_force", "check", "make_case", "run"]

KINDS = ("weighted", "knapsack", "soft")
#: Every backend that labels results OPTIMAL or reports a bound from a MIP or an LP.
DEFAULT_METHODS = ("auto", "highs", "scipy", "cpsat", "pyomo", "lp-round")


@dataclass(frozen=True)
class Case:
    """One instance: the problem, its kind and how its fitness was drawn."""

    problem: AssignmentProblem
    kind: str
    scale: float
    offset: float


def _fitness(rng: np.random.Generator, n: int, e: int) -> tuple[np.ndarray, float, float]:
    scale = float(10.0 ** rng.integers(-12, 13))
    mode = rng.integers(0, 4)
    if mode == 0:
        offset = 0.0
    else:
        offset = float(rng.choice([-1.0, 1.0]) * 10.0 ** rng.integers(0, 13))
    z = rng.random((n, e)) if rng.random() < 0.5 else rng.normal(size=(n, e))
    fit = offset + scale * z
    if mode == 3:  # a different offset per client
        fit = fit + offset * rng.integers(-2, 3, size=(n, 1))
    return fit, scale, offset


def make_case(rng: np.random.Generator, kind: str) -> Case:
    """A random small problem of ``kind`` (``weighted``, ``knapsack`` or ``soft``)."""
    n = int(rng.integers(2, 5))
    e = int(rng.integers(2, 4))
    while n * e > 12:
        n -= 1
    fit, scale, offset = _fitness(rng, n, e)
    cap = rng.integers(1, e + 1, size=n)
    kmin = np.minimum(rng.integers(0, 2, size=n), cap)
    if rng.random() < 0.3:
        kmin = cap.copy()  # forced counts
    weight = rng.integers(1, 5, size=n).astype(float)
    if rng.random() < 0.3:
        weight = np.round(rng.uniform(0.5, 4.0, size=n), 2)
    kwargs: dict[str, Any] = {"capacity": cap, "min_experts": kmin, "client_weight": weight}
    if rng.random() < 0.2:
        allowed = rng.random((n, e)) < 0.8
        kwargs["allowed"] = allowed
    avg = float(np.dot(cap, weight)) / e
    tol = float(rng.choice([0.0, 0.2, 0.5, 1.0]))
    kwargs["expert_min_load"] = np.floor((1 - tol) * avg * rng.uniform(0.3, 1.0))
    kwargs["expert_max_load"] = np.ceil((1 + tol) * avg)
    if kind == "knapsack":
        kwargs["expert_size"] = rng.integers(1, 5, size=e).astype(float)
        kwargs["client_budget"] = rng.integers(1, 9, size=n).astype(float)
    if kind == "soft":
        kwargs["load_penalty"] = float(10.0 ** rng.integers(-12, 7)) * float(
            rng.choice([1.0, scale])
        )
    return Case(AssignmentProblem(fit, **kwargs), kind, scale, offset)


def _all_rows(e: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=e)), dtype=bool)


def brute_force(p: AssignmentProblem) -> tuple[float, np.ndarray | None]:
    """The optimum over every 0/1 matrix (``-inf`` and ``None`` when none is feasible).

    Feasibility is exact (no tolerance): every answer a solver may give within its
    tolerances is at most what this optimum allows plus the optimality tolerance.
    """
    n, e = p.shape
    rows = _all_rows(e)
    # per client: the rows it may take
    per_client = []
    for c in range(n):
        ok = np.all(~rows | p.allowed_mask[c], axis=1) & np.all(rows | ~p.fixed_mask[c], axis=1)
        k = rows.sum(axis=1)
        ok &= (k >= p.min_experts[c]) & (k <= p.capacity[c])
        if p.has_knapsack and p.expert_size is not None and p.client_budget is not None:
            ok &= rows @ p.expert_size <= p.client_budget[c]
        per_client.append(np.flatnonzero(ok))
    if any(idx.size == 0 for idx in per_client):
        return -np.inf, None
    grids = np.array(list(itertools.product(*per_client)))  # (K, n)
    x = rows[grids]  # (K, n, e)
    loads = np.einsum("c,kce->ke", p.weights, x.astype(float))
    value = np.where(x, p.fitness[None], 0.0).sum(axis=(1, 2))
    if p.load_penalty is None:
        feas = np.all(loads >= p.expert_min_load, axis=1) & np.all(
            loads <= p.expert_max_load, axis=1
        )
    else:
        feas = np.ones(len(x), dtype=bool)
        excess = np.maximum(p.expert_min_load - loads, 0) + np.maximum(
            loads - p.expert_max_load, 0
        )
        value = value - p.load_penalty * excess.sum(axis=1)
    if not feas.any():
        return -np.inf, None
    i = int(np.argmax(np.where(feas, value, -np.inf)))
    best = x[i]
    return p.objective(best), best


def check(p: AssignmentProblem, res: Any, best: float, x_best: np.ndarray | None) -> str | None:
    """What is wrong with ``res`` against the brute-force optimum ``best`` (None if nothing)."""
    if x_best is None:
        if res.status in (Status.OPTIMAL, Status.FEASIBLE) and res.success:
            return f"{res.status.value} on an infeasible problem"
        return None
    tol = 2.0 * optimality_tolerance(p, x_best)
    if res.x is not None and res.success:
        tol = max(tol, 2.0 * optimality_tolerance(p, res.x))
    if res.status is Status.INFEASIBLE:
        return "infeasible, but an assignment exists"
    if res.status is Status.OPTIMAL and res.objective < best - tol:
        return f"wrong OPTIMAL: objective {res.objective!r} < optimum {best!r} (tol {tol:.3g})"
    if res.bound is not None and res.bound < best - tol:
        return f"invalid bound: {res.bound!r} < optimum {best!r} (tol {tol:.3g})"
    return None


def run(
    instances: int, methods: tuple[str, ...] = DEFAULT_METHODS, seed: int = 0
) -> dict[str, Any]:
    """Solve ``instances`` random cases (kinds in turn) with each method; count outcomes."""
    rng = np.random.default_rng(seed)
    have = set(available_backends()) | {"auto"}
    methods = tuple(m for m in methods if m in have)
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    feasible = 0
    for i in range(instances):
        kind = KINDS[i % len(KINDS)]
        case = make_case(rng, kind)
        best, x_best = brute_force(case.problem)
        feasible += x_best is not None
        for method in methods:
            res = solve_assignment(case.problem, method=method)
            counts[f"{method}:{res.status.value}"] += 1
            bad = check(case.problem, res, best, x_best)
            if bad is not None:
                counts[f"{method}:wrong"] += 1
                counts[f"{method}:{kind}:wrong"] += 1
                if len(failures) < 20:
                    failures.append(
                        {"instance": i, "method": method, "kind": kind, "scale": case.scale,
                         "offset": case.offset, "problem": repr(case.problem.to_kwargs()),
                         "what": bad, "message": res.message}
                    )
    wrong = sum(v for k, v in counts.items() if k.endswith(":wrong") and k.count(":") == 1)
    return {
        "instances": instances,
        "feasible": feasible,
        "methods": list(methods),
        "seed": seed,
        "wrong": wrong,
        "counts": dict(sorted(counts.items())),
        "failures": failures,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.adversarial", description=__doc__)
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = run(args.instances, tuple(args.methods.split(",")), args.seed)
    print(json.dumps(out, indent=1, default=str))
    return 1 if out["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
