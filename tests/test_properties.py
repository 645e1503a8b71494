"""Hypothesis property tests on random problems.

Every exact backend agrees with an independent ``scipy.optimize.milp`` formulation
(feasibility and objective to 1e-9 relative), no feasible heuristic answer beats
the optimum, infeasible instances are labelled infeasible by every exact backend,
problems feasible by construction are always solved, and the verifier rejects
corrupted assignments. The strategies and the reference model are the public
:mod:`flexassign.testing` ones, so what users test with is what we test with.
"""

from __future__ import annotations

import numpy as np
import pytest
from _problems import assert_agrees_with_reference, reference_solve
from hypothesis import given
from hypothesis import strategies as st

from flexassign import Status, list_backends, solve_assignment, verify_assignment
from flexassign.testing import assert_optimal, assert_valid_assignment, feasible_problems, problems

EXACT = [b for b in list_backends() if b.exact and b.installed()]
NON_EXACT = [b for b in list_backends() if not b.exact and b.installed()]


@given(problems())
def test_exact_backends_agree_with_reference(p) -> None:  # type: ignore[no-untyped-def]
    ref = reference_solve(p)
    for backend in EXACT:
        if backend.unsupported_reason(p) is not None:
            continue
        res = solve_assignment(p, method=backend.name)
        assert_agrees_with_reference(p, res, exact=True, ref=ref, label=backend.name)


@given(problems())
def test_heuristics_never_beat_the_optimum(p) -> None:  # type: ignore[no-untyped-def]
    ref = reference_solve(p)
    for backend in NON_EXACT:
        if backend.unsupported_reason(p) is not None:  # price: hard bounds only
            continue
        res = solve_assignment(p, method=backend.name)
        if res.status is Status.OPTIMAL:  # only with a proven bound equal to the objective
            assert ref.feasible and res.bound is not None
            assert res.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
            assert res.bound <= res.objective + 1e-9 * max(1.0, abs(res.objective))
        if backend.kind == "baseline":
            assert res.status is not Status.OPTIMAL
        if res.x is not None and verify_assignment(p, res.x).ok:
            assert ref.feasible
            assert res.objective <= ref.objective + 1e-9 * max(1.0, abs(ref.objective))
        if res.success:
            assert verify_assignment(p, res.x).ok


@given(problems(), st.integers(0, 10**6))
def test_verifier_rejects_corrupted_assignments(p, salt) -> None:  # type: ignore[no-untyped-def]
    ref = reference_solve(p)
    if not ref.feasible:
        return
    assert verify_assignment(p, ref.x).ok
    rng = np.random.default_rng(salt)
    # add one pair to a client already at capacity: capacity must be reported
    full = np.flatnonzero(ref.x.sum(axis=1) == p.capacity)
    full = [c for c in full if (~ref.x[c]).any()]
    if full:
        c = int(rng.choice(full))
        j = int(rng.choice(np.flatnonzero(~ref.x[c])))
        bad = ref.x.copy()
        bad[c, j] = True
        kinds = {v.kind for v in verify_assignment(p, bad).violations}
        assert "capacity" in kinds
    # drop a fixed pair: must be reported
    if p.fixed is not None and p.fixed.any():
        c, j = np.argwhere(p.fixed)[0]
        bad = ref.x.copy()
        bad[c, j] = False
        assert "fixed" in {v.kind for v in verify_assignment(p, bad).violations}
    # assign a forbidden pair
    if p.allowed is not None and (~p.allowed).any():
        c, j = np.argwhere(~p.allowed)[0]
        bad = ref.x.copy()
        bad[c, j] = True
        assert "allowed" in {v.kind for v in verify_assignment(p, bad).violations}


@given(problems())
def test_verifier_objective_and_loads_recomputed(p) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.random(p.shape) < 0.5
    v = verify_assignment(p, x)
    np.testing.assert_allclose(v.loads, (p.weights[:, None] * x).sum(axis=0))
    expected = float((p.fitness * x).sum())
    if p.load_penalty is not None:
        loads = v.loads
        expected -= p.load_penalty * float(
            np.maximum(p.expert_min_load - loads, 0).sum()
            + np.maximum(loads - p.expert_max_load, 0).sum()
        )
    assert v.objective == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(feasible_problems())
def test_exact_backends_solve_feasible_by_construction(p) -> None:  # type: ignore[no-untyped-def]
    ref = reference_solve(p)
    assert ref.feasible
    for backend in EXACT:
        if backend.unsupported_reason(p) is not None:
            continue
        res = solve_assignment(p, method=backend.name)
        assert res.status is Status.OPTIMAL, (backend.name, res.message)
        assert_valid_assignment(p, res.x)
        assert_optimal(p, res.x, reference=ref)
