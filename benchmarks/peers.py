"""Exact and inexact peers outside flexassign, written the way a user would write them.

* :func:`ortools_full` — OR-Tools ``SimpleMinCostFlow`` on the full client-expert graph
  built with numpy (every pair an arc), costs scaled by a power of two like ``flow``.
* :func:`pot_emd` — POT's network simplex ``ot.emd`` on the one-expert-per-client,
  fixed-load case (a transportation problem; needs
  ``pip install -e ".[bench]" -c constraints.txt``).
* :func:`pot_sinkhorn` — entropic ``ot.sinkhorn`` on the same case: fast but inexact;
  its plan is fractional, and rounding it (each client's largest entry) breaks loads.

Each returns a :class:`PeerResult` whose objective is recomputed with the problem's own
:meth:`~flexassign.AssignmentProblem.objective` where an assignment exists.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import numpy as np

from flexassign import AssignmentProblem

__all__ = ["PeerResult", "has_pot", "k1_loads", "ortools_full", "pot_emd", "pot_sinkhorn"]


@dataclass(frozen=True)
class PeerResult:
    """What a peer returned: its objective, whether it is exact, and feasibility."""

    objective: float
    exact: bool
    feasible: bool
    note: str = ""


def has_pot() -> bool:
    """Whether POT (``import ot``) is installed."""
    return importlib.util.find_spec("ot") is not None


def ortools_full(problem: AssignmentProblem) -> PeerResult:
    """Min-cost flow on every client-expert pair (count-based, no masks)."""
    from ortools.graph.python import min_cost_flow

    n, e = problem.shape
    cap = problem.capacity.astype(np.int64)
    kmin = problem.min_experts.astype(np.int64)
    lo, hi = problem.count_bounds()
    peak = float(np.abs(problem.fitness).max()) or 1.0
    limit = 2.0**60 / (max(int(cap.sum()) + 1, n + e + 3) * 4 * (e + 2))
    scale = 2.0 ** math.floor(math.log2(limit / peak))
    src, sink = 0, n + e + 1
    clients = 1 + np.arange(n)
    tails = np.concatenate(
        [np.zeros(n, np.int64), np.repeat(clients, e), 1 + n + np.arange(e), [0]]
    )
    heads = np.concatenate([clients, np.tile(1 + n + np.arange(e), n), np.full(e, sink), [sink]])
    optional = int((cap - kmin).sum())
    caps = np.concatenate([cap - kmin, np.ones(n * e, np.int64), hi - lo, [optional]])
    costs = np.concatenate(
        [
            np.zeros(n, np.int64),
            -np.rint(problem.fitness * scale).astype(np.int64).reshape(-1),
            np.zeros(e + 1, np.int64),
        ]
    )
    supplies = np.zeros(n + e + 2, np.int64)
    supplies[src] = optional
    supplies[clients] = kmin
    supplies[1 + n : 1 + n + e] = -lo
    supplies[sink] = -(optional + int(kmin.sum()) - int(lo.sum()))
    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    smcf.set_nodes_supplies(np.arange(n + e + 2), supplies)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        return PeerResult(math.nan, True, False, f"status {status}")
    x = smcf.flows(arcs)[n : n + n * e].reshape(n, e) > 0
    return PeerResult(problem.objective(x), True, True)


def k1_loads(problem: AssignmentProblem) -> np.ndarray | None:
    """Expert loads of a one-expert-per-client problem with fixed loads, else None."""
    lo, hi = problem.count_bounds()
    ok = (
        (problem.capacity == 1).all()
        and (problem.min_experts == 1).all()
        and (lo == hi).all()
        and int(lo.sum()) == problem.n_clients
        and problem.allowed is None
        and problem.fixed is None
    )
    return lo.astype(np.float64) if ok else None


def pot_emd(problem: AssignmentProblem) -> PeerResult:
    """``ot.emd`` (exact network simplex) on the k = 1, fixed-load case."""
    import ot

    b = k1_loads(problem)
    if b is None:
        raise ValueError("pot_emd needs capacity = min_experts = 1 and fixed expert loads")
    plan = ot.emd(np.ones(problem.n_clients), b, -problem.fitness, numItermax=10**8)
    x = plan > 0.5
    feasible = bool((x.sum(axis=1) == 1).all() and np.array_equal(x.sum(axis=0), b))
    return PeerResult(problem.objective(x), True, feasible)


def pot_sinkhorn(problem: AssignmentProblem, reg: float = 0.01) -> PeerResult:
    """``ot.sinkhorn`` on the k = 1 case: the fractional plan's value (not a bound or an
    assignment), and whether rounding it keeps the loads."""
    import ot

    b = k1_loads(problem)
    if b is None:
        raise ValueError("pot_sinkhorn needs capacity = min_experts = 1 and fixed expert loads")
    m = -problem.fitness
    plan = ot.sinkhorn(np.ones(problem.n_clients), b, m - m.min(), reg, numItermax=10_000)
    value = float((plan * problem.fitness).sum())
    x = np.zeros(problem.shape, dtype=bool)
    x[np.arange(problem.n_clients), plan.argmax(axis=1)] = True
    feasible = bool(np.array_equal(x.sum(axis=0), b))
    note = f"fractional plan value; rounded plan objective {problem.objective(x):.6g}"
    return PeerResult(value, False, feasible, note)
