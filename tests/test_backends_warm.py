"""flow-warm: the warm-started exact path always matches the full min-cost flow optimum.

Fast checks (default suite): many small random instances of every shape the path
handles (ties, negative fitness, minimums, masks, fixed pairs, lower bounds, unbounded
experts) and warm starts from foreign prices; the certificate's prices re-checked
independently; option errors; the registry and ``auto``. The larger comparisons are in
``test_backends_warm_slow.py``.
"""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from flexassign import AssignmentProblem, Status, solve_assignment
from flexassign.backends import registry
from flexassign.backends.registry import (
    WARM_COMPILED_CLIENTS_PER_EXPERT,
    WARM_COMPILED_MIN_EXPERTS,
    WARM_COMPILED_MIN_PAIRS,
    WARM_MIN_PAIRS,
    WARM_PRICED_CLIENTS_PER_EXPERT,
    WARM_PRICED_MIN_PAIRS,
    get_backend,
)
from flexassign.errors import InvalidProblemError, ProblemTypeError, UnsupportedProblemError
from flexassign.solve import auto_method


def _random_problem(rng: np.random.Generator) -> AssignmentProblem:
    n = int(rng.integers(1, 70))
    e = int(rng.integers(1, 11))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        fit = rng.random((n, e))
    elif kind == 1:  # heavy ties, negative values
        fit = rng.integers(-3, 4, (n, e)).astype(float)
    elif kind == 2:  # skewed: a few large values
        fit = rng.random((n, e)) ** 8 * 10 - 1
    else:
        fit = np.round(rng.normal(size=(n, e)), 1)
    cap = rng.integers(0, min(e, 4) + 1, n)
    kw: dict = {}
    if rng.random() < 0.5:
        kw["min_experts"] = np.minimum(cap, rng.integers(0, 3, n))
    if rng.random() < 0.3:
        kw["allowed"] = rng.random((n, e)) < 0.8
    if rng.random() < 0.3:
        fixed = rng.random((n, e)) < 0.1
        if "allowed" in kw:
            fixed &= kw["allowed"]
        kw["fixed"] = fixed
    if rng.random() < 0.6:
        tol = float(rng.choice([0.0, 0.1, 0.3]))
        return AssignmentProblem.balanced(fit, capacity=cap, tolerance=tol, **kw)
    lo = rng.integers(0, 3, e)
    hi = np.where(rng.random(e) < 0.2, np.inf, lo + rng.integers(0, 8, e))
    return AssignmentProblem(fit, capacity=cap, expert_min_load=lo, expert_max_load=hi, **kw)


def _full(p: AssignmentProblem):  # the reference: every pair an arc
    return solve_assignment(p, method="flow", options={"prune": False})


@pytest.fixture(params=["ssp", "ortools"])
def engine(request: pytest.FixtureRequest) -> str:
    """Both engines of flow-warm: the compiled repair and the OR-Tools open-set solve."""
    return str(request.param)


def _same(a, b) -> bool:
    if a.status is not b.status:
        return False
    return not a.success or abs(a.objective - b.objective) <= 1e-7 * max(1.0, abs(b.objective))


