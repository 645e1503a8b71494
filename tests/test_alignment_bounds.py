"""One balance formula at any weight scale, and expert prices carried between rounds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import flexassign.alignment.policies as policies
from flexassign import AssignmentProblem, solve_assignment
from flexassign.alignment import Feedback, Planner
from flexassign.problem import balance_bounds, load_excess


def test_uniform_weight_two_stays_feasible() -> None:
    f = np.random.default_rng(0).random((5, 3))
    p = AssignmentProblem.balanced(f, capacity=1, tolerance=0.1, client_weight=[2.0] * 5)
    # loads are multiples of 2: bounds round to that unit, not to integers
    assert p.load_unit == 2.0
    assert p.expert_min_load.tolist() == [2.0] * 3 and p.expert_max_load.tolist() == [4.0] * 3
    res = solve_assignment(p)
    assert res.success and res.status.value == "optimal"


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5, 1 / 30, 1e-6, 1e6])
def test_uniform_weights_give_the_same_assignment_at_any_scale(scale: float) -> None:
    f = np.random.default_rng(1).random((30, 4))
    base = AssignmentProblem.balanced(f, capacity=2, tolerance=0.1)
    p = AssignmentProblem.balanced(f, capacity=2, tolerance=0.1, client_weight=[scale] * 30)
    np.testing.assert_allclose(p.expert_min_load, base.expert_min_load * scale, rtol=1e-12)
    np.testing.assert_allclose(p.expert_max_load, base.expert_max_load * scale, rtol=1e-12)
    a, b = solve_assignment(base), solve_assignment(p)
    assert a.success and b.success
    assert (a.x == b.x).all()


def test_data_fraction_weights_still_enforce_balance() -> None:
    rng = np.random.default_rng(2)
    n = rng.integers(10, 200, size=40).astype(float)
    w = n / n.sum()
    # fitness that pulls every client to expert 0: only the bounds spread the load
    f = np.tile([1.0, 0.2, 0.1, 0.0], (40, 1)) + 1e-3 * rng.random((40, 4))
    p = AssignmentProblem.balanced(f, capacity=1, tolerance=0.3, client_weight=w)
    assert p.load_unit is None
    avg = w.sum() / 4
    assert p.expert_min_load == pytest.approx([0.7 * avg] * 4)
    assert p.expert_max_load == pytest.approx([1.3 * avg] * 4)
    res = solve_assignment(p, method="highs")
    assert res.success and res.loads is not None
    assert res.loads.max() <= 1.3 * avg * (1 + 1e-9)  # balance is enforced, not [0, 1]
    greedy = solve_assignment(p, method="greedy")
    assert not greedy.success  # top-1 puts everything on expert 0


def test_integer_weights_round_to_their_gcd() -> None:
    f = np.ones((4, 2))
    p = AssignmentProblem.balanced(f, capacity=1, tolerance=0.1, client_weight=[3, 6, 9, 6])
    assert p.load_unit == 3.0  # average 12: bounds 10.8 -> 9 and 13.2 -> 15
    assert p.expert_min_load.tolist() == [9.0, 9.0]
    assert p.expert_max_load.tolist() == [15.0, 15.0]
    q = AssignmentProblem.balanced(f, capacity=1, tolerance=0.1, client_weight=[1, 2, 3, 2])
    assert q.load_unit == 1.0
    assert q.expert_min_load.tolist() == [3.0, 3.0] and q.expert_max_load.tolist() == [5.0, 5.0]


def test_balance_bounds_formula() -> None:
    lo, hi = balance_bounds([14 / 3, 0.0, 10.0], 0.1)
    assert lo.tolist() == [4.0, 0.0, 9.0] and hi.tolist() == [6.0, 0.0, 11.0]
    lo, hi = balance_bounds([10.0], 0.0, unit=None)
    assert lo.tolist() == [10.0] and hi.tolist() == [10.0]
    assert load_excess([0.0, 5.0, 2.0], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0]).tolist() == [1, 2, 0]


def test_planner_bounds_use_the_shared_formula() -> None:
    planner = Planner(4, tolerance=0.2, deficit_shift=0.0)
    lo, hi, t = planner.flex_bounds([2, 2, 1])
    exp_lo, exp_hi = balance_bounds(t, 0.2)
    assert t.tolist() == [1.25] * 4
    assert lo.tolist() == exp_lo.tolist() == [1.0] * 4
    assert hi.tolist() == exp_hi.tolist() == [2.0] * 4


def test_prices_carry_over_between_flex_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    real = policies.solve_assignment

    def spy(problem: AssignmentProblem, **kwargs: Any) -> Any:
        calls.append(kwargs)
        res = real(problem, **kwargs)
        prices = np.arange(problem.n_experts, dtype=float) + len(calls)
        return type(res)(**{**res.__dict__, "stats": {**res.stats, "expert_prices": prices}})

    monkeypatch.setattr(policies, "solve_assignment", spy)
    planner = Planner(4, seed=0, time_limit=5.0, mip_gap=0.01)
    ids = ["a", "b", "c"]
    for _ in range(3):
        plan = planner.plan_round(ids)
        for c in ids:
            planner.report(c, Feedback(plan[c], [1, 1], accuracy=[0.5, 0.5]))
    assert "options" not in calls[0]  # cold start: nothing to carry
    for i in (1, 2):
        np.testing.assert_array_equal(calls[i]["options"]["prices"], np.arange(4) + i)
        assert calls[i]["time_limit"] == 5.0 and calls[i]["mip_gap"] == 0.01
    # saved with the state, so a restored planner warm-starts the same way
    restored = Planner.from_state(planner.to_state())
    np.testing.assert_array_equal(restored.prices, planner.prices)
    # a greedy round keeps them; a binding knapsack gets them too (issue 22: the price
    # method warm-starts from them; a MIP backend auto picks lists them as ignored)
    planner.plan_round(ids, strategy="greedy")
    np.testing.assert_array_equal(planner.prices, np.arange(4) + 3)
    calls.clear()
    knap = AssignmentProblem(
        np.ones((2, 4)), capacity=2, expert_size=[1, 3, 1, 1], client_budget=[2, 4]
    )
    assert knap.knapsack_binding
    res = policies.solve(knap, planner.config, np.zeros(4))
    assert calls and np.array_equal(calls[0]["options"]["prices"], np.zeros(4))
    assert res.success


@pytest.mark.slow
def test_method_auto_prices_reach_the_flow_solver() -> None:
    """Large enough for flow's pruned path: the real prices come back and are reused."""
    rng = np.random.default_rng(5)
    planner = Planner(64, seed=0, default_capacity=2, deficit_shift=0.0)
    ids = list(range(8000))
    plan = planner.plan_round(ids)
    assert plan.result.success and planner.prices is not None
    assert planner.prices.shape == (64,)
    for c in ids[:500]:
        planner.report(c, Feedback(plan[c], [1, 1], accuracy=rng.random(2).tolist()))
    first = plan.result.stats
    again = planner.plan_round(ids)
    assert again.result.success
    assert first["price_source"] in ("sample", "estimate")  # the cold start made prices
    assert first["price_time"] > 0.0
    warm = again.result.stats
    # the planner's prices reached the solver: used, or judged stale (the first
    # feedback changes fitness a lot) and replaced by a cold start
    assert warm["price_source"] == "options" or "stale_prices" in warm


def test_flow_warm_as_the_planner_method_gets_last_rounds_prices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    real = policies.solve_assignment

    def spy(problem: AssignmentProblem, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(problem, **kwargs)

    monkeypatch.setattr(policies, "solve_assignment", spy)
    rng = np.random.default_rng(2)
    planner = Planner(8, seed=0, method="flow-warm", default_capacity=2)
    ids = list(range(300))
    first = planner.plan_round(ids)
    assert first.result.method == "flow-warm" and planner.prices is not None
    carried = planner.prices.copy()
    for c in ids:
        planner.report(c, Feedback(first[c], [1, 1], accuracy=rng.random(2).tolist()))
    again = planner.plan_round(ids)
    assert again.result.success
    assert "options" not in calls[0]
    np.testing.assert_array_equal(calls[1]["options"]["prices"], carried)
    stats = again.result.stats
    assert stats["price_source"] == "options" or "stale_prices" in stats
