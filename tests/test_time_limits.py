"""``time_limit`` bounds the whole call: start heuristics and model builds count.

Binding limits on problems large enough that the old builds overran them (before:
16,000 x 32 with ``time_limit=1``: cpsat 2.96-3.9 s, pyomo 22 s; 8,000 x 32 pyomo
about 10 s). Every test checks the time taken against a stated bound, that the answer
is a verified assignment, and that status and message say what happened.

The bounds hold on a busy machine (issue 23: ``make test`` beside another CPU-heavy
process). In the default suite each call's **CPU time** is bounded by :func:`_bound`
of the time measured on an idle 2-core machine (twice that; a busy machine stretches
wall time, not CPU time, and solvers stop earlier in CPU terms when their wall clock
runs out), and its wall time only by a hang guard. The wall-clock bounds themselves
(the same :func:`_bound`) run in the slow suite (``make test-slow``, on a quiet
machine). What the tests pin exactly comes from the result (status, ``stats``,
message); decisions that depend on time left (CP-SAT's presolve) are tested with the
rule's constant patched, not by racing the clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from flexassign import AssignmentProblem, Status, solve_assignment, verify_assignment
from flexassign.backends import registry
from flexassign.backends.base import BackendOutput, SolveOptions
from flexassign.backends.registry import Backend


def _weighted(n: int, e: int = 32, seed: int = 0) -> AssignmentProblem:
    """Integer client weights 1-3 (not unimodular: the MIP backends must branch)."""
    rng = np.random.default_rng(seed)
    fitness = rng.random((n, e))
    weights = rng.integers(1, 4, n).astype(float)
    return AssignmentProblem.balanced(fitness, capacity=2, tolerance=0.1, client_weight=weights)


#: Bounds are this multiple of the time measured on an idle machine.
LOAD_FACTOR = 2.0
#: Idle-machine seconds of each binding-limit call in all (``time_limit=1``), the
#: figures the bounds derive from; see each test for what they include.
MEASURED = {"cpsat": 1.6, "pyomo": 3.2, "highs": 1.8, "scipy": 1.8, "lp-round": 1.8}


@dataclass(frozen=True)
class _Took:
    wall: float
    cpu: float


def _bound(measured: float) -> float:
    """The bound for a call measured at ``measured`` seconds on an idle machine."""
    return LOAD_FACTOR * measured


def _check_took(took: _Took, measured: float, res: Any) -> None:
    """CPU time within :func:`_bound`; wall time within a hang guard (10x)."""
    assert took.cpu <= _bound(measured), (took, res.message)
    assert took.wall <= 10 * measured + 10.0, (took, res.message)


def _overrun_is_reported(res: Any, elapsed: float, limit: float) -> None:
    """The stats and message agree with the clock: an overrun past the reporting slack
    (0.5 s + half the limit) is in both, and a call within it says nothing."""
    over = elapsed - limit
    if "time_limit_exceeded" in res.stats:
        assert "exceeded" in res.message, res.message
        assert res.stats["time_limit_exceeded"] <= over + 1e-6
    elif over > 0.5 + 0.5 * limit + 1.0:  # 1 s: verification after the check
        raise AssertionError(f"{over:.2f} s over the limit, not reported: {res.message}")


def _timed(p: AssignmentProblem, method: str, limit: float) -> tuple[Any, _Took]:
    t, c = time.perf_counter(), time.process_time()
    res = solve_assignment(p, method=method, time_limit=limit)
    return res, _Took(time.perf_counter() - t, time.process_time() - c)


def _check_incumbent(p: AssignmentProblem, res: Any, *, timings: bool = True) -> None:
    assert res.success, res.message
    assert res.x is not None
    assert verify_assignment(p, res.x).ok
    assert res.objective == pytest.approx(p.objective(res.x))
    assert "start_time" in res.stats
    if timings:  # the package's own backends report both
        assert {"build_time", "solve_time"} <= set(res.stats)


def test_cpsat_build_counts_against_the_limit() -> None:
    pytest.importorskip("ortools")
    p = _weighted(16_000)
    limit = 1.0
    res, took = _timed(p, "cpsat", limit)
    # The proto build is ~0.5 s and CP-SAT, when it starts, loads the model before it
    # checks its clock. Measured 1.2-1.6 s in all on an idle machine; the old Python
    # build alone took ~2 s and the call 2.96-3.9 s.
    _check_took(took, MEASURED["cpsat"], res)
    assert res.status in (Status.TIME_LIMIT, Status.FEASIBLE), res.message
    _check_incumbent(p, res)
    _overrun_is_reported(res, took.wall, limit)


def test_pyomo_build_stops_at_the_deadline() -> None:
    pytest.importorskip("pyomo")
    pytest.importorskip("highspy")
    p = _weighted(8_000)
    limit = 1.0
    res, took = _timed(p, "pyomo", limit)
    # The build checks the clock between stages, but creating the 256,000 Pyomo
    # variables (~1.2 s) and importing Pyomo the first time (~1 s) cannot be interrupted:
    # up to 3.2 s in all. The old backend took about 10 s here (20+ s at 16,000 x 32).
    _check_took(took, MEASURED["pyomo"], res)
    _overrun_is_reported(res, took.wall, limit)
    assert res.status is Status.TIME_LIMIT, res.message
    _check_incumbent(p, res)
    # the answer is a start heuristic's, not Pyomo's: which start wins depends on
    # whether lp-round finished within its share of the limit on this machine
    assert res.stats["incumbent"] in ("greedy-balanced", "lp-round")
    assert "building the Pyomo model" in res.message or "before pyomo" in res.message


def test_pyomo_deadline_raises_during_the_build() -> None:
    pytest.importorskip("pyomo")
    from flexassign.backends.pyomo_model import build_pyomo_model

    p = _weighted(500)
    with pytest.raises(TimeoutError, match="deadline passed while"):
        build_pyomo_model(p, deadline=time.perf_counter() - 1.0)
    # without a deadline (or a distant one) the same model builds completely
    m = build_pyomo_model(p, deadline=time.perf_counter() + 3600)
    assert len(m.x) == p.allowed_mask.sum()


@pytest.mark.parametrize("method", ["highs", "scipy", "lp-round"])
def test_highs_based_backends_keep_to_the_limit(method: str) -> None:
    pytest.importorskip("highspy")
    p = _weighted(16_000)
    limit = 1.0
    res, took = _timed(p, method, limit)
    # HiGHS checks its clock between presolve phases: measured 1.05-1.8 s in all on an
    # idle machine (2.65 s beside other work: the old 2.5 s bound failed there).
    _check_took(took, MEASURED[method], res)
    assert res.status in (Status.TIME_LIMIT, Status.FEASIBLE, Status.OPTIMAL), res.message
    _check_incumbent(p, res)
    _overrun_is_reported(res, took.wall, limit)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(MEASURED))
def test_binding_limits_in_wall_time(method: str) -> None:
    """The wall-clock promise itself, on a quiet machine (slow suite)."""
    pytest.importorskip("ortools" if method == "cpsat" else "highspy")
    if method == "pyomo":
        pytest.importorskip("pyomo")
    p = _weighted(8_000 if method == "pyomo" else 16_000)
    res, took = _timed(p, method, 1.0)
    assert took.wall <= _bound(MEASURED[method]), (took, res.message)
    _check_incumbent(p, res)


def test_a_spent_budget_skips_the_solver_and_returns_the_start() -> None:
    pytest.importorskip("highspy")
    p = _weighted(2_000)
    # 1 microsecond: gone during input checks and the start heuristic, so the solver
    # must not be started at all
    res = solve_assignment(p, method="highs", time_limit=1e-6)
    assert res.status is Status.TIME_LIMIT
    assert "was spent before highs could start" in res.message
    assert "start heuristics" in res.message
    _check_incumbent(p, res)
    assert res.stats["incumbent"] == "greedy-balanced"
    assert res.stats["build_time"] == res.stats["solve_time"] == 0.0  # HiGHS never ran


class _Sleepy(Backend):
    """A backend that ignores its limit: it sleeps two seconds past it."""

    def load(self) -> Any:
        def solve(problem: AssignmentProblem, options: SolveOptions) -> BackendOutput:
            assert options.time_limit is not None and options.time_limit > 0
            time.sleep(options.time_limit + 2.0)
            return BackendOutput(Status.TIME_LIMIT, message="slept")

        return solve


def test_an_overrun_is_reported_in_message(monkeypatch: pytest.MonkeyPatch) -> None:
    sleepy = _Sleepy(
        name="sleepy-test",
        module="",
        requires=(),
        extra=None,
        kind="heuristic",
        weighted=True,
        knapsack=True,
        soft=True,
        time_limit=True,
        description="ignores its time limit",
    )
    monkeypatch.setitem(registry._REGISTRY, "sleepy-test", sleepy)
    p = _weighted(50, e=6)
    # the start heuristics' first run imports HiGHS (a second under load): done here
    # so that the backend gets its turn within the limit
    solve_assignment(p, method="lp-round", time_limit=30.0)
    res = solve_assignment(p, method="sleepy-test", time_limit=1.0)
    # 1 s limit + 2 s of sleep is over the reporting slack (0.5 s + 50 %)
    assert res.stats["time_limit_exceeded"] > 1.0
    assert "time_limit=1 s exceeded by" in res.message
    assert "sleepy-test did not stop at its limit" in res.message
    _check_incumbent(p, res, timings=False)  # the greedy-balanced start is still returned


def test_a_call_within_the_limit_says_nothing_about_time() -> None:
    pytest.importorskip("highspy")
    p = _weighted(200, e=8)
    res = solve_assignment(p, method="highs", time_limit=30.0)
    assert res.status is Status.OPTIMAL
    assert "exceeded" not in res.message
    assert "time_limit_exceeded" not in res.stats
    assert res.stats["start_time"] >= 0.0


def test_cpsat_skips_presolve_only_when_it_would_not_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule (skip when less time is left than presolve is expected to take) with its
    per-nonzero estimate patched: the outcome depends on the rule, not on how fast this
    machine builds the model (under load the old 1.2 s race on 8,000 x 32 failed)."""
    pytest.importorskip("ortools")
    from flexassign.backends import cpsat

    small = _weighted(100, e=6)  # 1,200 nonzeros
    # presolve would take 1 s per nonzero: 20 minutes never fit in 30 s
    monkeypatch.setattr(cpsat, "_PRESOLVE_SECONDS_PER_NONZERO", 1.0)
    out = cpsat.solve(small, SolveOptions(time_limit=30.0))
    assert out.stats.get("presolve_skipped") is True, out.stats
    assert out.status is Status.OPTIMAL  # small: solved without presolve all the same
    # the caller's own setting wins
    raw = {"cpsat_parameters": {"cp_model_presolve": True}}
    out = cpsat.solve(small, SolveOptions(time_limit=30.0, extra=raw))
    assert "presolve_skipped" not in out.stats
    # without a limit nothing is skipped
    assert "presolve_skipped" not in cpsat.solve(small, SolveOptions()).stats
    # the real estimate (2.6 us per nonzero): plenty of time, presolve runs as usual
    monkeypatch.undo()
    res = solve_assignment(small, method="cpsat", time_limit=30.0)
    assert res.status is Status.OPTIMAL and "presolve_skipped" not in res.stats
