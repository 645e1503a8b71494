"""The oracle: an independent dense ``scipy.optimize.milp`` model of a problem."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..problem import AssignmentProblem

__all__ = ["Reference", "reference_solution"]


@dataclass(frozen=True)
class Reference:
    """The independent reference model's answer.

    Attributes
    ----------
    feasible : bool
    objective : float
        Optimal objective (NaN when infeasible).
    x : ndarray of bool or None
        An optimal assignment (None when infeasible).
    """

    feasible: bool
    objective: float
    x: NDArray[np.bool_] | None


def reference_solution(problem: AssignmentProblem) -> Reference:
    """Solve ``problem`` with a dense ``scipy.optimize.milp`` model written from scratch.

    The model is built directly from the problem's arrays with dense matrices and
    shares no code with the backends (not even the sparse model builder), so
    agreement with it is real evidence. Dense: meant for test-sized problems (a few
    hundred pairs).

    Examples
    --------
    >>> from flexassign import AssignmentProblem
    >>> ref = reference_solution(AssignmentProblem(np.eye(2), capacity=1, expert_max_load=1))
    >>> ref.feasible, ref.objective
    (True, 2.0)

    The model stops at a relative MIP gap of 1e-12 and HiGHS's default absolute gap
    of 1e-6, so its objective is optimal to within about 1e-6.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    p = problem
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
    if res.status != 0:
        raise RuntimeError(f"the reference MIP failed: {res.message}")
    x = res.x[:nv].reshape(n, e) > 0.5
    return Reference(True, p.objective(x), x)
