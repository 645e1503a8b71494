"""Fitness tracking: the EMA rule, signals, prior, exploration, feedback validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexassign.alignment import Feedback, FitnessConfig, FitnessTracker, Planner
from flexassign.errors import InvalidFeedbackError, InvalidProblemError, ProblemTypeError

unit = st.floats(0.0, 1.0, allow_nan=False)


@given(
    beta=st.floats(0.01, 1.0),
    prior=unit,
    signals=st.lists(unit, min_size=1, max_size=8),
)
def test_ema_rule_matches_formula(beta: float, prior: float, signals: list[float]) -> None:
    t = FitnessTracker(3, FitnessConfig(beta=beta, prior="constant", prior_value=prior))
    q = prior
    for s in signals:
        t.update("c", Feedback(experts=[1], counts=[5], accuracy=[s]))
        q = (1 - beta) * q + beta * s
        got = t.fitness(["c"])[0]
        assert got[1] == pytest.approx(q, abs=1e-12)
        # unassigned entries keep their value (the prior)
        assert got[0] == prior and got[2] == prior
    assert t.observations(["c"]).tolist() == [[0, len(signals), 0]]
    assert t.reports("c") == len(signals)


def test_loss_signal_is_exp_minus_alpha_loss() -> None:
    cfg = FitnessConfig(beta=1.0, signal="loss", alpha_loss=2.0, prior="constant")
    t = FitnessTracker(2, cfg)
    t.update("c", Feedback(experts=[0, 1], counts=[3, 4], loss=[0.5, 1.25]))
    np.testing.assert_allclose(t.fitness(["c"])[0], np.exp([-1.0, -2.5]))


def test_signal_field_required() -> None:
    t = FitnessTracker(2, FitnessConfig(signal="loss"))
    with pytest.raises(InvalidFeedbackError, match="`loss` is required"):
        t.update("c", Feedback(experts=[0], counts=[3], accuracy=[0.5]))
    assert "c" not in t


def test_zero_count_is_unknown_by_default_and_zero_only_when_asked() -> None:
    fb = Feedback(experts=[0, 1], counts=[0, 4], accuracy=[math.nan, 0.5])
    # default: an expert with no routed samples stays unknown (no observation, prior)
    t = FitnessTracker(2, FitnessConfig(beta=0.5, prior="constant", prior_value=0.5))
    t.update("c", fb)
    assert t.observations(["c"]).tolist() == [[0, 1]]
    assert t.fitness(["c"])[0].tolist() == [0.5, 0.5]
    # the pre-v3 behaviour, on request: a 0 observation
    zero = FitnessTracker(
        2, FitnessConfig(beta=0.5, prior="constant", prior_value=0.5, zero_count_signal=0.0)
    )
    zero.update("c", fb)
    assert zero.observations(["c"]).tolist() == [[1, 1]]
    assert zero.fitness(["c"])[0].tolist() == [0.25, 0.5]


def test_population_prior_shrinks_expert_mean() -> None:
    cfg = FitnessConfig(beta=1.0, prior="population", prior_value=0.5, prior_strength=1.0)
    t = FitnessTracker(2, cfg)
    assert t.prior().tolist() == [0.5, 0.5]
    t.update("a", Feedback(experts=[0], counts=[1], accuracy=[0.9]))
    t.update("b", Feedback(experts=[0], counts=[1], accuracy=[0.7]))
    # (1 * 0.5 + 0.9 + 0.7) / (1 + 2) = 0.7; expert 1 never seen: 0.5
    np.testing.assert_allclose(t.prior(), [0.7, 0.5])
    np.testing.assert_allclose(t.fitness(["new"])[0], [0.7, 0.5])
    # first observation of a pair starts the EMA from the prior
    t2 = FitnessTracker(2, FitnessConfig(beta=0.5, prior_value=0.5))
    t2.update("a", Feedback(experts=[0], counts=[1], accuracy=[1.0]))
    assert t2.fitness(["a"])[0, 0] == pytest.approx(0.75)


@given(n=st.integers(0, 50), reports=st.integers(0, 200))
def test_bonus_formula_and_monotonicity(n: int, reports: int) -> None:
    t = FitnessTracker(1, FitnessConfig(exploration=0.3))
    for _ in range(reports):
        t.update("c", Feedback(experts=[], counts=[]))
    for _ in range(n):
        t.update("c", Feedback(experts=[0], counts=[1], accuracy=[0.5]))
    total = reports + n
    b = t.bonus(["c"])[0, 0]
    assert b == pytest.approx(0.3 * math.sqrt(math.log1p(total) / (1 + n)))


def test_bonus_grows_for_untried_and_shrinks_for_tried() -> None:
    t = FitnessTracker(2, FitnessConfig(exploration=0.3))
    prev = None
    for i in range(20):
        t.update("c", Feedback(experts=[0], counts=[1], accuracy=[0.5]))
        b = t.bonus(["c"])[0]
        if prev is not None:
            assert b[1] > prev[1]  # untried: grows with reports
            if i >= 2:  # ln(1+T)/(1+T) decreases once 1+T > e
                assert b[0] < prev[0]  # tried every round: shrinks
        prev = b


@pytest.mark.parametrize("prior", ["population", "constant"])
def test_exploration_eventually_tries_every_pair_under_greedy(prior: str) -> None:
    """Greedy top-1 on a client whose first expert is near-perfect still tries all."""
    e = 8
    truth = np.full(e, 0.05)
    truth[0] = 1.0
    planner = Planner(e, strategy="greedy", seed=3, fitness=FitnessConfig(prior=prior))
    planner.set_capacity("c", 1)
    for _ in range(300):
        plan = planner.plan_round(["c"])
        ex = plan["c"]
        planner.report("c", Feedback(experts=ex, counts=[10], accuracy=truth[list(ex)].tolist()))
        if (planner.fitness.observations(["c"]) > 0).all():
            break
    assert (planner.fitness.observations(["c"]) > 0).all()
    # and it mostly exploits the best expert
    assert planner.fitness.observations(["c"])[0, 0] > planner.round / 2


def test_without_exploration_greedy_locks_in() -> None:
    """The control: with exploration off, greedy on a frozen prior never tries the rest."""
    truth = np.full(4, 0.6)
    planner = Planner(4, strategy="greedy", seed=0, fitness=FitnessConfig(exploration=0.0))
    planner.set_capacity("c", 1)
    for _ in range(50):
        ex = planner.plan_round(["c"])["c"]
        planner.report("c", Feedback(experts=ex, counts=[10], accuracy=truth[list(ex)].tolist()))
    assert (planner.fitness.observations(["c"]) > 0).sum() == 1


# ------------------------------------------------------------------ Feedback checks
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"experts": [0, 1], "counts": [1], "accuracy": [0.5, 0.5]}, "`counts` has 1 entries"),
        ({"experts": [0, 0], "counts": [1, 1]}, "`experts` lists expert 0 more than once"),
        ({"experts": [-1], "counts": [1]}, "`experts` must be >= 0"),
        ({"experts": [1.5], "counts": [1]}, "`experts` must hold integer"),
        ({"experts": [0], "counts": [-3]}, "`counts` must hold non-negative integers"),
        ({"experts": [0], "counts": [2.5]}, "`counts` must hold non-negative integers"),
        ({"experts": [0], "counts": [math.nan]}, "`counts` must hold non-negative integers"),
        ({"experts": [0], "counts": [3], "accuracy": [1.2]}, r"`accuracy` must be in \[0, 1\]"),
        ({"experts": [0], "counts": [3], "accuracy": [-0.1]}, r"`accuracy` must be in \[0, 1\]"),
        ({"experts": [0], "counts": [3], "accuracy": [math.nan]}, "`accuracy` is NaN"),
        ({"experts": [0], "counts": [3], "loss": [math.inf]}, "`loss` must be finite"),
        ({"experts": [0], "counts": [3], "loss": [-1.0]}, "`loss` must be finite and >= 0"),
        ({"experts": [0], "counts": [3], "accuracy": ["x"]}, "`accuracy` must hold numbers"),
        ({"experts": "01", "counts": [3]}, "`experts` must be a sequence"),
        ({"experts": [0], "counts": [3], "round_time": 0}, "`round_time` must be finite"),
        ({"experts": [0], "counts": [3], "train_samples": -1}, "`train_samples` must be"),
    ],
)
def test_feedback_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidFeedbackError, match=match):
        Feedback(**kwargs)


def test_feedback_accepts_nan_only_at_zero_count() -> None:
    fb = Feedback(experts=[2, 5], counts=[0, 7], accuracy=[math.nan, 0.5], loss=[math.nan, 0.1])
    assert fb.total_count == 7 and fb.samples == 7
    assert fb.to_dict()["accuracy"] == [None, 0.5]


def test_fitness_config_validation() -> None:
    with pytest.raises(InvalidProblemError, match="`beta` must be finite and > 0"):
        FitnessConfig(beta=0.0)
    with pytest.raises(InvalidProblemError, match="`signal` must be one of"):
        FitnessConfig(signal="reward")
    with pytest.raises(ProblemTypeError, match="`exploration` must be a number"):
        FitnessConfig(exploration="big")  # type: ignore[arg-type]
    with pytest.raises(InvalidProblemError, match="`prior_value` must be finite and >= 0"):
        FitnessConfig(prior_value=1.5)