@pytest.mark.parametrize("keep_stale", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_full_flow_on_random_small_problems(
    seed: int, keep_stale: bool, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if keep_stale:  # every foreign price goes through the refinement, however wrong
        fw = importlib.import_module("flexassign.backends.flow.warm")
        monkeypatch.setattr(fw, "_STALE_EXCESS", float("inf"))
        monkeypatch.setattr(fw, "_STALE_EXCESS_ORTOOLS", float("inf"))
    rng = np.random.default_rng(1000 + seed)
    checked = 0
    while checked < 40:
        try:
            p = _random_problem(rng)
        except InvalidProblemError:  # e.g. a fixed pair beyond a capacity
            continue
        ref = _full(p)
        options: dict = {"engine": engine}
        if rng.random() < 0.5:  # foreign prices of any scale: a wrong start costs time only
            options["prices"] = rng.normal(size=p.n_experts) * rng.choice([0.01, 1.0, 100.0])
        res = solve_assignment(p, method="flow-warm", options=options)
        assert _same(res, ref), (seed, checked, p, res.message, ref.objective, res.objective)
        if res.success and "fallback" not in res.stats:
            assert res.stats["engine"] == engine or "engine_fallback" in res.stats
        checked += 1


def _problem(n: int, e: int, seed: int, **kw) -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    popular = 1.0 / (1.0 + np.arange(e)) ** 0.5
    fit = popular[None, :] + 0.3 * rng.random((n, e))
    cap = rng.integers(1, 4, n)
    return AssignmentProblem.balanced(fit, capacity=cap, tolerance=0.1, **kw)


def test_prices_from_another_problem_still_give_the_optimum(engine: str) -> None:
    p = _problem(3000, 16, 0)
    other = _problem(2000, 16, 1)  # a different federation's prices
    prices = solve_assignment(other, method="flow-warm").stats["expert_prices"]
    res = solve_assignment(p, method="flow-warm", options={"prices": prices, "engine": engine})
    assert res.status is Status.OPTIMAL
    assert res.stats.get("fallback") is None
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)


def test_own_prices_settle_the_problem_in_one_round(engine: str) -> None:
    p = _problem(4000, 16, 2)
    cold = solve_assignment(p, method="flow-warm", options={"engine": engine})
    assert cold.status is Status.OPTIMAL
    prices = cold.stats["expert_prices"]
    assert prices.shape == (16,) and np.isfinite(prices).all()
    warm = solve_assignment(p, method="flow-warm", options={"prices": prices, "engine": engine})
    assert warm.stats["price_source"] == "options"
    assert warm.stats["engine"] == engine
    assert warm.stats["rounds"] == 1  # the optimal prices leave nothing to repair
    if engine == "ortools":
        assert warm.stats["open_clients"] < p.n_clients
    else:  # only clients on the edge of a tie may have to move
        assert sum(warm.stats["paths"]) <= warm.stats["start_excess"] <= p.n_clients // 100
    assert warm.objective == pytest.approx(cold.objective, rel=1e-12)


def test_returned_prices_certify_the_assignment(engine: str) -> None:
    """Complementary slackness, re-checked here from the arrays alone."""
    p = _problem(2500, 12, 3, min_experts=1)
    res = solve_assignment(p, method="flow-warm", options={"engine": engine})
    assert res.status is Status.OPTIMAL
    x = res.x
    u = p.fitness + res.stats["expert_prices"][None, :]
    tol = 1e-7
    held_min = np.where(x, u, np.inf).min(axis=1)
    free_max = np.where(x, -np.inf, u).max(axis=1)
    count = x.sum(axis=1)
    assert (held_min >= free_max - tol).all()
    assert (free_max[count < p.capacity] <= tol).all()
    assert (held_min[count > p.min_experts] >= -tol).all()
    lo, hi = p.count_bounds()
    load = x.sum(axis=0)
    prices = res.stats["expert_prices"]
    assert (prices[load < hi] >= -tol).all()
    assert (prices[load > lo] <= tol).all()


def test_masks_fixed_pairs_and_exact_capacity(engine: str) -> None:
    rng = np.random.default_rng(4)
    n, e = 1500, 10
    allowed = rng.random((n, e)) < 0.7
    allowed[np.arange(n), rng.integers(0, e, n)] = True
    allowed[np.arange(n), rng.integers(0, e, n)] = True
    fixed = (rng.random((n, e)) < 0.02) & allowed
    fixed[fixed.sum(axis=1) > 1] = False
    p = AssignmentProblem.balanced(
        rng.normal(size=(n, e)),
        capacity=2,
        tolerance=0.2,
        exact_capacity=True,
        allowed=allowed,
        fixed=fixed,
    )
    ref = _full(p)
    res = solve_assignment(p, method="flow-warm", options={"engine": engine})
    assert _same(res, ref)
    assert res.stats["engine"] == engine
    assert res.x is not None and (res.x[fixed]).all() and not (res.x & ~allowed).any()


@pytest.mark.skipif(not registry.compiled_engine_installed(), reason="numba is not installed")
def test_the_or_tools_engine_drops_prices_sooner_than_the_compiled_one() -> None:
    # its open set grows with the load out of place: from 2.5 % a cold start is faster
    # for it, while the compiled repair still pays up to 10 %
    p = _problem(3000, 16, 5)
    good = solve_assignment(p, method="flow-warm").stats["expert_prices"]
    off = good + np.random.default_rng(0).normal(0, 0.005, 16)  # 9 % outside
    kept = solve_assignment(p, method="flow-warm", options={"prices": off, "engine": "ssp"})
    assert "stale_prices" not in kept.stats and kept.stats["price_source"] == "options"
    dropped = solve_assignment(
        p, method="flow-warm", options={"prices": off, "engine": "ortools"}
    )
    assert dropped.stats["stale_prices"] == "9% of the load outside the bounds"
    assert dropped.stats["price_source"] != "options"
    assert dropped.objective == pytest.approx(kept.objective, rel=1e-12)


def test_falls_back_to_flow_when_rounds_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    fw = importlib.import_module("flexassign.backends.flow.warm")
    monkeypatch.setattr(fw, "_STALE_EXCESS", float("inf"))  # keep even hopeless prices
    monkeypatch.setattr(fw, "_STALE_EXCESS_ORTOOLS", float("inf"))
    p = _problem(3000, 16, 5)
    bad = np.linspace(-50, 50, 16)  # prices that point every client the wrong way
    res = solve_assignment(
        p, method="flow-warm", options={"prices": bad, "max_rounds": 1, "engine": "ortools"}
    )
    assert res.status is Status.OPTIMAL
    assert "fallback" in res.stats and res.stats["fallback"].startswith("flow-warm:")
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)


