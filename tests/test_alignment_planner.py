"""Per-round planning: strategies, balance, deficit shift, partial participation, errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from flexassign import AssignmentResult, Status
from flexassign.alignment import (
    STRATEGIES,
    ClientProfile,
    Feedback,
    ModelCost,
    Plan,
    Planner,
    SyntheticPopulation,
    simulate,
)
from flexassign.errors import InvalidFeedbackError, InvalidProblemError, ProblemTypeError

IDS = [f"client-{i}" for i in range(10)]


def _feedback(experts: tuple[int, ...], acc: float = 0.7) -> Feedback:
    return Feedback(
        experts=experts,
        counts=[10] * len(experts),
        accuracy=[acc] * len(experts),
        loss=[0.5] * len(experts),
    )


def test_issue_api_contract(tmp_path) -> None:
    planner = Planner(num_experts=8, strategy="flex", tolerance=0.1, seed=0)
    planner.set_capacity("client-7", 2)
    planner.register("client-9", profile=ClientProfile.preset("high-end-phone"))
    plan = planner.plan_round(["client-7", "client-9"])
    assert isinstance(plan, Plan) and isinstance(plan.result, AssignmentResult)
    assert isinstance(plan["client-7"], tuple) and len(plan["client-7"]) == 2
    assert len(plan["client-9"]) == 3  # high-end phone preset under the default model cost
    assert plan.result.success and plan.fallback is None
    planner.report(
        "client-7",
        Feedback(experts=plan["client-7"], counts=[120, 40], accuracy=[0.8, 0.6], loss=[0.5, 1.1]),
    )
    assert planner.utilization_cv() == pytest.approx(
        float(np.std(planner.loads()) / np.mean(planner.loads()))
    )
    planner.save(tmp_path / "state.json")
    restored = Planner.load(str(tmp_path / "state.json"))
    assert restored.to_state() == planner.to_state()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_each_client_its_capacity(strategy: str) -> None:
    planner = Planner(8, strategy=strategy, seed=1)
    for i, c in enumerate(IDS):
        planner.set_capacity(c, 1 + i % 3)
    plan = planner.plan_round(IDS)
    assert plan.strategy == strategy and plan.round == 0
    assert list(plan) == IDS
    for i, c in enumerate(IDS):
        ex = plan[c]
        assert len(ex) == 1 + i % 3 and len(set(ex)) == len(ex)
        assert list(ex) == sorted(ex) and all(0 <= e < 8 for e in ex)
    assert plan.capacities == tuple(1 + i % 3 for i in range(10))
    assert plan.loads.sum() == sum(1 + i % 3 for i in range(10))


def test_flex_respects_round_bounds() -> None:
    planner = Planner(8, strategy="flex", tolerance=0.1, seed=0, deficit_shift=0.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        plan = planner.plan_round(IDS)
        assert plan.result.success
        # K = 20, avg 2.5: bounds [floor(2.25), ceil(2.75)] = [2, 3]
        assert plan.loads.min() >= 2 and plan.loads.max() <= 3
        for c in IDS:
            planner.report(c, _feedback(plan[c], float(rng.uniform())))


def test_greedy_reports_broken_balance_but_plan_is_usable() -> None:
    planner = Planner(4, strategy="greedy", seed=0)
    # everyone loves expert 0 and 1
    for _ in range(3):
        plan = planner.plan_round(IDS)
        for c in IDS:
            acc = [0.95 if e < 2 else 0.1 for e in plan[c]]
            planner.report(c, Feedback(experts=plan[c], counts=[5] * len(acc), accuracy=acc))
    plan = planner.plan_round(IDS)
    assert plan.result.status is Status.VIOLATES_CONSTRAINTS and not plan.balanced
    assert all(len(v) == 2 for v in plan.values())


def _study(strategy: str, shift: float, seed: int, rounds: int = 60) -> float:
    pop = SyntheticPopulation(40, 8, skew=1.0, dropout=0.1, seed=seed)
    planner = Planner(8, strategy=strategy, seed=seed, deficit_shift=shift)
    return simulate(planner, pop, rounds=rounds, clients_per_round=10)["cv"][-1]


@pytest.mark.parametrize("seed", [0, 1])
def test_deficit_shift_drives_cumulative_cv_down(seed: int) -> None:
    shifted = _study("flex", 1.0, seed)
    plain = _study("flex", 0.0, seed)
    greedy = _study("greedy", 1.0, seed)
    # per-round bounds alone let the same experts sit at the top of [2, 3] every round
    assert plain > 0.08
    assert shifted < plain / 5
    assert shifted < 0.03
    assert greedy > 0.3


def test_deficit_shift_cv_decreases_over_rounds() -> None:
    pop = SyntheticPopulation(40, 8, skew=1.5, dropout=0.0, seed=4)
    out = simulate(Planner(8, seed=4), pop, rounds=60, clients_per_round=10)
    cv = out["cv"]
    assert cv[59] < cv[19] < cv[4]


def test_flex_with_device_mix_needs_no_fallback() -> None:
    """Clients that must take every expert (k_c = E) floor the deficit targets."""
    classes = ["low-end-phone", "high-end-phone", "tablet", "laptop", "edge-server"]
    pop = SyntheticPopulation(30, 8, skew=1.0, dropout=0.1, seed=2)
    results = {}
    for strategy in ("flex", "greedy"):
        planner = Planner(8, strategy=strategy, seed=2)
        for i, c in enumerate(pop.client_ids):
            planner.register(c, device_class=classes[i % 5])
        pop = SyntheticPopulation(30, 8, skew=1.0, dropout=0.1, seed=2)
        results[strategy] = simulate(planner, pop, rounds=40, clients_per_round=8)
    assert results["flex"]["fallbacks"] == 0
    assert results["flex"]["cv"][-1] < results["greedy"]["cv"][-1] / 5


def test_clients_taking_every_expert_floor_the_bounds() -> None:
    planner = Planner(4, seed=0)
    planner.impose_round({f"x{i}": [0] for i in range(8)})
    for i in range(8):
        planner.report(f"x{i}", _feedback((0,)))
    planner.end_round()
    planner.set_capacity("all", 4)
    planner.set_capacity("one", 1)
    lo, _, t = planner.flex_bounds([4, 1])
    assert (lo >= 1).all() and (t >= 1 - 1e-9).all()
    plan = planner.plan_round(["all", "one"])
    assert plan.fallback is None and plan["all"] == (0, 1, 2, 3) and plan.result.success


def test_partial_participation_and_dropouts() -> None:
    planner = Planner(6, seed=0)
    plan = planner.plan_round(["a", "b", "c"])
    planner.report("a", _feedback(plan["a"]))
    # partial feedback: b reports on one of its two experts
    planner.report("b", _feedback(plan["b"][:1]))
    assert planner.pending == ("c",)
    before_c = planner.fitness.observations(["c"]).copy()
    planner.plan_round(["a", "d"])  # closes the round: c dropped out
    assert planner.dropouts("c") == 1 and planner.dropouts("a") == 0
    assert (planner.fitness.observations(["c"]) == before_c).all()
    assert "c" not in planner.fitness
    # usage counts only what was reported: 2 (a) + 1 (b)
    assert planner.usage.cumulative().sum() == 3
    # the late report from c is rejected, nothing changes
    state = planner.to_state()
    with pytest.raises(InvalidFeedbackError, match="`client_id` 'c' has no assignment"):
        planner.report("c", _feedback(plan["c"]))
    assert planner.to_state() == state


def test_empty_round_and_clients_with_zero_capacity() -> None:
    planner = Planner(4, seed=0)
    plan = planner.plan_round([])
    assert len(plan) == 0 and plan.problem is None and plan.result.success
    planner.set_capacity("x", 0)
    plan = planner.plan_round(["x", "y"])
    assert plan["x"] == () and len(plan["y"]) == 2
    planner.report("x", Feedback(experts=[], counts=[]))
    assert planner.fitness.reports("x") == 1


def test_flex_falls_back_to_soft_bounds_when_infeasible() -> None:
    # expert 0 is tiny, the others huge: a memory-starved client can only take expert 0
    cost = ModelCost([1 * 2**20] + [2**30] * 3, 1e6, reserve_bytes=0.0)
    planner = Planner(4, strategy="flex", seed=0, model_cost=cost, deadline=None)
    small = ClientProfile(compute=1e12, memory=8 * 2**20, downlink=1e9, uplink=1e9)
    planner.register("tiny", profile=small)
    planner.register("tiny2", profile=small)
    planner.set_capacity("big", 1)
    planner.set_capacity("big2", 1)
    # make expert 0 far ahead of its fair share: its deficit target is 0 this round
    planner.impose_round({f"x{i}": [0] for i in range(6)})
    for i in range(6):
        planner.report(f"x{i}", _feedback((0,)))
    planner.end_round()
    _, hi, _ = planner.flex_bounds([1, 1, 1, 1], [4, 2, 2, 2])
    assert hi[0] == 0
    plan = planner.plan_round(["tiny", "tiny2", "big", "big2"])
    assert plan.fallback == "soft-bounds"
    assert plan["tiny"] == (0,) and plan["tiny2"] == (0,)
    assert 0 not in plan["big"] + plan["big2"]
    assert plan.problem is not None and plan.problem.is_soft and plan.problem.has_knapsack
    assert plan.result.success and "soft bounds" in plan.message


def test_heterogeneous_experts_use_the_memory_knapsack() -> None:
    mib = 2**20
    cost = ModelCost([10 * mib, 20 * mib, 40 * mib, 80 * mib], 1e8, reserve_bytes=0.0)
    planner = Planner(4, strategy="flex", seed=0, model_cost=cost, deadline=None)
    # 4 * (p) <= 200 MiB -> 50 MiB of expert parameters: {10, 20} or {10, 40}
    prof = ClientProfile(compute=1e12, memory=200 * mib, downlink=1e9, uplink=1e9)
    ids = [f"m{i}" for i in range(4)]
    for c in ids:
        planner.register(c, profile=prof)
    lim = planner.capacity_limits("m0")
    assert lim.max_experts == 2 and lim.memory_budget == pytest.approx(50 * mib)
    for strategy in STRATEGIES:
        plan = planner.plan_round(ids, strategy=strategy)
        for c in ids:
            assert sum(cost.param_bytes[list(plan[c])]) <= 50 * mib


def test_profiles_refine_from_round_time() -> None:
    planner = Planner(8, seed=0)
    planner.register("p", device_class="high-end-phone")
    before = planner.profile("p")
    assert before is not None
    plan = planner.plan_round(["p"])
    k = len(plan["p"])
    planner.report(
        "p",
        Feedback(
            experts=plan["p"], counts=[10] * k, accuracy=[0.5] * k, round_time=10_000.0
        ),
    )
    after = planner.profile("p")
    assert after is not None and after.compute < before.compute
    assert planner.capacity_limits("p").max_experts <= k


def test_impose_round_full_strategy() -> None:
    planner = Planner(3, seed=0)
    plan = planner.impose_round({"a": [0, 1, 2], "b": range(3)})
    assert plan.strategy == "external" and plan["b"] == (0, 1, 2)
    planner.report("a", _feedback((0, 1, 2)))
    assert planner.utilization_cv() == 0.0
    before = planner.to_state()
    with pytest.raises(InvalidProblemError, match=r"`assignments\['a'\]` holds 3"):
        planner.impose_round({"a": [3]})
    assert planner.to_state() == before  # the open round was not closed


def test_same_seed_same_feedback_same_plans() -> None:
    def run(seed: int) -> list[dict]:
        pop = SyntheticPopulation(20, 6, dropout=0.2, seed=11)
        planner = Planner(6, strategy="random", seed=seed)
        plans = []
        for _ in range(8):
            ids = pop.sample_clients(5)
            plan = planner.plan_round(ids)
            plans.append(dict(plan))
            for c in ids:
                fb = pop.feedback(c, plan[c])
                if fb is not None:
                    planner.report(c, fb)
        return plans

    assert run(3) == run(3)
    assert run(3) != run(4)


# ------------------------------------------------------------------ bad feedback
def _open_planner() -> tuple[Planner, Plan]:
    planner = Planner(8, seed=0)
    warm = planner.plan_round(["a", "b"])
    planner.report("a", _feedback(warm["a"]))
    plan = planner.plan_round(["a", "b"])
    planner.report("b", _feedback(plan["b"]))
    return planner, plan


def _not_assigned(plan: Plan) -> int:
    return next(e for e in range(8) if e not in plan["a"])


BAD: list[tuple[str, Callable[[Planner, Plan], None], type, str]] = [
    (
        "nan accuracy",
        lambda p, plan: p.report(
            "a", Feedback(experts=plan["a"], counts=[1, 1], accuracy=[math.nan, 0.5])
        ),
        InvalidFeedbackError,
        "`accuracy` is NaN",
    ),
    (
        "negative count",
        lambda p, plan: p.report(
            "a", Feedback(experts=plan["a"], counts=[-1, 1], accuracy=[0.5, 0.5])
        ),
        InvalidFeedbackError,
        "`counts` must hold non-negative integers",
    ),
    (
        "accuracy above 1",
        lambda p, plan: p.report(
            "a", Feedback(experts=plan["a"], counts=[1, 1], accuracy=[0.5, 1.5])
        ),
        InvalidFeedbackError,
        r"`accuracy` must be in \[0, 1\]",
    ),
    (
        "unknown expert",
        lambda p, plan: p.report("a", Feedback(experts=[99], counts=[1], accuracy=[0.5])),
        InvalidFeedbackError,
        "`experts` holds unknown expert id 99",
    ),
    (
        "expert not assigned",
        lambda p, plan: p.report(
            "a", Feedback(experts=[plan["a"][0], _not_assigned(plan)], counts=[1, 1],
                          accuracy=[0.5, 0.5])
        ),
        InvalidFeedbackError,
        "which client 'a' was not assigned",
    ),
    (
        "missing signal field",
        lambda p, plan: p.report("a", Feedback(experts=plan["a"], counts=[1, 1], loss=[1, 1])),
        InvalidFeedbackError,
        "`accuracy` is required",
    ),
    (
        "double report",
        lambda p, plan: p.report("b", _feedback(plan["b"])),
        InvalidFeedbackError,
        "`client_id` 'b' already reported",
    ),
    (
        "unknown client",
        lambda p, plan: p.report("zzz", _feedback((0,))),
        InvalidFeedbackError,
        "`client_id` 'zzz' has no assignment",
    ),
    (
        "not a Feedback",
        lambda p, plan: p.report("a", {"experts": [0]}),  # type: ignore[arg-type]
        ProblemTypeError,
        "`feedback` must be a Feedback",
    ),
]


@pytest.mark.parametrize(("name", "call", "exc", "match"), BAD, ids=[b[0] for b in BAD])
def test_bad_feedback_leaves_state_unchanged(
    name: str, call: Callable[[Planner, Plan], None], exc: type, match: str
) -> None:
    planner, plan = _open_planner()
    before = planner.to_state()
    with pytest.raises(exc, match=match):
        call(planner, plan)
    assert planner.to_state() == before
    # and the planner still works: a valid report is accepted afterwards
    planner.report("a", _feedback(plan["a"]))


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"num_experts": 0}, InvalidProblemError, "`num_experts` must be >= 1"),
        ({"num_experts": 2.5}, ProblemTypeError, "`num_experts` must be an integer"),
        ({"num_experts": 4, "strategy": "best"}, InvalidProblemError, "unknown `strategy` 'best'"),
        ({"num_experts": 4, "tolerance": -1}, InvalidProblemError, "`tolerance` must be finite"),
        ({"num_experts": 4, "seed": -1}, InvalidProblemError, "`seed` must be >= 0"),
        ({"num_experts": 4, "deficit_shift": 2}, InvalidProblemError, "`deficit_shift` must be"),
        ({"num_experts": 4, "usage_penalty": "x"}, ProblemTypeError, "`usage_penalty` must be"),
        (
            {"num_experts": 4, "model_cost": ModelCost(1.0, 1.0, num_experts=3)},
            InvalidProblemError,
            "`model_cost` describes 3 experts",
        ),
    ],
)
def test_planner_argument_errors(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Planner(**kwargs)


def test_plan_round_argument_errors() -> None:
    planner = Planner(4)
    with pytest.raises(InvalidProblemError, match="`client_ids` lists 'a' more than once"):
        planner.plan_round(["a", "a"])
    with pytest.raises(ProblemTypeError, match="`client_ids` must be an iterable"):
        planner.plan_round("abc")
    with pytest.raises(ProblemTypeError, match="`client_ids` must hold hashable ids"):
        planner.plan_round([["a"]])
    with pytest.raises(InvalidProblemError, match="unknown `strategy` 'full'"):
        planner.plan_round(["a"], strategy="full")
    with pytest.raises(InvalidProblemError, match="`capacity` must be >= 0"):
        planner.set_capacity("a", -1)
    with pytest.raises(InvalidProblemError, match="give `profile` or `device_class`"):
        planner.register("a", ClientProfile.preset("laptop"), device_class="laptop")
    assert planner.round == 0  # nothing was planned


def test_forget_removes_a_client() -> None:
    planner = Planner(4, seed=0)
    planner.set_capacity("a", 1)
    plan = planner.plan_round(["a", "b"])
    planner.report("a", _feedback(plan["a"]))
    planner.forget("a")
    assert "a" not in planner.fitness and planner.capacity_limits("a").max_experts == 2
    planner.forget("b")
    assert planner.pending == ()


def test_planner_options_are_one_list() -> None:
    import dataclasses
    import inspect

    from flexassign.alignment import PlannerConfig

    # the signature is PlannerConfig's fields; positional strategy/tolerance/seed still work
    params = inspect.signature(Planner).parameters
    assert list(params) == [f.name for f in dataclasses.fields(PlannerConfig)]
    p = Planner(4, "greedy", 0.2, 3, time_limit=2.0)
    assert (p.config.strategy, p.config.tolerance, p.config.seed) == ("greedy", 0.2, 3)
    assert p.config.solver_settings() == {
        "method": "auto", "time_limit": 2.0, "mip_gap": None, "seed": 3
    }
    with pytest.raises(ProblemTypeError, match=r"`options` has unknown key\(s\) \['speed'\]"):
        Planner(4, speed=1)
    with pytest.raises(ProblemTypeError, match="`strategy` given by position and by name"):
        Planner(4, "flex", strategy="greedy")
    with pytest.raises(ProblemTypeError, match="at most 4 positional arguments"):
        Planner(4, "flex", 0.1, 0, 1)
    with pytest.raises(InvalidProblemError, match="`time_limit` must be finite and > 0"):
        Planner(4, time_limit=0)
    with pytest.raises(InvalidProblemError, match="`mip_gap` must be finite and >= 0"):
        Planner(4, mip_gap=-0.1)
    with pytest.raises(ValueError, match="unknown `method` 'simplex'"):
        Planner(4, method="simplex")
    assert PlannerConfig.from_dict(p.config.to_dict()) == p.config


def test_simulation_arguments_are_checked() -> None:
    with pytest.raises(InvalidProblemError, match="`num_clients` must be >= 1"):
        SyntheticPopulation(0, 4)
    with pytest.raises(InvalidProblemError, match="`dropout` must be finite and >= 0 and < 1"):
        SyntheticPopulation(5, 4, dropout=1.0)
    with pytest.raises(InvalidProblemError, match="`population` has 4 experts but `planner` has 8"):
        simulate(Planner(8), SyntheticPopulation(5, 4), rounds=1, clients_per_round=2)
    with pytest.raises(InvalidProblemError, match="`rounds` must be >= 0"):
        simulate(Planner(4), SyntheticPopulation(5, 4), rounds=-1, clients_per_round=2)
