"""lp-round: optimal when the LP is integral, honest bound and gap otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from _problems import Schedule, mixed_problems, reference_solve

from flexassign import AssignmentProblem, Status, solve_assignment


def test_totally_unimodular_lp_is_returned_as_optimal() -> None:
    rng = np.random.default_rng(0)
    p = AssignmentProblem.balanced(rng.random((60, 8)), capacity=2, tolerance=0.1)
    assert p.is_unimodular
    res = solve_assignment(p, method="lp-round")
    assert res.status is Status.OPTIMAL
    assert "totally unimodular" in res.message
    assert res.bound == pytest.approx(res.objective) and res.gap == 0.0
    assert res.objective == pytest.approx(solve_assignment(p, method="flow").objective)


@pytest.mark.parametrize("kind", ["weighted", "knapsack"])
def test_non_unimodular_reports_lp_bound_and_gap(kind: str) -> None:
    rng = np.random.default_rng(1)
    kw: dict = {}
    if kind == "weighted":
        kw["client_weight"] = rng.integers(1, 50, size=120).astype(float)
    else:
        kw["expert_size"] = rng.integers(1, 4, size=10).astype(float)
        kw["client_budget"] = rng.integers(5, 9, size=120).astype(float)
    p = AssignmentProblem.balanced(rng.random((120, 10)), capacity=3, tolerance=0.15, **kw)
    assert not p.is_unimodular
    res = solve_assignment(p, method="lp-round")
    exact = solve_assignment(p, method="highs")
    assert res.success and exact.status is Status.OPTIMAL
    assert res.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert res.stats["fractional_pairs"] >= 0 and "lp_bound" in res.stats
    # the LP bound is a true upper bound; the gap is measured against it
    assert res.bound is not None and res.bound >= exact.objective - 1e-7
    assert res.objective <= exact.objective + 1e-9
    assert res.gap == pytest.approx((res.bound - res.objective) / abs(res.objective))
    assert (exact.objective - res.objective) / exact.objective < 0.01


def test_says_so_when_rounding_fails() -> None:
    # loads 1 and 1.25 can make 0, 1, 1.25 or 2.25 but never the required 1.5: the LP
    # is feasible (fractional), no assignment is, and no presolve check notices (both
    # clients fit the expert alone, so neither pair is ruled out before the LP)
    p = AssignmentProblem(
        np.ones((2, 1)),
        capacity=1,
        client_weight=[1.0, 1.25],
        expert_min_load=1.5,
        expert_max_load=1.5,
    )
    res = solve_assignment(p, method="lp-round")
    assert not res.success
    assert res.status is Status.VIOLATES_CONSTRAINTS
    assert "rounding" in res.message
    assert res.bound is not None  # the LP bound is still reported


def test_infeasible_lp_proves_infeasibility() -> None:
    allowed = np.ones((4, 3), dtype=bool)
    allowed[2:, :2] = False
    p = AssignmentProblem(
        np.ones((4, 3)), capacity=[1, 1, 3, 3], expert_min_load=[2, 2, 0], allowed=allowed
    )
    res = solve_assignment(p, method="lp-round")
    assert res.status is Status.INFEASIBLE and res.x is None


def test_column_generation_matches_full_lp() -> None:
    rng = np.random.default_rng(2)
    for trial, p in mixed_problems(
        rng,
        12,
        n=(20, 80),
        e=(6, 12),
        on={
            "weighted": (2, 0),
            "knapsack": (3, 0),
            "masks": (4, 1),
            "fixed": (5, 2),
            "soft": (6, 3),
        },
    ):
        # only the LP is compared: keep the repair short
        opts = {"repair_time_limit": 0.2}
        pruned = solve_assignment(
            p, method="lp-round", options={**opts, "prune": True, "prune_margin": 1}
        )
        full = solve_assignment(p, method="lp-round", options={**opts, "prune": False})
        assert (pruned.status is Status.INFEASIBLE) == (full.status is Status.INFEASIBLE)
        if full.bound is not None:
            assert pruned.bound is not None, trial
            # same LP optimum, whichever columns it started from
            assert pruned.bound == pytest.approx(full.bound, rel=1e-7, abs=1e-7)


def _mixed_problems(seed: int, count: int) -> list[AssignmentProblem]:
    on: dict[str, Schedule] = {
        "weighted": (2, 0),
        "knapsack": lambda t: t % 2 == 1 or t % 5 == 0,
        "masks": (4, 1),
        "fixed": (5, 2),
        "soft": (6, 3),
        "mixed_sign": (7, 4),
        "exact": (3, 0),
    }
    problems = mixed_problems(np.random.default_rng(seed), count, n=(15, 60), e=(4, 10), on=on)
    return [p for _, p in problems]


def test_cost_shift_keeps_the_lp_bound_and_it_bounds_the_optimum() -> None:
    # the shifted model (capacity rows as equalities with priced slacks) is the same LP:
    # its bound equals the plain LP's and is >= the reference MIP optimum
    for trial, p in enumerate(_mixed_problems(3, 16)):
        opts = {"repair_time_limit": 0.5}
        shifted = solve_assignment(p, method="lp-round", options=opts)
        plain = solve_assignment(p, method="lp-round", options={**opts, "cost_shift": False})
        ref = reference_solve(p)
        assert (shifted.status is Status.INFEASIBLE) == (plain.status is Status.INFEASIBLE)
        if not ref.feasible:
            assert shifted.status is not Status.OPTIMAL and not shifted.success, trial
            continue
        assert shifted.bound is not None and plain.bound is not None, trial
        assert shifted.bound == pytest.approx(plain.bound, rel=1e-7, abs=1e-7), trial
        assert shifted.bound >= ref.objective - 1e-6 * max(1.0, abs(ref.objective)), trial
        if shifted.success:
            assert shifted.objective <= ref.objective + 1e-7 * max(1.0, abs(ref.objective))
            assert shifted.gap == pytest.approx(
                max(0.0, shifted.bound - shifted.objective) / max(abs(shifted.objective), 1.0),
                abs=1e-12,
            )
        if shifted.status is Status.OPTIMAL:
            # only with a proof: the bound meets the objective
            assert shifted.objective == pytest.approx(ref.objective, rel=1e-7, abs=1e-7)


def test_narrow_repair_falls_back_and_never_loses_feasibility() -> None:
    # the first repair MIP frees only the LP support plus a few pairs per fractional
    # client; when it fails the full free set runs, so it succeeds whenever that does
    for trial, p in enumerate(_mixed_problems(4, 16)):
        for extra in (0, 3):
            narrow = solve_assignment(p, method="lp-round", options={"repair_extra": extra})
            full = solve_assignment(p, method="lp-round", options={"repair_extra": -1})
            if full.success:
                assert narrow.success, (trial, extra, narrow.message)
            if narrow.success and narrow.status is Status.FEASIBLE:
                assert narrow.bound == pytest.approx(full.bound, rel=1e-7, abs=1e-7)
                assert narrow.bound >= narrow.objective - 1e-9 * max(1.0, abs(narrow.objective))


def test_benchmark_like_knapsack_exact_capacity_is_close_to_optimal() -> None:
    # the shape of the benchmark's slow cell (count loads, memory knapsack, exact
    # capacity), small enough for the exact MIP: within 0.5 % and an honest bound
    rng = np.random.default_rng(5)
    n, e = 150, 12
    cap = rng.choice([1, 2, 3, 4], size=n, p=[0.2, 0.4, 0.3, 0.1])
    size = (1 + (rng.random(e) < 0.5) + (rng.random(e) < 0.25)).astype(float)
    p = AssignmentProblem.balanced(
        rng.random((n, e)),
        capacity=cap,
        tolerance=0.2,
        exact_capacity=True,
        expert_size=size,
        client_budget=np.ceil(cap * rng.uniform(1.6, 2.4, size=n)),
    )
    res = solve_assignment(p, method="lp-round")
    exact = solve_assignment(p, method="highs")
    assert exact.status is Status.OPTIMAL and res.success
    assert res.bound is not None and res.bound >= exact.objective - 1e-7
    assert (exact.objective - res.objective) / abs(exact.objective) < 0.005
    assert res.gap == pytest.approx((res.bound - res.objective) / abs(res.objective))
    if res.status is Status.OPTIMAL:
        assert res.bound == pytest.approx(res.objective)
