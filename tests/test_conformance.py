"""The conformance suite every backend must pass.

Parametrized over the registry, so a newly registered backend is tested here
without further work: feasibility, objective recomputation, determinism,
infeasibility detection, time limits, and agreement with an independent MIP.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _problems import Schedule, assert_agrees_with_reference, mixed_problems, weighted_balanced

from flexassign import (
    AssignmentProblem,
    Status,
    available_backends,
    list_backends,
    solve_assignment,
    verify_assignment,
)
from flexassign.backends.registry import get_backend

ALL = available_backends()
EXACT = [b.name for b in list_backends() if b.exact and b.installed()]
NON_EXACT = [b.name for b in list_backends() if not b.exact and b.installed()]


def supports(name: str, p: AssignmentProblem) -> bool:
    return get_backend(name).unsupported_reason(p) is None


def test_core_backends_registered_and_installed() -> None:
    for name in ("flow", "highs", "greedy", "greedy-balanced"):
        assert name in ALL


@pytest.mark.parametrize("method", ALL)
def test_returns_verified_feasible_assignment(method: str) -> None:
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(rng.random((40, 6)), capacity=2, tolerance=0.3)
    res = solve_assignment(p, method=method)
    assert res.method == method
    assert res.x is not None and res.x.shape == (40, 6) and res.x.dtype == bool
    # the objective and loads are recomputed independently here
    assert res.objective == pytest.approx(float((p.fitness * res.x).sum()), rel=1e-12)
    np.testing.assert_allclose(res.loads, res.x.sum(axis=0))
    assert res.experts == [tuple(np.flatnonzero(r)) for r in res.x]
    if get_backend(method).kind == "baseline":
        assert res.status is not Status.OPTIMAL
    else:
        assert res.success, res.message
        assert verify_assignment(p, res.x).ok
    if get_backend(method).exact:
        assert res.status is Status.OPTIMAL
        assert res.gap is not None and res.gap < 1e-9


@pytest.mark.parametrize("method", ALL)
def test_deterministic(method: str) -> None:
    rng = np.random.default_rng(2)
    p = AssignmentProblem.balanced(rng.random((60, 8)).round(1), capacity=2, tolerance=0.2)
    a = solve_assignment(p, method=method, seed=3)
    b = solve_assignment(p, method=method, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.objective == b.objective


@pytest.mark.parametrize("method", EXACT)
def test_exact_backends_match_reference_on_random_instances(method: str) -> None:
    checked = 0
    on: dict[str, Schedule] = {
        "weighted": (3, 1),
        "knapsack": (4, 2),
        "masks": (2, 0),
        "fixed": (5, 3),
        "mixed_sign": (2, 1),
        "exact": (6, 5),
    }
    for trial, p in mixed_problems(np.random.default_rng(3), 30, n=(2, 9), e=(2, 5), on=on):
        if not supports(method, p):
            continue
        res = solve_assignment(p, method=method)
        checked += 1
        assert_agrees_with_reference(p, res, exact=True, label=trial)
    assert checked >= 10


@pytest.mark.parametrize("method", EXACT)
def test_infeasible_found_by_solver_not_presolve(method: str) -> None:
    # Hall violation: experts 0 and 1 need 2 clients each, only clients 0-1 may take
    # them and each has capacity 1. No aggregate or per-expert check catches it.
    allowed = np.ones((4, 3), dtype=bool)
    allowed[2:, :2] = False
    p = AssignmentProblem(
        np.ones((4, 3)),
        capacity=[1, 1, 3, 3],
        expert_min_load=[2, 2, 0],
        allowed=allowed,
    )
    from flexassign import diagnose_infeasibility

    assert diagnose_infeasibility(p) is None
    res = solve_assignment(p, method=method)
    assert res.status is Status.INFEASIBLE
    assert not res.success and res.x is None


@pytest.mark.parametrize("method", EXACT)
def test_presolve_reports_reason(method: str) -> None:
    p = AssignmentProblem(np.ones((5, 3)), capacity=2, expert_min_load=[4, 4, 4])
    res = solve_assignment(p, method=method)
    assert res.status is Status.INFEASIBLE
    assert res.message == "total capacity 10 < total minimum expert load 12"


def _binding_time_limit_problem() -> AssignmentProblem:
    # weighted, tight balance: no exact backend proves this within 0.3 s here
    return weighted_balanced(4, (300, 24), capacity=3, tolerance=0.02, max_weight=100)


@pytest.mark.parametrize("method", [n for n in ALL if get_backend(n).time_limit])
def test_time_limit_honoured(method: str) -> None:
    p = _binding_time_limit_problem()
    limit = 0.3
    # first imports (pyomo's takes about 1 s of CPU) are not what this test measures
    solve_assignment(p.fitness[:4, :2], capacity=1, method=method, time_limit=5.0)
    t0, c0 = time.perf_counter(), time.process_time()
    res = solve_assignment(p, method=method, time_limit=limit)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the documented promise: the whole call, model building included, within the
    # limit plus the solver's last clock check and verification (measured: each test
    # 0.1-0.85 s on an idle machine, a reference solve included). Bounded at twice the
    # limit plus that in CPU time, which a busy machine does not stretch; wall time only
    # against hangs (the wall-clock bounds run in the slow suite: test_time_limits.py)
    assert cpu <= 2 * (limit + 0.85), (cpu, elapsed, res.message)
    assert elapsed <= 10 * (limit + 0.85), (cpu, elapsed, res.message)
    # an overrun note only when the call really ran past the reporting slack (pyomo's
    # first `import pyomo` in a process, ~1 s, can cause one)
    if "exceeded" in res.message:
        assert elapsed > limit + 0.5 + 0.5 * limit, (elapsed, res.message)
        assert res.stats["time_limit_exceeded"] > 0.5 + 0.5 * limit
    if get_backend(method).exact:
        assert res.status is Status.TIME_LIMIT, (res.status, res.message)  # the limit binds
    if res.x is None:
        # a loaded machine can spend the whole 0.3 s before any start is found: then it
        # says so, and claims nothing (idle, every backend returns an assignment here)
        assert res.status is Status.TIME_LIMIT and not res.success
        assert "without a feasible assignment" in res.message or "spent before" in res.message, (
            res.message
        )
        assert res.bound is None or np.isfinite(res.bound)
        return
    # stopped or not, it returns its best verified assignment with a valid bound and gap
    assert res.success and verify_assignment(p, res.x).ok, res.message
    assert res.bound is not None and res.gap is not None
    assert res.bound >= res.objective
    optimum = solve_assignment(p, method="lp-round").bound
    assert optimum is not None and res.objective <= optimum + 1e-9


@pytest.mark.parametrize("method", [n for n in ALL if not get_backend(n).time_limit])
def test_backends_without_a_limit_say_so(method: str) -> None:
    p = AssignmentProblem.balanced(
        np.random.default_rng(5).random((20, 4)), capacity=1, tolerance=0.3
    )
    res = solve_assignment(p, method=method, time_limit=5.0)
    assert res.stats["time_limit_ignored"] is True
    assert "time_limit ignored" in res.message


@pytest.mark.parametrize("method", [b.name for b in list_backends() if b.soft and b.installed()])
def test_soft_bounds_never_infeasible_and_pay_penalty(method: str) -> None:
    # hard bounds are infeasible: expert 1 must take 4 clients and only 3 exist
    fitness = np.array([[1.0, 0.2], [1.0, 0.3], [0.9, 0.4]])
    p_hard = AssignmentProblem(fitness, capacity=1, expert_min_load=[0, 4])
    assert solve_assignment(p_hard, method="highs").status is Status.INFEASIBLE
    p = p_hard.replace(load_penalty=0.5)
    res = solve_assignment(p, method=method)
    assert res.x is not None
    short = max(0.0, 4 - res.x[:, 1].sum())
    assert res.objective == pytest.approx((fitness * res.x).sum() - 0.5 * short)
    if get_backend(method).exact:
        # brute force: each client takes nothing, expert 0 or expert 1
        best = max(
            p.objective(np.array([[a == 1, a == 2] for a in choice]))
            for choice in np.ndindex(3, 3, 3)
        )
        assert res.status is Status.OPTIMAL
        assert res.objective == pytest.approx(best)


def test_non_exact_claims_optimal_only_with_a_matching_bound() -> None:
    rng = np.random.default_rng(5)
    p = AssignmentProblem(rng.random((10, 4)), capacity=2)  # no balance: greedy is optimal
    best = solve_assignment(p, method="highs").objective
    for method in NON_EXACT:
        res = solve_assignment(p, method=method)
        if res.status is Status.OPTIMAL:
            # e.g. lp-round on a totally unimodular problem: the LP bound proves it
            assert res.bound is not None
            assert res.bound <= res.objective + 1e-9 * max(1.0, abs(res.objective))
            assert res.objective == pytest.approx(best, rel=1e-9)
        if get_backend(method).kind == "baseline":
            assert res.status is not Status.OPTIMAL
            assert res.objective == pytest.approx(best)


def test_evaluate_assignment_wraps_external_policies() -> None:
    from flexassign import evaluate_assignment

    p = AssignmentProblem(np.ones((3, 2)), capacity=1, expert_max_load=2)
    ok = evaluate_assignment(p, [[1, 0], [0, 1], [1, 0]], method="random")
    assert ok.status is Status.FEASIBLE and ok.success and ok.method == "random"
    bad = evaluate_assignment(p, [[1, 0], [1, 0], [1, 0]])
    assert bad.status is Status.VIOLATES_CONSTRAINTS and not bad.success
    assert [str(v) for v in bad.violations] == ["expert 0 has load 3 > expert_max_load 2"]


def test_greedy_breaks_ties_by_lower_expert_index() -> None:
    from flexassign.backends.greedy import top_k

    f = np.array([[0.5, 0.9, 0.5, 0.5, 0.2], [0.1, 0.1, 0.1, 0.1, 0.1], [1.0, 0.0, 0.3, 0.3, 0.3]])
    p = AssignmentProblem(f, capacity=[2, 3, 3])
    x = top_k(p)
    assert [tuple(np.flatnonzero(r)) for r in x] == [(0, 1), (0, 1, 2), (0, 2, 3)]
    # and the same as a full stable sort on random tie-heavy inputs
    rng = np.random.default_rng(0)
    for _ in range(50):
        f = rng.integers(0, 3, size=(20, 7)).astype(float)
        cap = rng.integers(0, 8, size=20)
        p = AssignmentProblem(f, capacity=cap)
        order = np.argsort(-f, axis=1, kind="stable")
        want = np.zeros_like(f, dtype=bool)
        for c in range(20):
            want[c, order[c, : cap[c]]] = True
        np.testing.assert_array_equal(top_k(p), want)


@pytest.mark.parametrize("method", ALL)
def test_stats_use_the_shared_key_names(method: str) -> None:
    rng = np.random.default_rng(6)
    p = AssignmentProblem.balanced(
        rng.random((20, 4)),
        capacity=2,
        tolerance=0.3,
        client_weight=None if not get_backend(method).weighted else rng.integers(1, 4, 20),
    )
    res = solve_assignment(p, method=method)
    retired = {
        "mip_node_count",
        "mip_gap",
        "branches",
        "num_workers",
        "cost_scale",
        "model_status",
        "scipy_status",
        "cpsat_status",
        "termination_condition",
    }
    assert not retired & set(res.stats), sorted(retired & set(res.stats))
    if get_backend(method).kind == "exact" or method == "lp-round":
        assert {"build_time", "solve_time", "solver_status"} <= set(res.stats), res.stats.keys()
