"""The min-cost flow backend handles any fitness scale without losing optimality."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import reference_solve

from flexassign import AssignmentProblem, Status, solve_assignment


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1.0, 1e6, 1e15])
def test_flow_optimal_at_any_scale(scale: float) -> None:
    rng = np.random.default_rng(11)
    base = rng.normal(size=(30, 5))
    p = AssignmentProblem.balanced(base * scale, capacity=2, tolerance=0.2)
    res = solve_assignment(p, method="flow")
    assert res.status is Status.OPTIMAL
    # same assignment as at scale 1 (ties are measure-zero for normal draws), and
    # the same as HiGHS proves optimal at that scale
    unit_p = AssignmentProblem.balanced(base, capacity=2, tolerance=0.2)
    unit = solve_assignment(unit_p, method="flow")
    np.testing.assert_array_equal(res.x, unit.x)
    assert unit.objective == pytest.approx(reference_solve(unit_p).objective, rel=1e-12)
    assert res.objective == pytest.approx(unit.objective * scale, rel=1e-12)
    # HiGHS, too, must not stop early at small scales (its default gaps are 1e-4 / 1e-6)
    assert solve_assignment(p, method="highs").objective == pytest.approx(res.objective, rel=1e-9)


def test_integral_fitness_is_exact() -> None:
    rng = np.random.default_rng(12)
    p = AssignmentProblem.balanced(rng.integers(-50, 100, (40, 6)), capacity=3, tolerance=0.1)
    res = solve_assignment(p, method="flow")
    assert res.stats["objective_scale"] == 1.0
    assert res.stats["rounding_error_bound"] == 0.0
    assert res.bound == res.objective and res.gap == 0.0


def test_tiny_differences_resolved() -> None:
    # two clients, one slot on expert 0: the 1e-13 difference decides who gets it
    f = np.array([[1.0 + 1e-13, 0.0], [1.0, 0.0]])
    res = solve_assignment(f, capacity=1, expert_max_load=[1, 2], method="flow")
    assert res.experts[0] == (0,)


def test_huge_and_tiny_values_together() -> None:
    f = np.array([[1e12, 1e-6], [1e12 + 1.0, 3e-6], [5.0, 2e-6]])
    p = AssignmentProblem(f, capacity=1, expert_max_load=[1, 2])
    res = solve_assignment(p, method="flow")
    ref = reference_solve(p)
    assert res.objective == pytest.approx(ref.objective, rel=1e-12)
    assert res.experts[1] == (0,)


def test_fixed_and_forbidden_pairs_in_flow() -> None:
    f = np.array([[5.0, 1.0, 1.0], [5.0, 1.0, 1.0], [1.0, 1.0, 5.0]])
    fixed = np.zeros((3, 3), dtype=bool)
    fixed[0, 1] = True
    allowed = np.ones((3, 3), dtype=bool)
    allowed[1, 0] = False
    res = solve_assignment(f, capacity=1, fixed=fixed, allowed=allowed, method="flow")
    assert res.experts == [(1,), (1,), (2,)] or res.experts == [(1,), (2,), (2,)]
    assert res.objective == pytest.approx(7.0)


@pytest.mark.parametrize("bounds", [(1.5, 2.5), (0.0, 1.2), (2.7, 4.0)])
def test_soft_fractional_bounds_match_reference(bounds: tuple[float, float]) -> None:
    rng = np.random.default_rng(13)
    p = AssignmentProblem(
        rng.random((8, 4)),
        capacity=2,
        expert_min_load=bounds[0],
        expert_max_load=bounds[1],
        load_penalty=0.3,
        client_weight=np.full(8, 1.0),
    )
    res = solve_assignment(p, method="flow")
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(reference_solve(p).objective, rel=1e-9)
