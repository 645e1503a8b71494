"""CP-SAT: integer scaling that keeps the optimum, the solver's bound, options."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import weighted_balanced

from flexassign import AssignmentProblem, Status, solve_assignment


def _solve(p: AssignmentProblem, **kw):  # type: ignore[no-untyped-def]
    return solve_assignment(p, method="cpsat", **kw)


def test_integer_and_dyadic_fitness_scale_exactly() -> None:
    rng = np.random.default_rng(0)
    for fitness in (rng.integers(-5, 20, size=(30, 5)), rng.integers(0, 64, size=(30, 5)) / 8):
        p = AssignmentProblem.balanced(fitness.astype(float), capacity=2, tolerance=0.2)
        res = _solve(p)
        assert res.status is Status.OPTIMAL
        assert res.stats["objective_scaling_exact"] is True
        assert res.stats["rounding_error_bound"] == 0.0
        # the proven bound is the objective: nothing lost to scaling
        assert res.bound == pytest.approx(res.objective, abs=0)
        assert res.objective == pytest.approx(solve_assignment(p, method="flow").objective)


def test_float_fitness_reports_scale_and_error_bound() -> None:
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(rng.random((40, 6)), capacity=2, tolerance=0.2)
    res = _solve(p)
    assert res.status is Status.OPTIMAL
    assert res.stats["objective_scaling_exact"] is False
    scale = res.stats["objective_scale"]
    assert scale >= 2.0**30 and np.log2(scale) == int(np.log2(scale))
    assert 0 < res.stats["rounding_error_bound"] < 1e-9
    assert res.bound >= res.objective and res.gap < 1e-9
    assert res.objective == pytest.approx(solve_assignment(p, method="highs").objective, rel=1e-12)


def test_weighted_loads_with_integer_weights_are_exact() -> None:
    p = weighted_balanced(2, (30, 5), capacity=2, tolerance=0.2, max_weight=30)
    res = _solve(p)
    assert res.stats["constraint_scaling_exact"] is True
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(solve_assignment(p, method="highs").objective, rel=1e-9)


def test_non_representable_weights_are_tightened_and_not_called_optimal() -> None:
    rng = np.random.default_rng(3)
    p = AssignmentProblem.balanced(
        rng.random((20, 4)), capacity=1, tolerance=0.3, client_weight=rng.random(20) + 0.5
    )
    res = _solve(p)
    assert res.stats["constraint_scaling_exact"] is False
    assert res.status is Status.FEASIBLE and res.success  # feasible, optimality unproven
    assert "conservatively" in res.message


def test_threads_time_limit_seed_and_hint() -> None:
    rng = np.random.default_rng(4)
    p = AssignmentProblem.balanced(rng.random((50, 6)), capacity=2, tolerance=0.1)
    hint = solve_assignment(p, method="greedy-balanced").x
    res = _solve(p, threads=2, time_limit=20, seed=7, options={"warm_start": hint})
    assert res.stats["threads"] == 2
    assert res.status is Status.OPTIMAL
    raw = _solve(p, options={"cpsat_parameters": {"num_workers": 1, "max_time_in_seconds": 5.0}})
    assert raw.objective == pytest.approx(res.objective)


def test_a_time_limit_reads_as_one_when_cp_sat_clocks_less(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    # On a busy machine CP-SAT's own wall time can read under the limit it stopped at;
    # with no gap requested, a FEASIBLE stop is the time limit, never "the requested gap"
    from ortools.sat.python import cp_model

    p = weighted_balanced(4, (300, 24), capacity=3, tolerance=0.02, max_weight=100)
    solve_assignment(p.fitness[:4, :2], capacity=1, method="cpsat", time_limit=5.0)  # imports
    monkeypatch.setattr(cp_model.CpSolver, "wall_time", property(lambda self: 0.0))
    res = solve_assignment(p, method="cpsat", time_limit=1.0)
    if res.status is Status.OPTIMAL or res.x is None:  # proved, or no time to find one
        pytest.skip(f"CP-SAT returned {res.status.value}: no stop short of a proof to label")
    assert res.status is Status.TIME_LIMIT, (res.status, res.message)
    assert "requested gap" not in res.message
