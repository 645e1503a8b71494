"""The small-problem fast path and the mid-size path of ``flow`` (issue 12).

* Mid-size count-based problems (from ``flow._PRUNE_MIN_PAIRS`` pairs) solve on
  candidate arcs chosen with estimated cold prices; the certificate keeps them exact,
  so every answer must equal the full network's optimum (random, tied, k = 1 and
  masked instances; the larger sweeps are opt-in, ``-m slow``).
* The verifier and the infeasibility diagnosis ask cheaply whether anything is wrong
  before listing culprits: what they list must not change (compared with a plain
  reference implementation of every check).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _problems import mixed_problems

from benchmarks.instances import make_fitness, make_instance
from flexassign import AssignmentProblem, Status, solve_assignment, verify_assignment
from flexassign.backends.flow import cold as flow
from flexassign.backends.flow import network as _flow_network
from flexassign.verify import diagnose_infeasibility


def _assert_exact(p: AssignmentProblem, **kw: object) -> dict:
    """Solve with ``flow`` (its fast paths are what this file tests; or ``kw``), compare
    with the full network; return stats."""
    full = solve_assignment(p, method="flow", options={"prune": False})
    kw.setdefault("method", "flow")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. -inf - -inf in the price estimate
        res = solve_assignment(p, **kw)  # type: ignore[arg-type]
    assert full.status is Status.OPTIMAL
    assert res.status is Status.OPTIMAL, res.message
    assert res.objective == pytest.approx(full.objective, rel=1e-12, abs=1e-9)
    return dict(res.stats)


def _k1(n: int, e: int, seed: int) -> AssignmentProblem:
    """One expert per client, every expert exactly n / e clients (a transportation
    problem, as the POT peer cell of the speed benchmark)."""
    fit = make_fitness(n, e, np.random.default_rng([seed, n, e]))
    return AssignmentProblem.balanced(fit, capacity=1, tolerance=0.0, exact_capacity=True)


# ---------------------------------------------------------------------- mid-size flow
def test_mid_size_auto_prunes_with_estimated_prices() -> None:
    p = make_instance(600, 48, "count", seed=1, tolerance=0.1).problem
    assert p.n_clients * p.n_experts >= flow._PRUNE_MIN_PAIRS
    stats = _assert_exact(p)
    assert stats["pruned"] and stats["price_source"] == "estimate"
    assert stats["arcs"] < 600 * 48 // 2
    assert "fallback" not in stats
    # the certified prices carry over: a second round with them needs one solve
    again = _assert_exact(p, options={"prices": stats["expert_prices"]})
    assert again["rounds"] == 1 and again["price_source"] == "options"


def test_auto_with_prices_keeps_flow_when_experts_have_few_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flexassign.backends import registry
    from flexassign.backends.registry import (
        WARM_PRICED_ANY_PAIRS,
        WARM_PRICED_CLIENTS_PER_EXPERT,
        WARM_PRICED_MIN_PAIRS,
        min_cost_flow_order,
    )

    monkeypatch.setattr(registry, "compiled_engine_installed", lambda: False)  # rules without numba
    wide = AssignmentProblem(np.zeros((600, 128)), capacity=1)  # 4.7 clients per expert
    assert WARM_PRICED_MIN_PAIRS <= wide.n_clients * wide.n_experts < WARM_PRICED_ANY_PAIRS
    assert wide.n_clients < WARM_PRICED_CLIENTS_PER_EXPERT * wide.n_experts
    assert min_cost_flow_order(wide, priced=True)[0] == "flow"
    tall = AssignmentProblem(np.zeros((1_000, 32)), capacity=1)  # 31 per expert
    assert tall.n_clients * tall.n_experts < WARM_PRICED_ANY_PAIRS
    assert min_cost_flow_order(tall, priced=True)[0] == "flow-warm"
    assert min_cost_flow_order(tall)[0] == "flow"
    big = AssignmentProblem(np.zeros((1_000, 256)), capacity=1)  # many pairs: always
    assert min_cost_flow_order(big, priced=True)[0] == "flow-warm"


def test_small_problems_are_not_pruned() -> None:
    p = AssignmentProblem.balanced(np.random.default_rng(0).random((50, 8)), capacity=2)
    assert p.n_clients * p.n_experts < flow._PRUNE_MIN_PAIRS
    assert not _assert_exact(p)["pruned"]


@pytest.mark.parametrize("seed", range(3))
def test_mid_size_k1_transportation_is_exact(seed: int) -> None:
    stats = _assert_exact(_k1(640, 40, seed))
    assert stats["pruned"]
    # clients whose next experts are within twice the last price move of their held
    # one got them as candidates as well
    assert stats["uncertain_arcs"] > 0


def test_uncertain_candidates_follow_the_spread() -> None:
    key = np.array([[5.0, 4.0, 3.9, 3.5, 1.0], [5.0, 1.0, 0.9, 0.8, 0.7]])
    cap = np.array([1, 1])
    rows, experts = flow._uncertain_candidates(key, 2, cap, tau=1.6)
    # row 0: its 2 best, plus experts 2 and 3 (3.9, 3.5 >= 5 - 1.6); row 1: its 2 best
    assert rows.tolist() == [0, 0, 0, 0, 1, 1]
    assert sorted(experts[:4].tolist()) == [0, 1, 2, 3] and sorted(experts[4:].tolist()) == [0, 1]
    rows, experts = flow._uncertain_candidates(key, 2, cap, tau=1.2)
    assert rows.tolist() == [0, 0, 0, 1, 1] and 3 not in experts[:3].tolist()  # 3.5 < 3.8
    rows, _ = flow._uncertain_candidates(key, 2, cap, tau=0.0)
    assert rows.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("levels", [2, 3])
def test_mid_size_tied_fitness_is_exact(levels: int) -> None:
    # integer fitness with few levels: many optima, degenerate prices
    rng = np.random.default_rng(levels)
    fit = rng.integers(0, levels, (700, 40)).astype(float)
    p = AssignmentProblem.balanced(fit, capacity=rng.integers(1, 4, 700), tolerance=0.05)
    stats = _assert_exact(p)
    assert stats["pruned"] and stats["rounding_error_bound"] == 0.0


def test_mid_size_masks_fixed_and_short_rows_are_exact() -> None:
    # some clients may take fewer experts than their capacity (the estimate must not
    # count masked "experts" as held), a few pairs are fixed
    rng = np.random.default_rng(5)
    n, e = 600, 40
    fit = rng.random((n, e))
    allowed = rng.random((n, e)) < 0.8
    allowed[:20] = False
    allowed[:20, :2] = True  # two allowed experts, capacity up to 3
    fixed = np.zeros((n, e), dtype=bool)
    fixed[100:110, 5] = True
    allowed |= fixed
    p = AssignmentProblem.balanced(
        fit, capacity=rng.integers(1, 4, n), tolerance=0.2, allowed=allowed, fixed=fixed
    )
    stats = _assert_exact(p)
    assert stats["pruned"]


def test_estimate_moves_prices_towards_the_bounds() -> None:
    # everyone prefers expert 0; it may take only a tenth of the clients: its price
    # must fall, and the clients the estimate keeps there must be about that many
    rng = np.random.default_rng(2)
    fit = rng.random((500, 50))
    fit[:, 0] += 1.0
    p = AssignmentProblem.balanced(fit, capacity=1, tolerance=0.1)
    net = flow._prepare(p)
    estimate = flow._estimate_prices(p, net)
    assert estimate is not None
    prices, spread = estimate
    assert prices[0] < -0.5 and spread >= 0.0
    keep = int(((fit + prices).argmax(axis=1) == 0).sum())
    _, hi = p.count_bounds()
    assert keep <= hi[0] + 2
    # soft bounds: no prices to estimate (the pruned path picks by fitness)
    soft = p.replace(load_penalty=1.0)
    assert flow._estimate_prices(soft, flow._prepare(soft)) is None


# ---------------------------------------------------------------------- fast checks
def _reference_violations(p: AssignmentProblem, x: np.ndarray, tol: float) -> set:
    """Every check of the verifier, written plainly."""
    out = set()
    counts = x.sum(axis=1)
    loads = (p.weights[:, None] * x).sum(axis=0)
    for c in range(p.n_clients):
        if counts[c] > p.capacity[c]:
            out.add(("capacity", c))
        if counts[c] < p.min_experts[c]:
            out.add(("min_experts", c))
    if not p.is_soft:
        for e in range(p.n_experts):
            lo, hi = p.expert_min_load[e], p.expert_max_load[e]
            if lo > loads[e] + tol * max(1.0, abs(loads[e])):
                out.add(("expert_min_load", e))
            if np.isfinite(hi) and loads[e] > hi + tol * max(1.0, abs(hi)):
                out.add(("expert_max_load", e))
    return out


@pytest.mark.parametrize("tol", [0.0, 1e-9, 0.2])
def test_verifier_lists_every_violation(tol: float) -> None:
    rng = np.random.default_rng(11)
    for _, p in mixed_problems(
        rng,
        40,
        n=(2, 25),
        e=(2, 8),
        on={"weighted": (3, 0), "soft": (5, 1), "exact": (4, 2)},
        cycle={"tolerance": [0.0, 0.1, 0.5, None]},
    ):
        for density in (0.1, 0.4, 0.8):
            x = rng.random(p.shape) < density
            got = {(v.kind, v.index) for v in verify_assignment(p, x, tol=tol).violations}
            assert got == _reference_violations(p, x, tol)


def test_verifier_tolerance_edges() -> None:
    p = AssignmentProblem(np.ones((4, 1)), capacity=1, expert_min_load=2.5, expert_max_load=2.5)
    x = np.array([[1], [1], [1], [0]], dtype=bool)  # load 3 > 2.5
    assert [v.kind for v in verify_assignment(p, x).violations] == ["expert_max_load"]
    assert verify_assignment(p, x, tol=0.2).ok  # 3 <= 2.5 + 0.2 * 2.5
    y = np.array([[1], [1], [0], [0]], dtype=bool)  # load 2 < 2.5
    assert [v.kind for v in verify_assignment(p, y).violations] == ["expert_min_load"]
    assert verify_assignment(p, y, tol=0.25).ok  # 2.5 <= 2 + 0.25 * 2


def test_diagnosis_without_masks_names_the_culprit() -> None:
    # the checks that need no mask run on scalars: their messages stay the same
    f = np.ones((3, 2))
    p = AssignmentProblem(f, capacity=3, min_experts=3)
    assert diagnose_infeasibility(p) == (
        "client 0 needs at least 3 experts (min_experts) but only 2 are allowed"
    )
    p = AssignmentProblem(f, capacity=[1, 0, 1], expert_min_load=[0, 3])
    assert diagnose_infeasibility(p) == "expert 1 needs at least 3 clients but only 2 may take it"
    p = AssignmentProblem(f, capacity=[1, 0, 1], expert_min_load=[0, 5], client_weight=[2, 9, 2])
    assert diagnose_infeasibility(p) == (
        "expert 1 needs load at least 5 but the clients that may take it weigh only 4 in total"
    )
    assert diagnose_infeasibility(AssignmentProblem(f, capacity=1, expert_min_load=1)) is None


def test_small_result_is_complete() -> None:
    # integral fitness: exact costs, so the bound is the verified objective itself
    fit = np.array([[3.0, 1.0], [2.0, 0.0], [1.0, 2.0]])
    res = solve_assignment(fit, capacity=1, expert_max_load=2)
    assert res.method == "flow" and res.status is Status.OPTIMAL
    assert res.objective == 7.0 and res.bound == 7.0 and res.gap == 0.0
    assert res.stats["rounding_error_bound"] == 0.0 and not res.stats["pruned"]
    np.testing.assert_array_equal(res.loads, [2.0, 1.0])
    assert not res.x.flags.writeable and not res.loads.flags.writeable
    # float fitness: the bound carries the rounding error, and the gap reports it
    res = solve_assignment(fit + 0.1, capacity=1, expert_max_load=2)
    assert res.bound is not None and res.bound > res.objective
    assert res.gap == pytest.approx(res.stats["rounding_error_bound"] / res.objective)


def test_same_shape_calls_share_only_the_network_skeleton() -> None:
    # small full networks of one shape reuse a cached skeleton of their arc arrays:
    # capacities, bounds, fitness and soft penalties of each call must still be its own
    rng = np.random.default_rng(9)
    _flow_network._skeleton.cache_clear()
    for trial in range(12):
        fit = rng.normal(size=(12, 5))
        cap = rng.integers(1, 4, 12)  # every client has room: the full network
        kwargs: dict = {"capacity": cap, "min_experts": np.minimum(cap, trial % 3)}
        if trial % 4 == 3:
            kwargs["load_penalty"] = 0.5
        p = AssignmentProblem.balanced(fit, tolerance=0.2 * (trial % 3), **kwargs)
        res = solve_assignment(p, method="flow")
        ref = solve_assignment(p, method="highs")
        assert res.status is ref.status, (trial, res.message, ref.message)
        if ref.success:
            assert res.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
    info = _flow_network._skeleton.cache_info()
    assert info.hits > 0 and info.currsize == 1  # one shape: one skeleton, reused
    assert not _flow_network._skeleton(12, 5).flags.writeable


# ---------------------------------------------------------------------- slow sweeps
@pytest.mark.slow
@pytest.mark.parametrize(("n", "e"), [(1_000, 64), (2_000, 64), (3_000, 32), (1_000, 256)])
@pytest.mark.parametrize("exact", [False, True])
def test_mid_size_clustered_instances(n: int, e: int, exact: bool) -> None:
    for seed in range(6):
        p = make_instance(n, e, "count", exact=exact, seed=seed, tolerance=0.1).problem
        _assert_exact(p)
        _assert_exact(p, method="auto")  # flow-warm where it is faster


@pytest.mark.slow
@pytest.mark.parametrize(("n", "e"), [(1_000, 64), (2_048, 32), (1_024, 128)])
def test_mid_size_k1_sweep(n: int, e: int) -> None:
    for seed in range(8):
        _assert_exact(_k1(n, e, seed))
        _assert_exact(_k1(n, e, seed), method="auto")


@pytest.mark.slow
@pytest.mark.parametrize("levels", [2, 3, 5])
def test_mid_size_tied_and_skewed_sweep(levels: int) -> None:
    rng = np.random.default_rng(levels)
    for n, e in ((1_500, 32), (800, 64)):
        fit = rng.integers(0, levels, (n, e)).astype(float)
        tied = AssignmentProblem.balanced(fit, capacity=rng.integers(1, 4, n), tolerance=0.05)
        skew = rng.random((n, e)) ** 12 * 100 - 5
        skew[:, :3] += 3.0  # three experts everyone wants
        skewed = AssignmentProblem.balanced(skew, capacity=2, tolerance=0.02, exact_capacity=True)
        for p in (tied, skewed):
            _assert_exact(p)
            _assert_exact(p, method="auto")
