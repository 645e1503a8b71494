"""Soft load bounds (slack at a penalty per unit) on every MIP/LP backend."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import Schedule, assert_agrees_with_reference, mixed_problems

from flexassign import Status, list_backends, solve_assignment
from flexassign.backends.registry import get_backend

# registry-driven: every installed backend that declares soft bounds (the greedy
# ones too: soft bounds cannot make them break a constraint)
SOFT = [b.name for b in list_backends() if b.soft and b.installed()]


@pytest.mark.parametrize("method", SOFT)
def test_soft_mode_matches_reference(method: str) -> None:
    backend = get_backend(method)
    assert backend.soft
    rng = np.random.default_rng(7)
    checked = 0
    on: dict[str, Schedule] = {"weighted": (3, 1), "knapsack": (4, 2)}
    for trial, p in mixed_problems(rng, 12, n=(3, 9), e=(2, 5), on=on, soft=True, tolerance=0.05):
        if backend.unsupported_reason(p) is not None:
            continue
        res = solve_assignment(p, method=method)
        checked += 1
        if backend.kind == "baseline":  # greedy top-k: no balance, but penalty paid
            assert res.objective == pytest.approx(p.objective(res.x))
            continue
        # the penalty is paid, never the constraint broken; only client-side
        # constraints can make it infeasible
        ref = assert_agrees_with_reference(p, res, exact=backend.exact, label=trial)
        if ref.feasible and method == "lp-round" and res.status is not Status.OPTIMAL:
            assert res.bound is not None  # the LP bound
    assert checked >= 4


# the greedy heuristics never exceed a maximum load, so they cannot trade
TRADING = [n for n in SOFT if n not in ("greedy", "greedy-balanced")]


@pytest.mark.parametrize("method", TRADING)
def test_soft_mode_trades_penalty_against_fitness(method: str) -> None:
    # everyone prefers expert 0; a cheap penalty lets it overflow, a dear one does not
    fitness = np.tile([1.0, 0.0], (6, 1))
    from flexassign import AssignmentProblem

    cheap = AssignmentProblem(fitness, capacity=1, expert_max_load=3, load_penalty=0.1)
    dear = cheap.replace(load_penalty=5.0)
    assert solve_assignment(cheap, method=method).x[:, 0].sum() == 6
    assert solve_assignment(dear, method=method).x[:, 0].sum() == 3
