"""The price method (``method="price"``) and ``auto`` on weighted and knapsack problems.

Every bound the method reports must be true: on small problems HiGHS proves the
optimum and the bound must not lie below it (nor the objective above it).
"""

from __future__ import annotations

import numpy as np
import pytest

from flexassign import AssignmentProblem, Status, solve_assignment
from flexassign.alignment.config import PlannerConfig
from flexassign.alignment.policies import solve as policy_solve
from flexassign.backends.registry import AUTO_MIP_PAIRS
from flexassign.errors import InvalidProblemError, ProblemTypeError

pytest.importorskip("highspy")


def _weighted(n: int, e: int, seed: int, *, exact: bool = False) -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    w = np.round(rng.lognormal(3.0, 0.8, size=n)) + 1
    cap = rng.choice([1, 2, 3], size=n)
    return AssignmentProblem.balanced(
        rng.random((n, e)), capacity=cap, tolerance=0.15, client_weight=w, exact_capacity=exact
    )


def _knapsack(n: int, e: int, seed: int) -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    cap = rng.choice([1, 2, 3], size=n)
    size = 1.0 + (np.arange(e) % 2)  # sizes 1 and 2: the budgets bind
    return AssignmentProblem.balanced(
        rng.random((n, e)),
        capacity=cap,
        tolerance=0.2,
        expert_size=size,
        client_budget=np.ceil(cap * rng.uniform(1.2, 1.8, size=n)),
    )


def _tol(value: float) -> float:
    return 1e-7 * max(1.0, abs(value))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["weighted", "weighted-exact", "knapsack"])
def test_bound_is_true_against_the_highs_optimum(kind: str, seed: int) -> None:
    n, e = (14 + 3 * seed, 3 + seed % 4)
    if kind == "knapsack":
        p = _knapsack(n, e, seed)
    else:
        p = _weighted(n, e, seed, exact=kind.endswith("exact"))
    ref = solve_assignment(p, method="highs", mip_gap=0.0)
    res = solve_assignment(p, method="price")
    if ref.status is Status.INFEASIBLE:
        assert not res.success
        return
    assert ref.status is Status.OPTIMAL
    assert res.success, res.message
    assert res.objective <= ref.objective + _tol(ref.objective)
    assert res.bound is not None and res.bound >= ref.objective - _tol(ref.objective)
    assert res.gap is not None and res.gap >= 0.0
    if res.status is Status.OPTIMAL:
        assert abs(res.objective - ref.objective) <= _tol(ref.objective)


def test_default_gap_and_prices_on_a_larger_weighted_problem() -> None:
    p = _weighted(6000, 16, 3)
    res = solve_assignment(p, method="price")
    assert res.success and res.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert res.gap is not None and res.gap <= 1e-4
    prices = res.stats["expert_prices"]
    assert prices.shape == (16,) and np.isfinite(prices).all()
    # warm start: the next round's fitness drifts a little
    rng = np.random.default_rng(9)
    p2 = p.replace(fitness=np.clip(p.fitness + 0.01 * rng.standard_normal(p.shape), 0, 1))
    warm = solve_assignment(p2, method="price", options={"prices": prices})
    assert warm.success and warm.stats["price_source"] == "options"
    assert "stale_prices" not in warm.stats
    assert warm.gap is not None and warm.gap <= 1e-4


def test_small_weighted_problems_are_proven_by_auto() -> None:
    p = _weighted(200, 6, 1)
    res = solve_assignment(p)
    assert res.method in ("highs", "scipy", "cpsat") and res.status is Status.OPTIMAL


def test_auto_takes_the_price_method_for_weighted_and_knapsack_problems() -> None:
    # above AUTO_MIP_PAIRS (below it auto proves the optimum with a MIP backend)
    for p in (_weighted(800, 6, 1), _knapsack(800, 6, 2)):
        assert p.fitness.size > AUTO_MIP_PAIRS
        res = solve_assignment(p)
        assert res.method == "price" and res.success
        assert res.bound is not None and res.gap is not None
        assert res.status in (Status.FEASIBLE, Status.OPTIMAL)
        # a proof is asked for with mip_gap=0: a MIP backend
        assert solve_assignment(p, mip_gap=0.0).method in ("highs", "scipy", "cpsat")


def test_auto_passes_prices_to_the_price_method() -> None:
    p = _weighted(800, 6, 4)
    first = solve_assignment(p)
    again = solve_assignment(p, options={"prices": first.stats["expert_prices"]})
    assert again.method == "price" and again.stats["price_source"] == "options"
    assert again.success