def test_repair_hands_over_to_ortools_when_its_path_budget_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fw = importlib.import_module("flexassign.backends.flow.warm")
    monkeypatch.setattr(fw, "_STALE_EXCESS", float("inf"))
    monkeypatch.setattr(fw, "_STALE_EXCESS_ORTOOLS", float("inf"))
    fs = importlib.import_module("flexassign.backends.flow.warm_solve")
    monkeypatch.setattr(fs, "_SSP_MIN_PATHS", 3)
    monkeypatch.setattr(fs, "_SSP_PATHS_PER_CLIENT", 0.0)
    p = _problem(3000, 16, 5)
    good = solve_assignment(p, method="flow-warm").stats["expert_prices"]
    off = good + np.random.default_rng(0).normal(0, 0.02, 16)  # a few dozen paths away
    res = solve_assignment(p, method="flow-warm", options={"prices": off, "engine": "ssp"})
    assert res.stats["engine_fallback"] == "path budget spent"
    assert res.stats["engine"] == "ortools" and res.stats["paths"] == [3]
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"prices": [1.0, 2.0]}, r"`options\['prices'\]` must be 4 finite"),
        ({"prices": [0.0, np.nan, 0.0, 0.0]}, r"`options\['prices'\]`"),
        ({"prices": "cheap"}, r"`options\['prices'\]`"),
        ({"prune_margin": 0}, r"`options\['prune_margin'\]` must be .*>= 1; got 0"),
        ({"max_rounds": True}, r"`options\['max_rounds'\]` must be an integer"),
        ({"margin": 3}, r"unknown option `options\['margin'\]` for method 'flow-warm'"),
        ({"engine": "fast"}, r"`options\['engine'\]` must be one of \('auto', 'ssp', 'ortools'\)"),
    ],
)
def test_bad_options_name_the_option(options: dict, match: str) -> None:
    p = AssignmentProblem.balanced(np.eye(4), capacity=1)
    with pytest.raises((InvalidProblemError, ProblemTypeError), match=match):
        solve_assignment(p, method="flow-warm", options=options)


def test_soft_bounds_are_declared_unsupported_and_auto_uses_flow() -> None:
    p = AssignmentProblem(np.ones((4, 2)), capacity=1, expert_max_load=1, load_penalty=2.0)
    assert get_backend("flow-warm").unsupported_reason(p) is not None
    with pytest.raises(UnsupportedProblemError, match="flow-warm"):
        solve_assignment(p, method="flow-warm")
    assert auto_method(p) == "flow"


