"""The min-cost flow backend's pruned path: candidates, certificate, warm prices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from _problems import mixed_problems

from flexassign import AssignmentProblem, InvalidProblemError, Status, solve_assignment


def _clustered(n: int, e: int, seed: int) -> np.ndarray:
    # everyone likes the first experts: balance forces many clients off their top choices
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (1.0 + np.arange(e)) ** 0.7
    return 1 / (1 + np.exp(-(2.5 * popularity + rng.normal(size=(n, e)))))


def test_certificate_adds_pruned_arcs_back_and_stays_exact() -> None:
    # prices slightly off the optimal ones (cold prices are estimated well enough that
    # this instance certifies in one round): the top-(k+1) candidates miss arcs the
    # optimum uses, the reduced-cost certificate finds them and a second round is exact
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.instances import make_fitness

    p = AssignmentProblem.balanced(
        make_fitness(40, 8, np.random.default_rng(0)), capacity=1, tolerance=0.0
    )
    cold = solve_assignment(p, method="flow", options={"prune": True, "prune_margin": 1})
    off = np.asarray(cold.stats["expert_prices"]) + 0.02 * np.random.default_rng(0).normal(size=8)
    pruned = solve_assignment(
        p, method="flow", options={"prune": True, "prune_margin": 1, "prices": off}
    )
    full = solve_assignment(p, method="flow", options={"prune": False})
    assert pruned.status is Status.OPTIMAL and full.status is Status.OPTIMAL
    assert pruned.stats["pruned"] and not full.stats["pruned"]
    assert pruned.stats["rounds"] >= 2 and sum(pruned.stats["added_arcs"]) > 0
    assert "fallback" not in pruned.stats
    assert pruned.stats["arcs"] < full.stats["arcs"]
    assert pruned.objective == pytest.approx(full.objective, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_pruned_equals_full_on_random_structures(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for trial, p in mixed_problems(
        rng,
        25,
        n=(2, 30),
        e=(2, 10),
        on={
            "masks": (2, 0),
            "fixed": (5, 3),
            "soft": (3, 1),
            "mixed_sign": (4, 1),
            "exact": (6, 5),
        },
        cycle={"tolerance": [0.0, 0.1, 0.3, None]},
    ):
        full = solve_assignment(p, method="flow", options={"prune": False})
        opts = {"prune": True, "prune_margin": 1}
        if trial % 2:  # arbitrary (bad) prices: cost rounds, never correctness
            opts["prices"] = rng.normal(size=p.n_experts)
        pruned = solve_assignment(p, method="flow", options=opts)
        assert pruned.status is full.status, (trial, pruned.message)
        if full.success:
            assert pruned.objective == pytest.approx(full.objective, rel=1e-9, abs=1e-9)


def test_flow_prunes_large_count_problems_and_returns_prices() -> None:
    p = AssignmentProblem.balanced(_clustered(3000, 200, 1), capacity=2, tolerance=0.2)
    # named explicitly: from registry.WARM_MIN_PAIRS auto prefers flow-warm
    res = solve_assignment(p, method="flow")
    assert res.method == "flow" and res.status is Status.OPTIMAL
    assert res.stats["pruned"] and res.stats["arcs"] < 3000 * 200
    prices = np.asarray(res.stats["expert_prices"])
    assert prices.shape == (200,)
    # warm start across rounds: the same problem with last round's prices
    again = solve_assignment(p, method="flow", options={"prices": prices})
    assert again.objective == pytest.approx(res.objective, rel=1e-12)
    assert again.stats["rounds"] == 1


def test_flow_options_are_validated() -> None:
    p = AssignmentProblem.balanced(np.eye(4), capacity=1, tolerance=0.0)
    with pytest.raises(InvalidProblemError, match=r"`options\['prune'\]`"):
        solve_assignment(p, method="flow", options={"prune": "yes"})
    with pytest.raises(InvalidProblemError, match=r"`options\['prune_margin'\]`"):
        solve_assignment(p, method="flow", options={"prune_margin": 0})
    with pytest.raises(InvalidProblemError, match=r"`options\['prices'\]`"):
        solve_assignment(p, method="flow", options={"prune": True, "prices": [1.0, 2.0]})


def test_infeasible_detected_on_the_pruned_path() -> None:
    # Hall violation the presolve cannot see; the candidate network uses artificial
    # arcs, so the full network must decide
    allowed = np.ones((4, 3), dtype=bool)
    allowed[2:, :2] = False
    p = AssignmentProblem(
        np.ones((4, 3)), capacity=[1, 1, 3, 3], expert_min_load=[2, 2, 0], allowed=allowed
    )
    res = solve_assignment(p, method="flow", options={"prune": True, "prune_margin": 1})
    assert res.status is Status.INFEASIBLE


def test_quantized_fitness_is_tie_broken_and_stays_exact() -> None:
    """Scores on a 5-point scale: both flow backends solve a perturbed problem whose
    optimum is the original's (issue 22 item 4); the answer matches the full network."""
    from flexassign.backends.flow.ties import quantum

    rng = np.random.default_rng(5)
    fit = np.floor(rng.random((2500, 16)) * 5.0) / 4.0
    cap = rng.choice([1, 2, 4], size=2500)
    p = AssignmentProblem.balanced(fit, capacity=cap, tolerance=0.1)
    assert quantum(p) == 0.25
    ref = solve_assignment(p, method="flow", options={"prune": False})
    assert ref.status is Status.OPTIMAL
    for method in ("flow", "flow-warm", "auto"):
        res = solve_assignment(p, method=method)
        assert res.status is Status.OPTIMAL and res.stats["tie_break"] == 0.25
        assert res.objective == pytest.approx(ref.objective, abs=1e-9)
        assert res.bound == pytest.approx(res.objective, abs=1e-9)
    # continuous fitness and offsets off the grid are left alone
    assert quantum(p.replace(fitness=fit + 0.1)) is None
    assert quantum(p.replace(fitness=rng.random(fit.shape))) is None