def test_prices_of_another_problem_start_cold_or_stay_true() -> None:
    p = _weighted(400, 8, 5)
    wild = np.random.default_rng(1).normal(0.0, 0.05, 8)  # far off: loads go anywhere
    res = solve_assignment(p, method="price", options={"prices": wild})
    assert res.success
    assert "stale_prices" in res.stats
    ref = solve_assignment(p, method="price")
    assert res.bound is not None and ref.bound is not None
    assert res.objective <= min(res.bound, ref.bound) + _tol(res.bound)


@pytest.mark.parametrize("method", ["price", "auto", "flow", "flow-warm"])
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("1,2,3", ProblemTypeError),
        (True, ProblemTypeError),
        ([True, False, True], ProblemTypeError),
        (["a", "b", "c"], ProblemTypeError),
        ([1.0, 2.0], InvalidProblemError),
        ([1.0, np.nan, 2.0], InvalidProblemError),
    ],
)
def test_bad_prices_raise_naming_prices(method: str, bad: object, error: type) -> None:
    p = AssignmentProblem.balanced(np.random.default_rng(0).random((12, 3)), capacity=1)
    if method == "price":
        p = p.replace(client_weight=np.arange(1.0, 13.0))
    with pytest.raises(error, match=r"`options\['prices'\]`"):
        solve_assignment(p, method=method, options={"prices": bad})


@pytest.mark.parametrize(
    "options",
    [{"prune": False}, {"engine": "ortools"}, {"prune_margin": 2, "max_rounds": 5}],
)
def test_autos_options_do_not_change_with_size(options: dict) -> None:
    """Issue 21 item 5: the same call works on both sides of auto's switch."""
    rng = np.random.default_rng(1)
    for n in (499, 500, 501, 2000):
        p = AssignmentProblem.balanced(rng.random((n, 8)), capacity=2, tolerance=0.1)
        res = solve_assignment(p, options=options)
        assert res.status is Status.OPTIMAL, (n, res.message)
    w = _weighted(499, 8, 2)
    assert solve_assignment(w, options=options).success


def test_auto_rejects_unknown_options_at_every_size() -> None:
    rng = np.random.default_rng(2)
    for n in (10, 499, 500, 5000):
        p = AssignmentProblem.balanced(rng.random((n, 8)), capacity=2, tolerance=0.1)
        with pytest.raises(InvalidProblemError, match=r"`options\['bogus'\]` for method 'auto'"):
            solve_assignment(p, options={"bogus": 1})


def test_planner_policy_hands_prices_to_weighted_problems() -> None:
    p = _knapsack(800, 6, 7)
    assert not p.is_unimodular
    cfg = PlannerConfig(num_experts=6)
    first = policy_solve(p, cfg)
    assert first.method == "price"
    again = policy_solve(p, cfg, first.stats["expert_prices"])
    assert again.stats["price_source"] == "options" and again.success


def test_never_open_ended_without_a_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import flexassign.backends.price.method as pm

    monkeypatch.setattr(pm, "BUDGET", 1e-3)  # every core LP runs out at once
    p = _knapsack(3000, 16, 3)
    res = solve_assignment(p, method="price")
    assert res.success and res.status is Status.FEASIBLE
    assert res.bound is not None and res.bound >= res.objective
    assert "greedy-balanced" in res.stats.get("fallback", "")


