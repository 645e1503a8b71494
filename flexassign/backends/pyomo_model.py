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
normalised equivalent (offset and power-of-two scale, as in every MIP backend; a
dominant shared offset goes through the count phase first, which adds the row
``count_fixed``, except with ``customize``), so the gap applies to the part that can
vary; the claim is then checked independently (``stats["bound_check"]``).

``time_limit`` covers the whole call. The rows are built as Pyomo
``LinearExpression`` objects directly (about 8 s at 16,000 x 32, before: 15 s), and
the clock is checked between the build's stages: when the limit runs out, the build
stops and the answer is ``TIME_LIMIT`` without an assignment (``solve_assignment``
then returns its start). Two steps cannot be interrupted: the first ``import pyomo``
(~1 s) and Pyomo's creation of the variables (~2-3 s at 16,000 x 32). ``appsi_*``
solvers receive the model (``set_instance``, about as slow as building it) before the
last clock check, so that translation counts as building and the solver's own limit
is what is left; other solvers translate inside ``solve``, on top of the limit.

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
from ._common import (
    EXACT_GAP,
    MIN_SOLVER_TIME,
    NormalisedObjective,
    mip_output,
    out_of_time,
    prepare_model,
    time_left,
)
from ._guard import TIGHT_MIP_FEASIBILITY, TIGHTEN_BELOW, certify, solver_resolution
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


def _check_clock(deadline: float | None, stage: str) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise TimeoutError(f"the deadline passed while {stage}")


def _linear(coefs: Any, variables: list[Any]) -> Any:
    """``sum(coefs[i] * variables[i])`` as one Pyomo ``LinearExpression``, built directly
    (about twice as fast as ``sum`` or ``quicksum``, which grow the expression term by
    term)."""
    from pyomo.core.expr.numeric_expr import LinearExpression, MonomialTermExpression

    return LinearExpression(
        [MonomialTermExpression((a, v)) for a, v in zip(coefs, variables, strict=True)]
    )


#: Clients between two clock checks while building the capacity and memory rows.
_CHECK_EVERY = 2000


#: appsi's change checks, off once the model is in the solver (nothing changes before
#: the solve).
_APPSI_UPDATE_CHECKS = (
    "check_for_new_or_removed_constraints",
    "check_for_new_or_removed_vars",
    "check_for_new_or_removed_params",
    "check_for_new_objective",
    "update_constraints",
    "update_vars",
    "update_params",
    "update_named_expressions",
    "update_objective",
)


