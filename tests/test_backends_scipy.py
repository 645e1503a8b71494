"""scipy.optimize.milp: the zero-extra-dependency exact backend."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import random_problem

from flexassign import AssignmentProblem, Status, solve_assignment


def test_agrees_with_highs_on_mixed_structures() -> None:
    rng = np.random.default_rng(0)
    for trial in range(12):
        p = random_problem(
            rng,
            n=int(rng.integers(3, 15)),
            e=int(rng.integers(2, 6)),
            weighted=trial % 2 == 0,
            knapsack=trial % 3 == 0,
            soft=trial % 4 == 1,
            masks=trial % 5 == 2,
        )
        a = solve_assignment(p, method="scipy")
        b = solve_assignment(p, method="highs")
        assert a.status is b.status, trial
        if b.success:
            assert a.objective == pytest.approx(b.objective, rel=1e-9, abs=1e-9)


def test_gap_option_and_time_limit_are_reported() -> None:
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(
        rng.random((80, 10)),
        capacity=2,
        tolerance=0.05,
        client_weight=rng.integers(1, 100, size=80).astype(float),
    )
    res = solve_assignment(p, method="scipy", time_limit=1.0, threads=2)
    assert res.status in (Status.OPTIMAL, Status.TIME_LIMIT, Status.FEASIBLE)
    assert res.stats["threads_ignored"] is True
    if res.x is not None:
        assert res.bound is None or res.bound >= res.objective - 1e-9


def test_mip_gap_stops_early_and_reports_a_gap_within_it() -> None:
    # the old gap test above passes no gap: this one does, and the stop must show
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(
        rng.random((80, 10)),
        capacity=2,
        tolerance=0.05,
        client_weight=rng.integers(1, 100, size=80).astype(float),
    )
    res = solve_assignment(p, method="scipy", mip_gap=0.05)
    assert res.status is Status.FEASIBLE, res.message
    assert "mip_gap" in res.message
    assert res.bound is not None and res.gap is not None
    assert 1e-9 < res.gap <= 0.05
    assert res.stats["solver_gap"] == pytest.approx(res.gap, rel=1e-6)
    exact = solve_assignment(p, method="scipy")
    assert exact.status is Status.OPTIMAL
    assert res.objective <= exact.objective <= res.bound + 1e-9
