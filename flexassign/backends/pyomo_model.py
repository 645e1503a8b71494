r"""Pyomo backend: the assignment problem as a Pyomo model, solved by any Pyomo solver.

:func:`build_pyomo_model` returns a :class:`pyomo.environ.ConcreteModel` that users
can extend with their own constraints before solving it themselves
(:func:`assignment_from_model` reads the 0/1 matrix back)::

    m = build_pyomo_model(problem)
    m.pair_rule = pyo.Constraint(expr=m.x[0, 1] + m.x[1, 1] <= 1)
    pyo.SolverFactory("appsi_highs").solve(m)
    x = assignment_from_model(m, problem)

Through :func:`flexassign.solve_assignment` (``method="pyomo"``) the model is solved
with Pyomo's HiGHS interface ``appsi_highs`` by default; ``options={"solver": name}``
picks any solver Pyomo can drive (``"highs"``, ``"cbc"``, ``"glpk"``, ``"gurobi"``,
``"cplex"``, ``"scip"``, ... when installed), ``options={"solver_options": {...}}``
passes raw solver options, and ``options={"customize": fn}`` calls ``fn(model)``
before solving (add constraints there; the answer is still verified against the
problem's own constraints). ``time_limit`` and ``mip_gap`` are mapped to each known
solver's option names; ``mip_gap`` defaults to 1e-9 for the HiGHS interfaces so
that "optimal" means proven optimal. For the solve, the objective is replaced by the
normalised equivalent (offset and power-of-two scale, as in every MIP backend), so the
gap applies to the part that can vary. ``time_limit`` bounds the solver; building the
Pyomo model (Python expressions, slow on large problems: tens of seconds at
16,000 x 32) comes on top.

Model components: ``P`` (allowed pairs), ``x[c, e]`` (binary; fixed pairs are
fixed to 1), ``capacity[c]``, ``memory[c]`` (binding knapsacks only), ``expert_load[e]``,
``under[e]``/``over[e]`` (slacks, soft bounds only) and ``objective`` (maximize).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..problem import AssignmentProblem
from ..result import Status
from ._common import EXACT_GAP, NormalisedObjective, mip_output, prepare_model
from .base import BackendOutput, SolveOptions
from .linear import LinearModel

__all__ = ["assignment_from_model", "build_pyomo_model", "solve"]

#: Option names for a time limit and a relative MIP gap, per Pyomo solver name.
_OPTION_NAMES: dict[str, tuple[str | None, str | None]] = {
    "highs": ("time_limit", "mip_rel_gap"),
    "glpk": ("tmlim", "mipgap"),
    "cbc": ("seconds", "ratioGap"),
    "gurobi": ("TimeLimit", "MIPGap"),
    "gurobi_direct": ("TimeLimit", "MIPGap"),
    "gurobi_persistent": ("TimeLimit", "MIPGap"),
    "cplex": ("timelimit", "mip_tolerances_mipgap"),
    "cplex_direct": ("timelimit", "mip_tolerances_mipgap"),
    "scip": ("limits/time", "limits/gap"),
    "xpress": ("maxtime", "miprelstop"),
}


def build_pyomo_model(problem: AssignmentProblem) -> Any:
    """Build the assignment problem as a Pyomo ``ConcreteModel``.

    Parameters
    ----------
    problem : AssignmentProblem

    Returns
    -------
    pyomo.environ.ConcreteModel
        With components ``P``, ``x``, ``capacity``, ``memory`` (binding knapsack only),
        ``expert_load``, ``under``/``over`` (soft bounds only) and ``objective``; see the module
        docstring. ``x`` is indexed by ``(client, expert)`` over the allowed pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> m = build_pyomo_model(AssignmentProblem(np.eye(2), capacity=1))
    >>> len(m.x), len(m.capacity), len(m.expert_load)
    (4, 2, 2)
    """
    import pyomo.environ as pyo

    n, e = problem.shape
    allowed = problem.allowed_mask
    fixed = problem.fixed_mask
    fit = problem.fitness
    w = problem.weights
    pairs = [(int(c), int(j)) for c, j in zip(*np.nonzero(allowed), strict=True)]
    by_client: list[list[int]] = [[] for _ in range(n)]
    by_expert: list[list[int]] = [[] for _ in range(e)]
    for c, j in pairs:
        by_client[c].append(j)
        by_expert[j].append(c)

    m = pyo.ConcreteModel(name="flexassign")
    m.P = pyo.Set(initialize=pairs, dimen=2, ordered=True)
    m.x = pyo.Var(m.P, domain=pyo.Binary)
    for c, j in zip(*np.nonzero(fixed), strict=True):
        m.x[int(c), int(j)].fix(1)

    cap = problem.capacity
    kmin = problem.min_experts

    def capacity_rule(mdl: Any, c: int) -> Any:
        if not by_client[c]:
            return pyo.Constraint.Skip
        expr = sum(mdl.x[c, j] for j in by_client[c])
        return (int(kmin[c]), expr, int(cap[c]))

    m.capacity = pyo.Constraint(range(n), rule=capacity_rule)

    if problem.knapsack_binding and problem.expert_size is not None:
        size = problem.expert_size
        budget = problem.client_budget
        assert budget is not None

        def memory_rule(mdl: Any, c: int) -> Any:
            if not by_client[c] or not math.isfinite(budget[c]):
                return pyo.Constraint.Skip
            return sum(float(size[j]) * mdl.x[c, j] for j in by_client[c]) <= float(budget[c])

        m.memory = pyo.Constraint(range(n), rule=memory_rule)

    lo = problem.expert_min_load
    hi = problem.expert_max_load
    soft = problem.load_penalty is not None
    if soft:
        m.under = pyo.Var(range(e), domain=pyo.NonNegativeReals)
        m.over = pyo.Var(range(e), domain=pyo.NonNegativeReals)

    def load_rule(mdl: Any, j: int) -> Any:
        expr = sum(float(w[c]) * mdl.x[c, j] for c in by_expert[j])
        if soft:
            expr = expr + mdl.under[j] - mdl.over[j]
        low = float(lo[j])
        high = float(hi[j]) if math.isfinite(hi[j]) else None
        if isinstance(expr, int | float):  # no allowed client and no slack
            return pyo.Constraint.Feasible if low <= 0 else pyo.Constraint.Infeasible
        return (low, expr, high)

    m.expert_load = pyo.Constraint(range(e), rule=load_rule)

    obj = sum(float(fit[c, j]) * m.x[c, j] for c, j in pairs)
    if soft:
        pen = float(problem.load_penalty)  # type: ignore[arg-type]
        obj = obj - pen * sum(m.under[j] + m.over[j] for j in range(e))
    m.objective = pyo.Objective(expr=obj, sense=pyo.maximize)
    return m


def assignment_from_model(model: Any, problem: AssignmentProblem) -> np.ndarray:
    """Read the 0/1 assignment matrix back from a solved model."""
    x = np.zeros(problem.shape, dtype=bool)
    for (c, j), var in model.x.items():
        v = var.value
        if v is not None and v > 0.5:
            x[c, j] = True
    return x


def _use_normalised_objective(
    model: Any, problem: AssignmentProblem, lin: LinearModel, norm: NormalisedObjective
) -> None:
    """Replace the model's objective, for the solve, by the normalised equivalent.

    Offset and power-of-two scale as in every MIP backend
    (:func:`~flexassign.backends._common.normalise_objective`): the solver's gap
    then applies to the part of the objective that can vary. The original
    ``objective`` is deactivated, the new one is ``normalised_objective``.
    """
    import pyomo.environ as pyo

    m, e = lin.n_pairs, problem.n_experts
    coef = {
        (int(c), int(j)): float(v)
        for c, j, v in zip(lin.pair_client, lin.pair_expert, norm.c[:m], strict=True)
        if v != 0.0
    }
    expr = sum(v * model.x[key] for key, v in coef.items())
    if problem.load_penalty is not None:
        under, over = norm.c[m : m + e], norm.c[m + e : m + 2 * e]
        expr = expr + sum(
            float(under[j]) * model.under[j] + float(over[j]) * model.over[j] for j in range(e)
        )
    model.objective.deactivate()
    model.normalised_objective = pyo.Objective(expr=expr, sense=pyo.maximize)


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()  # importing Pyomo (~1 s the first time) counts as building
    import pyomo.environ as pyo
    from pyomo.opt import SolverStatus, TerminationCondition

    name = str(options.extra.get("solver") or "appsi_highs")
    prepared = prepare_model(problem)  # solvers disagree on empty models
    if isinstance(prepared, BackendOutput):
        return prepared
    lin, norm = prepared
    model = build_pyomo_model(problem)
    customize = options.extra.get("customize")
    if customize is not None:
        customize(model)
    _use_normalised_objective(model, problem, lin, norm)
    t_build = time.perf_counter() - t0

    opt = pyo.SolverFactory(name)
    if opt is None or not opt.available(exception_flag=False):
        return BackendOutput(
            Status.ERROR,
            message=f"Pyomo solver {name!r} is not available; install it or pass "
            "options={'solver': 'appsi_highs'} (needs highspy)",
            stats={"solver": name, "build_time": t_build},
        )
    raw = dict(options.extra.get("solver_options") or {})
    base = name.removeprefix("appsi_")
    tl_name, gap_name = _OPTION_NAMES.get(base, (None, None))
    gap = options.mip_gap
    if gap is None and base == "highs":
        gap = EXACT_GAP
    if options.time_limit is not None and tl_name is not None:
        raw.setdefault(tl_name, float(options.time_limit))
    if gap is not None and gap_name is not None:
        raw.setdefault(gap_name, float(gap))
    threads = int(options.threads or 1)
    if base == "highs":
        raw.setdefault("threads", threads)
        raw.setdefault("random_seed", int(options.seed))
        raw.setdefault("mip_abs_gap", 0.0)
        from ._highs import prepare_threads

        prepare_threads(int(raw["threads"]))  # HiGHS's scheduler is process-wide
    for key, value in raw.items():
        opt.options[key] = value
    results = opt.solve(model, tee=bool(options.verbose), load_solutions=False)
    t_solve = time.perf_counter() - t0 - t_build
    tc = results.solver.termination_condition
    stats: dict[str, Any] = {
        "solver": name,
        "build_time": t_build,
        "solve_time": t_solve,
        "solver_status": str(tc),
        "variables": len(model.x),
    }
    has_solution = len(results.solution) > 0 or name.startswith("appsi_")
    x = None
    if has_solution and tc in (
        TerminationCondition.optimal,
        TerminationCondition.maxTimeLimit,
        TerminationCondition.feasible,
        TerminationCondition.maxIterations,
        TerminationCondition.other,
    ):
        try:
            model.solutions.load_from(results)
            x = assignment_from_model(model, problem)
        except Exception:  # solvers report "no solution" in different ways
            x = None
    upper = getattr(results.problem, "upper_bound", None)
    bound = (
        norm.original(float(upper)) if upper is not None and math.isfinite(float(upper)) else None
    )
    stats.update(norm.stats())
    if customize is not None:
        stats["customized"] = True
    if tc in (TerminationCondition.infeasible, TerminationCondition.infeasibleOrUnbounded):
        outcome = "infeasible"
    elif tc == TerminationCondition.optimal and x is not None:
        outcome = "optimal"
    elif tc in (TerminationCondition.maxTimeLimit, TerminationCondition.maxIterations):
        outcome = "limit"
    elif x is not None and results.solver.status in (SolverStatus.ok, SolverStatus.warning):
        outcome = "feasible"  # a solution without a proof (e.g. the solver's own gap)
    else:
        outcome = "error"
    return mip_output(
        solver=name,
        outcome=outcome,
        x=None if outcome == "infeasible" else x,
        bound=bound,
        gap=None,  # "optimal" is the solver's own proof to the gap it was given
        integer=True,
        detail=f"termination condition {tc}",
        stats=stats,
    )
