"""Soft load bounds (slack at a penalty per unit) on every MIP/LP backend."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import random_problem, reference_solve

from flexassign import Status, available_backends, solve_assignment
from flexassign.backends.registry import get_backend

SOFT = [
    name
    for name in ("flow", "highs", "scipy", "cpsat", "pyomo", "lp-round")
    if name in available_backends()
]


@pytest.mark.parametrize("method", SOFT)
def test_soft_mode_matches_reference(method: str) -> None:
    backend = get_backend(method)
    assert backend.soft
    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(12):
        p = random_problem(
            rng,
            n=int(rng.integers(3, 9)),
            e=int(rng.integers(2, 5)),
            soft=True,
            weighted=trial % 3 == 1,
            knapsack=trial % 4 == 2,
            tolerance=0.05,
        )
        if backend.unsupported_reason(p) is not None:
            continue
        ref = reference_solve(p)
        res = solve_assignment(p, method=method)
        checked += 1
        if not ref.feasible:  # only client-side constraints can make it infeasible
            assert res.status is Status.INFEASIBLE
            continue
        assert res.success, (trial, res.message)
        # the penalty is paid, never the constraint broken
        assert res.objective == pytest.approx(p.objective(res.x))
        if backend.exact or res.status is Status.OPTIMAL:
            assert res.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
        else:
            assert res.objective <= ref.objective + 1e-9
            assert res.bound is not None and res.bound >= ref.objective - 1e-7
    assert checked >= 4


@pytest.mark.parametrize("method", SOFT)
def test_soft_mode_trades_penalty_against_fitness(method: str) -> None:
    # everyone prefers expert 0; a cheap penalty lets it overflow, a dear one does not
    fitness = np.tile([1.0, 0.0], (6, 1))
    from flexassign import AssignmentProblem

    cheap = AssignmentProblem(fitness, capacity=1, expert_max_load=3, load_penalty=0.1)
    dear = cheap.replace(load_penalty=5.0)
    assert solve_assignment(cheap, method=method).x[:, 0].sum() == 6
    assert solve_assignment(dear, method=method).x[:, 0].sum() == 3