def _small_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample levels and trust-region cores on small problems (the defaults only
    sample above 1,000 clients, 2,000 with a knapsack, and start cores at 500)."""
    import flexassign.backends.price.method as pm

    monkeypatch.setattr(pm, "SAMPLE_MIN", 60)
    monkeypatch.setattr(pm, "_PER_EXPERT", 4)
    monkeypatch.setattr(pm, "_KNAPSACK_MIN", 60)
    monkeypatch.setattr(pm, "_KNAPSACK_PER_EXPERT", 4)
    monkeypatch.setattr(pm, "_CORE", 20)
    monkeypatch.setattr(pm, "_CORE_PER_EXPERT", 1)
    monkeypatch.setattr(pm, "PROOF_PAIRS", 0)  # no HiGHS proof: the price method's own


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["weighted", "weighted-exact", "knapsack", "fixed"])
def test_trust_region_bound_is_true_against_the_highs_optimum(
    monkeypatch: pytest.MonkeyPatch, kind: str, seed: int
) -> None:
    _small_levels(monkeypatch)
    n, e = 300 + 40 * seed, 4 + seed % 3
    if kind == "knapsack":
        p = _knapsack(n, e, seed)
    else:
        p = _weighted(n, e, seed, exact=kind == "weighted-exact")
    if kind == "fixed":  # forbidden and fixed pairs move into the bounds
        rng = np.random.default_rng(seed)
        allowed = rng.random(p.shape) < 0.85
        fixed = allowed & (rng.random(p.shape) < 0.05)
        fixed &= np.cumsum(fixed, axis=1) <= 1
        p = p.replace(allowed=allowed, fixed=fixed)
    ref = solve_assignment(p, method="highs", mip_gap=0.0, time_limit=60)
    res = solve_assignment(p, method="price")
    if ref.status is Status.INFEASIBLE:
        assert not res.success
        return
    assert ref.status is Status.OPTIMAL
    assert res.success, res.message
    assert res.stats.get("levels"), "the sample levels did not run"
    assert res.objective <= ref.objective + _tol(ref.objective)
    assert res.bound is not None and res.bound >= ref.objective - _tol(ref.objective)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["weighted", "knapsack"])
def test_sample_levels_solved_whole_keep_a_true_bound(
    monkeypatch: pytest.MonkeyPatch, kind: str, seed: int
) -> None:
    """Every sample level solved whole (column generation from the prices of the level
    below, after ``_UP_STEPS`` steps): a feasible answer whose bound holds against
    the HiGHS optimum."""
    import flexassign.backends.price.method as pm

    _small_levels(monkeypatch)
    monkeypatch.setattr(pm, "_WHOLE_SAMPLE", 100.0)
    calls: list[bool] = []
    real = pm._level

    def spy(view, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(bool(kw.get("whole")))
        return real(view, *args, **kw)

    monkeypatch.setattr(pm, "_level", spy)
    n, e = 500 + 60 * seed, 4 + seed % 3
    p = _knapsack(n, e, seed) if kind == "knapsack" else _weighted(n, e, seed)
    ref = solve_assignment(p, method="highs", mip_gap=0.0, time_limit=60)
    res = solve_assignment(p, method="price")
    assert ref.status is Status.OPTIMAL
    assert res.success, res.message
    assert len(res.stats["levels"]) >= 2, "fewer than two sample levels"
    assert calls[:-1] == [True] * (len(calls) - 1), "a sample level was not solved whole"
    assert res.objective <= ref.objective + _tol(ref.objective)
    assert res.bound is not None and res.bound >= ref.objective - _tol(ref.objective)


@pytest.mark.parametrize("seed", range(40))
def test_blocked_bound_equals_price_bound(seed: int) -> None:
    from flexassign.backends._certify import price_bound
    from flexassign.backends.price.bound import upper_bound

    rng = np.random.default_rng(seed)
    n, e = int(rng.integers(1, 30)), int(rng.integers(1, 9))
    cap = rng.integers(0, e + 1, size=n)
    kw: dict = {}
    if seed % 3 == 0:
        kw["client_weight"] = rng.integers(1, 50, size=n).astype(float)
    if seed % 4 == 1:
        kw["expert_size"] = 1.0 + rng.integers(0, 3, size=e)
        kw["client_budget"] = np.ceil(cap * 1.5)
    if seed % 2:
        kw["allowed"] = rng.random((n, e)) < 0.8
        if seed % 5 == 0:
            fixed = kw["allowed"] & (rng.random((n, e)) < 0.15)
            kw["fixed"] = fixed & (np.cumsum(fixed, axis=1) <= cap[:, None])
    if seed % 7 == 0:
        kw["min_experts"] = np.minimum(rng.integers(0, 3, size=n), cap)
    scale = 10.0 ** rng.integers(-3, 4)
    p = AssignmentProblem.balanced(
        rng.normal(size=(n, e)) * scale, capacity=cap, tolerance=0.3, **kw
    )
    prices = rng.normal(size=e) * 0.1
    mu = np.abs(rng.normal(size=n)) if seed % 4 == 1 else None
    ref = price_bound(p, prices, budget_prices=mu)
    ub, err = upper_bound(p, prices, mu)
    assert abs(ub - ref.value) <= err + ref.error + 1e-12 * max(1.0, abs(ref.value))
    assert ub >= ref.value


@pytest.mark.parametrize("seed", range(30))
def test_top_k_by_partition_matches_a_full_sort(seed: int) -> None:
    from flexassign.backends.price.view import _top

    rng = np.random.default_rng(seed)
    n, e = int(rng.integers(1, 40)), int(rng.integers(2, 30))
    if seed % 2:  # many ties
        a = rng.integers(0, 3, size=(n, e)).astype(float)
    else:
        a = rng.random((n, e))
    a[rng.random((n, e)) < 0.25] = -np.inf
    m = int(rng.integers(1, e + 2))
    idx, val = _top(a, m)
    ref = np.take_along_axis(a, np.argsort(-a, axis=1, kind="stable")[:, : min(m, e)], axis=1)
    assert np.array_equal(val, ref)
    assert np.array_equal(np.take_along_axis(a, idx, axis=1), val)
    assert all(len(set(row.tolist())) == idx.shape[1] for row in idx)


def _lp_of(p: AssignmentProblem, prices: np.ndarray | None) -> tuple:
    """A core LP of every client and its candidate pairs, from a crash basis at
    ``prices`` or HiGHS's own start."""
    from flexassign.backends.base import SolveOptions
    from flexassign.backends.price.lp import CoreLP
    from flexassign.backends.price.view import candidates, make_view

    view = make_view(p)
    cand = candidates(view, np.zeros(view.e), view.e)  # every pair: the LP is exact
    lp = CoreLP(view, SolveOptions())
    lp.add_clients(np.arange(view.n))
    rows, slot = np.nonzero(cand.val > -np.inf)
    lp.add_pairs(rows, cand.idx[rows, slot])
    lp.set_frozen(np.zeros(view.e))
    if prices is not None:
        assert lp.crash(prices)
    sol = lp.solve(None)
    value = float(np.dot(sol.x, view.scores(sol.clients[sol.pair_client], sol.pair_expert)))
    return sol, value, int(lp.h.getInfo().simplex_iteration_count)