def _priced_clients(e: int) -> int:
    """The fewest clients for which ``auto`` with prices takes the warm path (without
    the compiled engine)."""
    return max(-(-WARM_PRICED_MIN_PAIRS // e), WARM_PRICED_CLIENTS_PER_EXPERT * e)


@pytest.fixture
def no_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` as it decides where numba is not installed."""
    monkeypatch.setattr(registry, "compiled_engine_installed", lambda: False)


def test_auto_uses_the_warm_path_on_large_count_problems(no_numba: None) -> None:
    e = 64
    n = -(-WARM_MIN_PAIRS // e)  # the first size at or above the threshold
    big = AssignmentProblem(np.zeros((n, e)), capacity=1)
    small = AssignmentProblem(np.zeros((10, e)), capacity=1)
    weighted = AssignmentProblem(np.zeros((n, e)), capacity=1, client_weight=np.arange(1, n + 1))
    assert auto_method(big) == "flow-warm"
    assert auto_method(small) == "flow"
    assert auto_method(weighted) != "flow-warm"
    # with prices from an earlier round the warm path pays from fewer pairs
    mid = AssignmentProblem(np.zeros((_priced_clients(e), e)), capacity=1)
    assert WARM_PRICED_MIN_PAIRS < WARM_MIN_PAIRS
    assert auto_method(mid) == "flow"
    assert auto_method(mid, priced=True) == "flow-warm"
    assert auto_method(small, priced=True) == "flow"


@pytest.mark.skipif(not registry.compiled_engine_installed(), reason="numba is not installed")
def test_auto_takes_the_compiled_warm_path_from_a_few_thousand_pairs() -> None:
    from flexassign.backends.flow.kernel_state import warmup

    warmup()  # loaded in this process (alone, this test would otherwise see a load cost)
    e = 64
    n = max(WARM_COMPILED_CLIENTS_PER_EXPERT * e, -(-WARM_COMPILED_MIN_PAIRS // e))
    enough = AssignmentProblem(np.zeros((n, e)), capacity=1)
    few = AssignmentProblem(np.zeros((e - 1, e)), capacity=1)  # fewer clients than experts
    tiny = AssignmentProblem(np.zeros((40, 8)), capacity=1)  # 320 pairs
    narrow = AssignmentProblem(np.zeros((2000, WARM_COMPILED_MIN_EXPERTS - 1)), capacity=1)
    assert auto_method(enough) == "flow-warm" == auto_method(enough, priced=True)
    assert auto_method(few) == "flow" == auto_method(tiny) == auto_method(narrow)
    rng = np.random.default_rng(3)
    p = AssignmentProblem.balanced(rng.random((800, 16)), capacity=2, tolerance=0.1)
    res = solve_assignment(p)
    assert res.method == "flow-warm" and res.stats["engine"] == "ssp"
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-12)


def test_auto_with_prices_in_options_takes_the_warm_path(no_numba: None) -> None:
    e = 64
    rng = np.random.default_rng(3)
    p = AssignmentProblem.balanced(rng.random((_priced_clients(e), e)), capacity=2, tolerance=0.1)
    cold = solve_assignment(p)
    assert cold.method == "flow"
    prices = solve_assignment(p, method="flow-warm").stats["expert_prices"]
    warm = solve_assignment(p, options={"prices": prices})
    assert warm.method == "flow-warm"
    assert warm.status.value == "optimal"
    assert abs(warm.objective - cold.objective) <= 1e-9 * abs(cold.objective)


def test_module_examples_run() -> None:
    mod = importlib.import_module("flexassign.backends.flow.warm")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_handed_over_prices_are_refined_before_the_exact_solve() -> None:
    p = _problem(6000, 12, 6)
    stale = solve_assignment(_problem(6000, 12, 7), method="flow-warm").stats["expert_prices"]
    res = solve_assignment(p, method="flow-warm", options={"prices": stale, "engine": "ortools"})
    assert res.stats["price_source"] == "options"
    # the refinement moved the prices and left less load outside the bounds
    assert res.stats["refined_price_change"] > 0
    assert res.stats["refined_excess"] < res.stats["initial_excess"]
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)


def test_refined_prices_with_few_candidates_stay_exact(engine: str) -> None:
    # one spare candidate per client: the refined prices often favour an expert outside
    # a client's candidates, which only the bound on the others' u can reveal
    rng = np.random.default_rng(11)
    for seed in range(6):
        p = _problem(3000, 16, 20 + seed)
        far = rng.normal(0, 0.3, 16)
        options = {"prices": far, "prune_margin": 1, "engine": engine}
        res = solve_assignment(p, method="flow-warm", options=options)
        assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)
        assert res.stats["engine"] == engine


def test_stale_prices_are_dropped_for_a_cold_start(engine: str) -> None:
    p = _problem(6000, 12, 6)
    # prices that make the least popular expert everyone's favourite
    stale = np.linspace(-2.0, 2.0, 12)
    res = solve_assignment(p, method="flow-warm", options={"prices": stale, "engine": engine})
    assert "stale_prices" in res.stats and res.stats["price_source"] != "options"
    assert "fallback" not in res.stats
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)
    # good prices are kept
    good = solve_assignment(p, method="flow-warm").stats["expert_prices"]
    again = solve_assignment(p, method="flow-warm", options={"prices": good})
    assert "stale_prices" not in again.stats and again.stats["price_source"] == "options"


def test_cold_sample_levels_with_masks_and_fixed_pairs(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # large enough for the sample levels (the smallest solved by ``flow`` for the
    # OR-Tools engine): masks and fixed pairs must carry over to the sample problems
    fw = importlib.import_module("flexassign.backends.flow.warm_levels")
    got: list = []
    real = fw._flow_prices
    monkeypatch.setattr(fw, "_flow_prices", lambda d: got.append(real(d)) or got[-1])
    rng = np.random.default_rng(21)
    n, e = 6000, 12
    popular = 1.0 / (1.0 + np.arange(e)) ** 0.5
    fit = popular[None, :] + 0.3 * rng.random((n, e))
    allowed = rng.random((n, e)) < 0.85
    fixed = (rng.random((n, e)) < 0.02) & allowed
    cap = np.maximum(rng.integers(1, 4, n), fixed.sum(axis=1))
    p = AssignmentProblem.balanced(fit, capacity=cap, tolerance=0.2, allowed=allowed, fixed=fixed)
    res = solve_assignment(p, method="flow-warm", options={"engine": engine})
    assert res.stats["price_source"] == "sample" and res.stats["levels"]
    assert res.objective == pytest.approx(_full(p).objective, rel=1e-9)
    assert not res.x[~allowed].any() and res.x[fixed].all()
    if engine == "ortools":  # flow solved the smallest level (the compiled engine does it)
        assert got and all(p is not None and p.shape == (e,) for p in got)
    else:
        assert not got and res.stats["engine"] == "ssp"
