"""Pyomo: the model users can extend, and any Pyomo solver through options."""

from __future__ import annotations

import numpy as np
import pytest

pyo = pytest.importorskip("pyomo.environ")

from flexassign import AssignmentProblem, Status, solve_assignment  # noqa: E402
from flexassign.backends.pyomo_model import (  # noqa: E402
    assignment_from_model,
    build_pyomo_model,
)


def _problem() -> AssignmentProblem:
    rng = np.random.default_rng(0)
    return AssignmentProblem.balanced(rng.random((12, 4)), capacity=2, tolerance=0.3)


def test_model_components() -> None:
    p = _problem().replace(load_penalty=0.5)
    m = build_pyomo_model(p)
    assert len(m.x) == 48 and len(m.capacity) == 12 and len(m.expert_load) == 4
    assert hasattr(m, "under") and hasattr(m, "over")
    assert m.objective.sense == pyo.maximize


def test_user_constraint_through_pyomo_directly() -> None:
    p = _problem()
    base = solve_assignment(p, method="highs")
    c0 = base.experts[0]
    m = build_pyomo_model(p)
    # forbid client 0's optimal choice
    m.user_rule = pyo.Constraint(expr=sum(m.x[0, j] for j in c0) <= len(c0) - 1)
    pyo.SolverFactory("appsi_highs").solve(m)
    x = assignment_from_model(m, p)
    assert tuple(np.flatnonzero(x[0])) != c0
    assert p.objective(x) <= base.objective + 1e-9


def test_customize_option_and_default_solver() -> None:
    p = _problem()
    plain = solve_assignment(p, method="pyomo")
    assert plain.status is Status.OPTIMAL and plain.stats["solver"] == "appsi_highs"
    assert plain.objective == pytest.approx(solve_assignment(p, method="flow").objective)

    def no_expert_0_for_client_1(m) -> None:  # type: ignore[no-untyped-def]
        m.x[1, 0].fix(0)

    custom = solve_assignment(p, method="pyomo", options={"customize": no_expert_0_for_client_1})
    assert custom.success and not custom.x[1, 0]
    assert custom.objective <= plain.objective + 1e-9


def test_other_pyomo_solver_and_missing_solver() -> None:
    p = _problem()
    res = solve_assignment(p, method="pyomo", options={"solver": "highs"})
    assert res.status is Status.OPTIMAL and res.stats["solver"] == "highs"
    missing = solve_assignment(p, method="pyomo", options={"solver": "no_such_solver"})
    assert missing.status is Status.ERROR and "no_such_solver" in missing.message
