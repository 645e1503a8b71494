r"""LP relaxation (HiGHS) plus rounding and repair: fast, feasible, with a bound.

1. Solve the LP relaxation of the shared model
   (:func:`~flexassign.backends.linear.build_linear_model`) with HiGHS' dual simplex,
   by column generation from each client's best experts
   (:mod:`flexassign.backends._lp_relax`). Its value is an upper bound on every
   assignment's objective (``bound``). An infeasible LP proves the problem
   infeasible. The LP is solved in an equivalent form whose costs are shifted per
   client (``shift_costs``), which makes the dual simplex start close to the
   optimum; the bound is mapped back exactly.
2. If the LP optimum is integral, it is an optimal assignment. For totally unimodular
   problems (equal client weights, no binding knapsack) every simplex vertex is
   integral, so this is the normal outcome there; the result says so and is
   ``OPTIMAL`` with ``bound == objective``.
3. Otherwise **round and repair**: pairs at 1 in the LP stay taken, pairs at 0 stay
   free of clients, and a small MIP decides only the clients whose LP row is
   fractional (relax-and-fix). It first tries only their LP support plus, per client,
   the few other pairs with the best reduced cost (with a quarter of the repair time),
   then all their candidate pairs. If that sub-problem is infeasible, clients that
   share an expert with a fractional client are freed as well, then a greedy repair is
   tried.
   The answer is ``FEASIBLE`` with the LP bound, so ``gap`` measures how far from the
   optimum it can be at most.
4. When every repair fails, the best rounded assignment is returned as is: the
   verifier then lists the broken constraints (status ``violates_constraints``) and
   the message says that rounding failed. Use an exact method then.

Options: ``time_limit`` (LP plus repair), ``seed``, ``threads``, ``verbose``;
``options={"repair_time_limit": s}`` caps each repair MIP (default 10 s),
``"repair_extra"`` is the number of non-support pairs per fractional client in the
first repair MIP (default 3; ``-1`` skips that attempt), ``"repair_highs_options"`` (a
dict) is passed to the repair MIPs, ``"cost_shift"`` (default True) and
``"lp_presolve"`` (default ``"off"``) tune the LP, ``"prune"`` and ``"prune_margin"``
its starting columns (the same names as ``flow``'s). The objective is normalised
(offset and power-of-two scale) as in the MIP backends. When the LP's costs vary by
less than its tolerances can resolve, the LP bound and an ``OPTIMAL`` label are
checked with the price bound at the LP's duals
(:func:`~flexassign.backends._certify.certify`, ``stats["bound_check"]``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from . import _highs
from ._common import prepare_model
from ._guard import certify
from ._lp_relax import Restricted, shift_costs, solve_lp
from .base import BackendOutput, SolveOptions
from .greedy import BUDGET_RTOL
from .linear import LinearModel

__all__ = ["solve"]

#: An LP value within this of 0 or 1 counts as integral (rounding and repair).
_FRAC_TOL = 1e-6


def _narrow_pairs(
    model: LinearModel,
    r: Restricted,
    lp_pairs: np.ndarray,
    rc: np.ndarray,
    free_pairs: np.ndarray,
    extra: int,
) -> np.ndarray:
    """A smaller free set for a first, cheaper repair MIP.

    Of ``free_pairs`` (restricted to the LP's columns) keep the LP's support and, per
    client, the ``extra`` other pairs with the smallest reduced cost ``rc``
    (minimization): the pairs an optimal repair is most likely to use.
    """
    m = model.n_pairs
    in_r = r.cols[(r.cols >= 0) & (r.cols < m)]
    cand = np.intersect1d(free_pairs, in_r)
    support = cand[lp_pairs[cand] > _FRAC_TOL]
    rest = cand[lp_pairs[cand] <= _FRAC_TOL]
    rest = rest[np.lexsort((rest, rc[rest], model.pair_client[rest]))]
    client = model.pair_client[rest]
    rank = np.arange(rest.size) - np.searchsorted(client, client)
    return np.union1d(support, rest[rank < extra])


def _repair_mip(
    r: Restricted,
    model: LinearModel,
    full: np.ndarray,
    free_pairs: np.ndarray,
    options: SolveOptions,
    time_limit: float,
) -> np.ndarray | None:
    """Fix every candidate pair outside ``free_pairs`` to its rounded LP value and solve a
    small MIP over the rest: only the free columns (and slacks) and the rows they touch,
    with the fixed part's activity moved into the row bounds."""
    m = model.n_pairs
    n_cols = int(model.c.shape[0])
    in_r = r.cols[(r.cols >= 0) & (r.cols < m)]
    is_free = np.isin(in_r, free_pairs)
    free = in_r[is_free]
    fixed = in_r[~is_free]
    rounded = np.round(full[fixed])
    act = model.A[:, fixed] @ rounded
    cols = np.concatenate([free, np.arange(m, n_cols)])
    sub = model.A[:, cols].tocsr()
    rows = np.flatnonzero(np.diff(sub.indptr))
    others = np.setdiff1d(np.arange(model.A.shape[0]), rows)
    tol = 1e-7 * np.maximum(1.0, np.abs(act[others]))
    if np.any(act[others] < model.row_lo[others] - tol) or np.any(
        act[others] > model.row_hi[others] + tol
    ):
        return None  # the rounded part alone breaks a row no free column can fix
    sub = sub[rows].tocsc()
    lo = model.row_lo[rows] - act[rows]
    hi = model.row_hi[rows] - act[rows]
    h = _highs.new_highs(options, time_limit=max(float(time_limit), 0.01))
    h.setOptionValue("mip_rel_gap", 1e-4)
    _highs.set_options(
        h, options.extra.get("repair_highs_options") or {}, "options['repair_highs_options']"
    )
    _highs.pass_model(
        h,
        -model.c[cols],
        sub,
        model.col_lo[cols],
        model.col_hi[cols],
        lo,
        hi,
        np.concatenate([np.ones(free.size), np.zeros(cols.size - free.size)]),
    )
    _highs.run(h, _highs.threads_of(options))
    if h.getInfo().primal_solution_status != 2:
        return None
    sol = np.asarray(h.getSolution().col_value)
    values = np.zeros(m)
    values[fixed] = rounded
    values[free] = sol[: free.size]
    return values


def _greedy_repair(
    problem: AssignmentProblem, model: LinearModel, lp_pairs: np.ndarray
) -> np.ndarray:
    """Keep the LP's integral ones, then add pairs by LP value while everything fits."""
    x = problem.fixed_mask.copy()
    keep = lp_pairs > 1 - _FRAC_TOL
    x[model.pair_client[keep], model.pair_expert[keep]] = True
    w = problem.weights
    load = w @ x
    count = x.sum(axis=1)
    mem = x @ problem.expert_size if problem.expert_size is not None else None
    order = np.lexsort((-problem.fitness[model.pair_client, model.pair_expert], -lp_pairs))
    for i in order:
        c, j = int(model.pair_client[i]), int(model.pair_expert[i])
        if x[c, j] or count[c] >= problem.capacity[c]:
            continue
        needed = count[c] < problem.min_experts[c] or load[j] < problem.expert_min_load[j]
        if lp_pairs[i] <= _FRAC_TOL and not needed:
            continue
        if not problem.is_soft and load[j] + w[c] > problem.expert_max_load[j] * (1 + 1e-12):
            continue
        if (
            mem is not None
            and problem.client_budget is not None
            and problem.expert_size is not None
        ):
            if mem[c] + problem.expert_size[j] > problem.client_budget[c] * (1 + BUDGET_RTOL):
                continue
            mem[c] += problem.expert_size[j]
        x[c, j] = True
        count[c] += 1
        load[j] += w[c]
    return x


def _repair_sets(
    model: LinearModel,
    lp_model: LinearModel,
    r: Restricted,
    lp_pairs: np.ndarray,
    frac: np.ndarray,
    extra: int,
) -> list[tuple[str, np.ndarray, float]]:
    """The free pair sets of the repair MIPs, narrowest first: (label, pairs, time share)."""
    m = model.n_pairs
    client_of = model.pair_client
    frac_clients = np.unique(client_of[frac])
    frac_pairs = np.flatnonzero(np.isin(client_of, frac_clients))
    sets: list[tuple[str, np.ndarray, float]] = []
    if extra >= 0:
        y = np.asarray(r.h.getSolution().row_dual)
        rc = (-lp_model.c - lp_model.A.T @ y)[:m]  # reduced costs of the minimization
        narrow = _narrow_pairs(model, r, lp_pairs, rc, frac_pairs, extra)
        if narrow.size < np.intersect1d(frac_pairs, r.cols).size:
            sets.append(("fractional clients, LP support and best others", narrow, 0.25))
    sets.append(("fractional clients", frac_pairs, 1.0))
    frac_experts = np.unique(model.pair_expert[frac])
    touching = (lp_pairs > _FRAC_TOL) & np.isin(model.pair_expert, frac_experts)
    wider = np.union1d(frac_clients, np.unique(client_of[touching]))
    if wider.size > frac_clients.size:
        sets.append(
            ("clients of fractional experts", np.flatnonzero(np.isin(client_of, wider)), 1.0)
        )
    return sets


def _round_and_repair(
    problem: AssignmentProblem,
    model: LinearModel,
    lp_model: LinearModel,
    r: Restricted,
    full: np.ndarray,
    frac: np.ndarray,
    options: SolveOptions,
    t0: float,
    stats: dict[str, Any],
) -> tuple[np.ndarray, str]:
    """Relax-and-fix repair MIPs over growing free sets, then the greedy repair.

    Returns the assignment and the message (which says when only the greedy repair,
    which may break constraints, was left).
    """
    m = model.n_pairs
    lp_pairs = full[:m]
    repair_limit = float(options.extra.get("repair_time_limit", 10.0))
    extra = int(options.extra.get("repair_extra", 3))
    attempts: list[str] = []
    for label, free_pairs, share in _repair_sets(model, lp_model, r, lp_pairs, frac, extra):
        remaining = repair_limit
        if options.time_limit is not None:
            remaining = min(remaining, options.time_limit - (time.perf_counter() - t0))
        if remaining <= 0:
            attempts.append(f"{label}: no time left")
            break
        sol = _repair_mip(r, model, full, free_pairs, options, remaining * share)
        if sol is not None:
            vec = np.zeros(model.c.shape[0])
            vec[:m] = sol
            n_freed = np.unique(model.pair_client[free_pairs]).size
            stats["repair"] = f"MIP over {n_freed} {label}"
            stats["repair_pairs"] = int(free_pairs.size)
            x = model.to_assignment(problem.shape, vec) | problem.fixed_mask
            return x, f"LP rounding and repair ({stats['repair']})"
        attempts.append(f"{label}: repair MIP found no assignment")
    stats["repair"] = "greedy"
    message = (
        "LP rounding: "
        + "; ".join(attempts)
        + "; returned the greedy repair, which the verifier checks (rounding may have failed)"
    )
    return _greedy_repair(problem, model, lp_pairs), message


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()
    # normalised objective (offset, power-of-two scale): LP tolerances then mean the same
    # at any fitness scale; the pair columns are the model's, so rounding and repair
    # work on it too, and the LP bound maps back through norm.original
    prepared = prepare_model(problem)
    if isinstance(prepared, BackendOutput):
        return prepared
    model, norm = prepared
    stats: dict[str, Any] = {"columns": int(model.c.shape[0]), "rows": int(model.A.shape[0])}
    model = dataclasses.replace(model, c=norm.c)
    stats.update(norm.stats())
    # the LP runs on an equivalent model with shifted costs (faster dual simplex)
    lp_model, offset = model, 0.0
    if options.extra.get("cost_shift", True):
        lp_model, offset = shift_costs(problem, model)
    stats["build_time"] = time.perf_counter() - t0
    status, r, full, lp_value = solve_lp(problem, lp_model, options, t0, stats)
    stats["lp_time"] = time.perf_counter() - t0 - stats["build_time"]
    stats["solve_time"] = stats["lp_time"]  # the repair, if any, adds to it below
    stats["solver_status"] = status
    if status == "infeasible":
        return BackendOutput(
            Status.INFEASIBLE,
            message="the LP relaxation is infeasible, so the problem is infeasible",
            stats=stats,
        )
    if status != "optimal" or r is None or full is None or lp_value is None:
        return BackendOutput(
            Status.TIME_LIMIT if status == "time_limit" else Status.ERROR,
            message=f"the LP relaxation did not solve ({status})",
            stats=stats,
        )
    bound = norm.upper(lp_value + offset)
    row_dual = np.asarray(r.h.getSolution().row_dual, dtype=np.float64)
    full = full[: model.c.shape[0]]
    lp_pairs = full[: model.n_pairs]
    frac = np.flatnonzero((lp_pairs > _FRAC_TOL) & (lp_pairs < 1 - _FRAC_TOL))
    stats["lp_bound"] = bound
    stats["fractional_pairs"] = int(frac.size)
    stats["unimodular"] = problem.is_unimodular
    if frac.size == 0:
        x = model.to_assignment(problem.shape, full)
        # the LP optimum is integral: bound == objective proves optimality
        why = (
            "the problem is totally unimodular, so the LP relaxation is integral"
            if problem.is_unimodular
            else "the LP relaxation happens to be integral"
        )
        stats["solve_time"] = time.perf_counter() - t0 - stats["build_time"]
        out = BackendOutput(
            Status.OPTIMAL, x=x, bound=problem.objective(x), stats=stats, message=f"optimal: {why}"
        )
    else:
        x, message = _round_and_repair(problem, model, lp_model, r, full, frac, options, t0, stats)
        stats["solve_time"] = time.perf_counter() - t0 - stats["build_time"]
        out = BackendOutput(
            Status.FEASIBLE,
            x=x,
            bound=bound,
            stats=stats,
            message=f"{message}; LP bound {bound:.6g}",
        )
    # the LP's tolerances may not resolve the objective: check with the price bound
    return certify(
        problem,
        lp_model,
        lp_model.c,
        norm.exponent,
        out,
        options,
        solver="the LP relaxation",
        t0=t0,
        row_dual=row_dual,
    )