def build_pyomo_model(problem: AssignmentProblem, *, deadline: float | None = None) -> Any:
    """Build the assignment problem as a Pyomo ``ConcreteModel``.

    Parameters
    ----------
    problem : AssignmentProblem
    deadline : float, optional
        A :func:`time.perf_counter` time: the build checks the clock between its stages
        (and every few thousand clients) and raises :class:`TimeoutError` once it has
        passed (``solve_assignment`` uses it to honour ``time_limit``).

    Returns
    -------
    pyomo.environ.ConcreteModel
        With components ``P``, ``x``, ``capacity``, ``memory`` (binding knapsack only),
        ``expert_load``, ``under``/``over`` (soft bounds only) and ``objective``; see the module
        docstring. ``x`` is indexed by ``(client, expert)`` over the allowed pairs.

    Raises
    ------
    TimeoutError
        ``deadline`` passed before the model was complete.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> m = build_pyomo_model(AssignmentProblem(np.eye(2), capacity=1))
    >>> len(m.x), len(m.capacity), len(m.expert_load)
    (4, 2, 2)
    """
    import pyomo.environ as pyo
    from pyomo.core.expr.numeric_expr import LinearExpression

    n, e = problem.shape
    allowed = problem.allowed_mask
    fit = problem.fitness
    w = problem.weights
    pc, pe = np.nonzero(allowed)  # row-major: pairs sorted by client, then expert
    pairs = list(zip(pc.tolist(), pe.tolist(), strict=True))

    m = pyo.ConcreteModel(name="flexassign")
    m.P = pyo.Set(initialize=pairs, dimen=2, ordered=True)
    m.x = pyo.Var(m.P, domain=pyo.Binary)
    xs = list(m.x.values())  # in the order of P, i.e. of ``pairs``
    fixed = problem.fixed_mask[pc, pe]
    for i in np.flatnonzero(fixed).tolist():
        xs[i].fix(1)
    _check_clock(deadline, "creating the variables")

    cap = problem.capacity
    kmin = problem.min_experts
    bounds = np.searchsorted(pc, np.arange(n + 1))  # client c's pairs: bounds[c]:bounds[c+1]
    rows: dict[int, Any] = {}
    for c in range(n):
        a, b = int(bounds[c]), int(bounds[c + 1])
        if a < b:
            rows[c] = (int(kmin[c]), LinearExpression(xs[a:b]), int(cap[c]))
        if c % _CHECK_EVERY == 0:
            _check_clock(deadline, "building the capacity rows")
    m.capacity = pyo.Constraint(list(rows), rule=lambda mdl, c: rows[c])
    _check_clock(deadline, "building the capacity rows")

    if problem.knapsack_binding and problem.expert_size is not None:
        size = problem.expert_size
        budget = problem.client_budget
        assert budget is not None
        mem: dict[int, Any] = {}
        for c in range(n):
            a, b = int(bounds[c]), int(bounds[c + 1])
            if a < b and math.isfinite(budget[c]):
                mem[c] = _linear(size[pe[a:b]].tolist(), xs[a:b]) <= float(budget[c])
            if c % _CHECK_EVERY == 0:
                _check_clock(deadline, "building the memory rows")
        m.memory = pyo.Constraint(list(mem), rule=lambda mdl, c: mem[c])
        _check_clock(deadline, "building the memory rows")

    lo = problem.expert_min_load
    hi = problem.expert_max_load
    soft = problem.load_penalty is not None
    if soft:
        m.under = pyo.Var(range(e), domain=pyo.NonNegativeReals)
        m.over = pyo.Var(range(e), domain=pyo.NonNegativeReals)
    order = np.argsort(pe, kind="stable")
    starts = np.searchsorted(pe[order], np.arange(e + 1))
    loads: dict[int, Any] = {}
    for j in range(e):
        idx = order[starts[j] : starts[j + 1]]
        coefs = w[pc[idx]].tolist()
        terms = [xs[i] for i in idx.tolist()]
        if soft:
            coefs += [1.0, -1.0]
            terms += [m.under[j], m.over[j]]
        low = float(lo[j])
        high = float(hi[j]) if math.isfinite(hi[j]) else None
        if not terms:  # no allowed client and no slack
            loads[j] = pyo.Constraint.Feasible if low <= 0 else pyo.Constraint.Infeasible
        else:
            loads[j] = (low, _linear(coefs, terms), high)
        _check_clock(deadline, "building the expert load rows")
    m.expert_load = pyo.Constraint(range(e), rule=lambda mdl, j: loads[j])

    coefs = fit[pc, pe].tolist()
    terms = list(xs)
    if soft:
        pen = float(problem.load_penalty)  # type: ignore[arg-type]
        coefs += [-pen] * (2 * e)
        terms += [m.under[j] for j in range(e)] + [m.over[j] for j in range(e)]
    m.objective = pyo.Objective(expr=_linear(coefs, terms), sense=pyo.maximize)
    _check_clock(deadline, "building the objective")
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
    keep = np.flatnonzero(norm.c[:m] != 0.0)
    xs = list(model.x.values())  # the order of P: the model's pair columns
    coefs = norm.c[:m][keep].tolist()
    terms = [xs[i] for i in keep.tolist()]
    if problem.load_penalty is not None:
        coefs += norm.c[m : m + 2 * e].tolist()
        terms += [model.under[j] for j in range(e)] + [model.over[j] for j in range(e)]
    expr = _linear(coefs, terms)
    if norm.count_fixed is not None:  # the count phase fixed N (an extra row)
        counted = [xs[i] for i in norm.count_cols.tolist()]
        model.count_fixed = pyo.Constraint(
            expr=_linear([1.0] * len(counted), counted) == float(norm.count_fixed)
        )
    model.objective.deactivate()
    model.normalised_objective = pyo.Objective(expr=expr, sense=pyo.maximize)


