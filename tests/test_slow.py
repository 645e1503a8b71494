"""Opt-in slow tests (``make test-slow``): the same properties at larger scale."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import random_problem, reference_solve
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.instances import make_instance
from flexassign import Status, list_backends, solve_assignment

pytestmark = pytest.mark.slow

EXACT = [b for b in list_backends() if b.exact and b.installed()]


@pytest.mark.parametrize("size", [(10_000, 64), (10_000, 256)])
@pytest.mark.parametrize("exact", [False, True])
def test_pruned_flow_equals_full_flow_at_scale(size: tuple[int, int], exact: bool) -> None:
    p = make_instance(*size, variant="count", exact=exact, seed=5).problem
    pruned = solve_assignment(p, method="flow", options={"prune": True})
    full = solve_assignment(p, method="flow", options={"prune": False})
    assert pruned.status is Status.OPTIMAL and full.status is Status.OPTIMAL
    assert pruned.stats["pruned"] and not full.stats["pruned"]
    assert pruned.objective == pytest.approx(full.objective, rel=1e-12)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.integers(2, 7))
def test_exact_backends_agree_on_many_instances(seed: int, n: int, e: int) -> None:
    rng = np.random.default_rng(seed)
    p = random_problem(
        rng, n=n, e=e, weighted=bool(rng.random() < 0.4), knapsack=bool(rng.random() < 0.4),
        masks=bool(rng.random() < 0.5), fixed=bool(rng.random() < 0.3),
        soft=bool(rng.random() < 0.3), mixed_sign=bool(rng.random() < 0.5),
        exact=bool(rng.random() < 0.3),
    )
    ref = reference_solve(p)
    for backend in EXACT:
        if backend.unsupported_reason(p) is not None:
            continue
        res = solve_assignment(p, method=backend.name)
        if ref.feasible:
            assert res.status is Status.OPTIMAL, (backend.name, res.message)
            assert res.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
        else:
            assert res.status is Status.INFEASIBLE, (backend.name, res.message)
