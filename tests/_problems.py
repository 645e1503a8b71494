"""Random problem generators and an independent reference MIP for the tests.

The reference formulation is written directly from the problem's arrays with
``scipy.optimize.milp`` and dense matrices: it shares no code with the backends
(not even the sparse model builder), so agreement with it is real evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from flexassign import AssignmentProblem


@dataclass(frozen=True)
class Reference:
    feasible: bool
    objective: float
    x: np.ndarray | None


def reference_solve(p: AssignmentProblem) -> Reference:
    n, e = p.shape
    nv = n * e
    soft = p.load_penalty is not None
    nvar = nv + (2 * e if soft else 0)
    c = np.zeros(nvar)
    c[:nv] = -p.fitness.reshape(-1)
    if soft:
        c[nv:] = p.load_penalty
    lb = np.zeros(nvar)
    ub = np.full(nvar, np.inf)
    ub[:nv] = 1.0
    if p.allowed is not None:
        ub[:nv][~p.allowed.reshape(-1)] = 0.0
    if p.fixed is not None:
        lb[:nv][p.fixed.reshape(-1)] = 1.0
    rows, lo, hi = [], [], []
    for ci in range(n):
        r = np.zeros(nvar)
        r[ci * e : (ci + 1) * e] = 1.0
        rows.append(r)
        lo.append(p.min_experts[ci])
        hi.append(p.capacity[ci])
        if p.expert_size is not None and p.client_budget is not None:
            r = np.zeros(nvar)
            r[ci * e : (ci + 1) * e] = p.expert_size
            rows.append(r)
            lo.append(-np.inf)
            hi.append(p.client_budget[ci])
    w = p.weights
    for j in range(e):
        r = np.zeros(nvar)
        r[j:nv:e] = w
        if soft:
            r[nv + j] = 1.0  # shortfall below L
            r[nv + e + j] = -1.0  # excess above U
        rows.append(r)
        lo.append(p.expert_min_load[j])
        hi.append(p.expert_max_load[j])
    integrality = np.zeros(nvar)
    integrality[:nv] = 1
    res = milp(
        c,
        constraints=LinearConstraint(np.array(rows), np.array(lo), np.array(hi)),
        bounds=Bounds(lb, ub),
        integrality=integrality,
        options={"mip_rel_gap": 1e-12},
    )
    if res.status == 2:
        return Reference(False, float("nan"), None)
    assert res.status == 0, res.message
    x = res.x[:nv].reshape(n, e) > 0.5
    return Reference(True, p.objective(x), x)


def random_problem(
    rng: np.random.Generator,
    *,
    n: int,
    e: int,
    weighted: bool = False,
    knapsack: bool = False,
    masks: bool = False,
    fixed: bool = False,
    soft: bool = False,
    mixed_sign: bool = False,
    exact: bool = False,
    tolerance: float | None = 0.3,
) -> AssignmentProblem:
    fitness = rng.normal(size=(n, e)) if mixed_sign else rng.random((n, e))
    cap = rng.integers(0, min(e, 3) + 1, size=n)
    kw: dict = {}
    if weighted:
        kw["client_weight"] = rng.integers(1, 20, size=n).astype(float)
    if knapsack:
        kw["expert_size"] = rng.integers(1, 5, size=e).astype(float)
        kw["client_budget"] = rng.integers(0, 10, size=n).astype(float)
    allowed = None
    if masks:
        allowed = rng.random((n, e)) > 0.25
        kw["allowed"] = allowed
    if fixed:
        base = allowed if allowed is not None else np.ones((n, e), dtype=bool)
        fx = base & (rng.random((n, e)) < 0.1)
        # keep fixed counts within capacity so the instance is not trivially invalid
        for ci in range(n):
            idx = np.flatnonzero(fx[ci])
            if idx.size > cap[ci]:
                fx[ci, idx[cap[ci] :]] = False
        kw["fixed"] = fx
    if soft:
        kw["load_penalty"] = float(rng.choice([0.05, 0.5, 3.0]))
    if tolerance is None:
        return AssignmentProblem(fitness, capacity=cap, **kw)
    return AssignmentProblem.balanced(
        fitness, capacity=cap, tolerance=tolerance, exact_capacity=exact, **kw
    )