def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
    t0 = time.perf_counter()  # importing Pyomo (~1 s the first time) counts as building
    import pyomo.environ as pyo
    from pyomo.opt import SolverStatus, TerminationCondition

    name = str(options.extra.get("solver") or "appsi_highs")
    customize = options.extra.get("customize")
    # solvers disagree on empty models; the count phase needs the model as built here
    prepared = prepare_model(problem, None if customize is not None else options, t0)
    if isinstance(prepared, BackendOutput):
        return prepared
    lin, norm = prepared
    deadline = None if options.time_limit is None else t0 + options.time_limit
    try:
        _check_clock(deadline, "importing Pyomo")
        model = build_pyomo_model(problem, deadline=deadline)
    except TimeoutError as exc:
        return out_of_time(
            name,
            float(options.time_limit or 0),
            f"building the Pyomo model ({exc})",
            time.perf_counter() - t0,
            {"solver": name, "build_time": time.perf_counter() - t0, "solve_time": 0.0},
        )
    if customize is not None:
        customize(model)
    _use_normalised_objective(model, problem, lin, norm)
    t_build = time.perf_counter() - t0
    left = time_left(options, t0)  # building counts against the limit
    if left is not None and left <= MIN_SOLVER_TIME:
        return out_of_time(
            name,
            float(options.time_limit or 0),
            "building the Pyomo model",
            t_build,
            {"solver": name, "build_time": t_build, "solve_time": 0.0},
        )

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
    if gap is not None and gap_name is not None:
        raw.setdefault(gap_name, float(gap))
    threads = int(options.threads or 1)
    if base == "highs":
        raw.setdefault("threads", threads)
        raw.setdefault("random_seed", int(options.seed))
        raw.setdefault("mip_abs_gap", 0.0)
        if solver_resolution(problem, lin, norm.c) < TIGHTEN_BELOW:
            raw.setdefault("mip_feasibility_tolerance", TIGHT_MIP_FEASIBILITY)
        from ._highs import prepare_threads

        prepare_threads(int(raw["threads"]))  # HiGHS's scheduler is process-wide
    for key, value in raw.items():
        opt.options[key] = value
    if name.startswith("appsi_") and hasattr(opt, "set_instance"):
        # appsi solvers are persistent: translating the model into the solver (as slow
        # as building it) happens here, so it counts as building, the clock is checked
        # after it, and the solve below only has to look for changes, of which there
        # are none (those checks, another walk over the model, are switched off)
        opt.set_instance(model)
        for key in _APPSI_UPDATE_CHECKS:
            setattr(opt.update_config, key, False)
        t_build = time.perf_counter() - t0
        left = time_left(options, t0)
        if left is not None and left <= MIN_SOLVER_TIME:
            return out_of_time(
                name,
                float(options.time_limit or 0),
                f"handing the Pyomo model to {name}",
                t_build,
                {"solver": name, "build_time": t_build, "solve_time": 0.0},
            )
    if left is not None and tl_name is not None and tl_name not in raw:
        opt.options[tl_name] = float(left)  # what building and translating left
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
    bound = norm.upper(float(upper)) if upper is not None and math.isfinite(float(upper)) else None
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
    out = mip_output(
        solver=name,
        outcome=outcome,
        x=None if outcome == "infeasible" else x,
        bound=bound,
        gap=None,  # "optimal" is the solver's own proof to the gap it was given
        integer=True,
        detail=f"termination condition {tc}",
        stats=stats,
    )
    return certify(problem, lin, norm.c, norm.exponent, out, options, solver=name, t0=t0)
