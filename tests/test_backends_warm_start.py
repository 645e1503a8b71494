"""Warm starts: HiGHS and CP-SAT accept a start assignment and keep it as incumbent."""

from __future__ import annotations

import numpy as np
import pytest

from flexassign import AssignmentProblem, Status, solve_assignment


def _weighted(seed: int = 0) -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    return AssignmentProblem.balanced(
        rng.random((150, 12)),
        capacity=2,
        tolerance=0.05,
        client_weight=rng.integers(1, 200, size=150).astype(float),
    )


@pytest.mark.parametrize("method", ["highs", "cpsat"])
def test_warm_start_from_lp_round_is_used(method: str) -> None:
    p = _weighted()
    start = solve_assignment(p, method="lp-round")
    assert start.success
    # HiGHS takes the start as its first incumbent; CP-SAT treats it as a hint (its
    # presolve needs a little time before the hint is tried)
    limit = 0.05 if method == "highs" else 2.0
    res = solve_assignment(p, method=method, time_limit=limit, options={"warm_start": start.x})
    assert res.x is not None and res.success
    assert res.objective >= start.objective - 1e-9


def test_cpsat_first_solution_is_the_hint() -> None:
    # stop at CP-SAT's first solution: with the hint that is the hint (or better);
    # without it CP-SAT's own first solution is worse, so this fails if the hint is
    # ignored (deterministic: one worker, seed 0)
    p = _weighted()
    start = solve_assignment(p, method="lp-round")
    first = {"cpsat_parameters": {"stop_after_first_solution": True}}
    hinted = solve_assignment(p, method="cpsat", options={**first, "warm_start": start.x})
    cold = solve_assignment(p, method="cpsat", options=first)
    assert hinted.success and cold.success
    assert hinted.objective >= start.objective - 1e-9
    assert cold.objective < start.objective - 1e-6


def test_warm_start_does_not_change_the_optimum() -> None:
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(rng.random((40, 5)), capacity=2, tolerance=0.1)
    cold = solve_assignment(p, method="highs")
    warm = solve_assignment(
        p, method="highs", options={"warm_start": solve_assignment(p, method="greedy-balanced").x}
    )
    assert cold.status is Status.OPTIMAL and warm.status is Status.OPTIMAL
    assert warm.objective == pytest.approx(cold.objective)


def test_a_start_is_never_lost_to_the_time_limit() -> None:
    # a limit too short for HiGHS to read the start (a loaded machine does the same to
    # longer limits): the feasible start still comes back, never a worse incumbent
    p = _weighted(1)
    start = solve_assignment(p, method="lp-round")
    res = solve_assignment(p, method="highs", time_limit=1e-3, options={"warm_start": start.x})
    assert res.x is not None
    assert res.objective >= start.objective - 1e-9