@pytest.mark.parametrize("seed", range(4))
def test_crash_basis_reaches_the_same_lp_in_fewer_iterations(seed: int) -> None:
    p = _weighted(400, 8, seed)
    cold, value, iters = _lp_of(p, None)
    assert cold.status == "optimal"
    # from the optimal prices the crash basis is (almost) optimal already
    warm, value2, iters2 = _lp_of(p, cold.prices)
    assert warm.status == "optimal"
    assert abs(value2 - value) <= 1e-7 * max(1.0, abs(value))
    assert iters2 < iters
    # from poor prices it still reaches the optimum
    off, value3, _ = _lp_of(p, cold.prices + np.random.default_rng(seed).normal(0, 0.01, 8))
    assert off.status == "optimal" and abs(value3 - value) <= 1e-7 * max(1.0, abs(value))


@pytest.mark.parametrize("limit", [None, 300])
@pytest.mark.parametrize("seed", range(6))
def test_repair_brings_every_load_inside_its_bounds(
    monkeypatch: pytest.MonkeyPatch, seed: int, limit: int | None
) -> None:
    from flexassign.backends.base import SolveOptions
    from flexassign.backends.price import method as pm
    from flexassign.backends.price.fix import improve, repair, start
    from flexassign.backends.price.view import make_view
    from flexassign.verify import verify_assignment

    p = _knapsack(500, 6, seed) if seed % 3 == 2 else _weighted(500, 6, seed)
    if limit is not None:  # a trust-region core: the rest of the clients are frozen
        _small_levels(monkeypatch)
    view = make_view(p)
    stats = {"t0": 0.0, "max_rounds": 12}
    lev = pm._relax(view, view.e, None, SolveOptions(), stats, None)
    pairs = start(view, lev, limit)
    if limit is not None:  # the others keep their choice
        moving = np.unique(pairs.client).size
        assert moving == max(limit, lev.clients.size) and pairs.out_rows.size > 0
    # overload expert 0: every client with the pair swaps one of its experts for it
    # (one of the same size: the repair keeps memory budgets, it does not mend them)
    size = np.ones(view.e) if view.size is None else view.size
    for j in np.flatnonzero((pairs.expert == 0) & ~pairs.held):
        c = pairs.client[j]
        mine = np.arange(pairs.first[c], pairs.last[c])
        out = mine[pairs.held[mine] & (size[pairs.expert[mine]] == size[0])]
        if out.size:
            pairs.held[out[0]] = False
            pairs.held[j] = True
    assert pairs.loads(view)[0] > view.hi[0]
    assert repair(view, pairs, 1e-9)
    before = float(pairs.score[pairs.held].sum())
    gained = improve(view, pairs, 1e-9)
    after = float(pairs.score[pairs.held].sum())
    assert gained >= 0.0 and after == pytest.approx(before + gained)
    x = np.zeros(p.shape, dtype=bool)
    x[pairs.client[pairs.held], pairs.expert[pairs.held]] = True
    x[pairs.out_rows, pairs.out_experts] = True
    assert verify_assignment(p, x).ok
    ref = solve_assignment(p, method="highs", mip_gap=0.0, time_limit=60)
    assert after <= ref.objective + _tol(ref.objective)


