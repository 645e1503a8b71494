"""scipy.optimize.milp: the zero-extra-dependency exact backend."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import mixed_problems, weighted_balanced

from flexassign import Status, solve_assignment


def test_agrees_with_highs_on_mixed_structures() -> None:
    rng = np.random.default_rng(0)
    for trial, p in mixed_problems(
        rng,
        12,
        n=(3, 15),
        e=(2, 6),
        on={"weighted": (2, 0), "knapsack": (3, 0), "soft": (4, 1), "masks": (5, 2)},
    ):
        a = solve_assignment(p, method="scipy")
        b = solve_assignment(p, method="highs")
        assert a.status is b.status, trial
        if b.success:
            assert a.objective == pytest.approx(b.objective, rel=1e-9, abs=1e-9)


def test_gap_option_and_time_limit_are_reported() -> None:
    p = weighted_balanced(1, (80, 10), capacity=2, tolerance=0.05, max_weight=100)
    res = solve_assignment(p, method="scipy", time_limit=1.0, threads=2)
    assert res.status in (Status.OPTIMAL, Status.TIME_LIMIT, Status.FEASIBLE)
    assert res.stats["threads_ignored"] is True
    if res.x is not None:
        assert res.bound is None or res.bound >= res.objective - 1e-9


def test_mip_gap_stops_early_and_reports_a_gap_within_it() -> None:
    # the old gap test above passes no gap: this one does, and the stop must show
    p = weighted_balanced(1, (80, 10), capacity=2, tolerance=0.05, max_weight=100)
    res = solve_assignment(p, method="scipy", mip_gap=0.05)
    assert res.status is Status.FEASIBLE, res.message
    assert "mip_gap" in res.message
    assert res.bound is not None and res.gap is not None
    assert 1e-9 < res.gap <= 0.05
    assert res.stats["solver_gap"] == pytest.approx(res.gap, rel=1e-6)
    exact = solve_assignment(p, method="scipy")
    assert exact.status is Status.OPTIMAL
    assert res.objective <= exact.objective <= res.bound + 1e-9