@pytest.mark.parametrize("seed", range(6))
def test_price_steps_keep_the_best_prices_they_visit(seed: int) -> None:
    from flexassign.backends.price.dual import _dual_value, price_steps
    from flexassign.backends.price.view import candidates, choose, make_view, reprice

    rng = np.random.default_rng(seed)
    view = make_view(_weighted(600, 12, seed))
    start = rng.normal(0.0, 0.002, 12)
    cand = candidates(view, start, view.e)  # every pair: the candidates' dual is g

    def dual(prices: np.ndarray) -> float:
        c = reprice(cand, view.w, prices - start)
        held, _ = choose(c.val, view.cap, view.kmin)
        return _dual_value(view, c.val, held, prices)

    for damping in (0.3, 0.8, 1.5):  # 1.5 overshoots
        got = price_steps(view, cand, start, steps=8, damping=damping)
        assert dual(got) <= dual(start) + 1e-9


def test_a_core_past_its_limit_restarts_with_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from flexassign.backends.base import SolveOptions
    from flexassign.backends.price import method as pm
    from flexassign.backends.price.trust import Struggle
    from flexassign.backends.price.view import make_view

    _small_levels(monkeypatch)
    p = _weighted(600, 6, 3)
    view = make_view(p)
    views = pm._levels(view, np.random.default_rng(0))
    assert len(views) > 1
    stats: dict = {"t0": 0.0, "max_rounds": 12}
    with pytest.raises(Struggle):
        pm._cold(views, view.e, SolveOptions(), stats, None, 0, max_core=1)
    calls: list[int] = []
    real = pm._cold

    def first_struggles(*args: object) -> object:
        calls.append(int(args[5]))  # type: ignore[call-overload]
        if len(calls) == 1:
            raise Struggle("the core grew")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pm, "_cold", first_struggles)
    res = solve_assignment(p, method="price")
    assert calls == [pm._STEPS, pm._RETRY_STEPS]
    assert res.success and res.stats["retried"] == "the core grew"
    ref = solve_assignment(p, method="highs", mip_gap=0.0, time_limit=60)
    assert res.bound is not None and res.bound >= ref.objective - _tol(ref.objective)


def test_no_crash_basis_when_choices_tie() -> None:
    from flexassign.backends.base import SolveOptions
    from flexassign.backends.price.lp import CoreLP
    from flexassign.backends.price.view import candidates, make_view

    rng = np.random.default_rng(0)
    w = np.round(rng.lognormal(3.0, 0.8, size=300)) + 1
    for fitness, expect in ((rng.random((300, 8)), True), (np.ones((300, 8)), False)):
        p = AssignmentProblem.balanced(fitness, capacity=2, tolerance=0.2, client_weight=w)
        view = make_view(p)
        cand = candidates(view, np.zeros(8), 8)
        lp = CoreLP(view, SolveOptions())
        lp.add_clients(np.arange(view.n))
        rows, slot = np.nonzero(cand.val > -np.inf)
        lp.add_pairs(rows, cand.idx[rows, slot])
        assert lp.crash(np.zeros(8)) is expect
        assert lp.solve(None).status == "optimal"


def test_the_rounding_mip_follows_a_repair_short_of_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flexassign.backends.price import method as pm

    _small_levels(monkeypatch)
    p = _weighted(800, 8, 6)
    assert p.fitness.size > pm.PROOF_PAIRS
    plain = solve_assignment(p, method="price")
    assert "fractional_clients" not in plain.stats  # the repair alone met the target
    strict = solve_assignment(p, method="price", mip_gap=1e-12)
    assert "fractional_clients" in strict.stats  # the MIP ran after the repair
    assert strict.success and strict.objective >= plain.objective - _tol(plain.objective)
