"""flow-warm's compiled repair engine (:mod:`flexassign.backends.flow.warm_ssp`).

The kernels against the NumPy passes they replace, the repair's own certificate, and
the cases where the repair must widen its candidates or hand over to OR-Tools. The
end-to-end comparisons with the full min-cost flow are in ``test_backends_warm.py``
(both engines) and ``test_backends_warm_slow.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from flexassign import AssignmentProblem, Status, solve_assignment
from flexassign.backends.flow import warm_data as wd
from flexassign.backends.flow import warm_ssp as _warm_ssp

pytestmark = pytest.mark.skipif(not _warm_ssp.available(), reason="numba is not installed")


def _full(p: AssignmentProblem) -> float:
    return solve_assignment(p, method="flow", options={"prune": False}).objective


@pytest.mark.parametrize("kind", ["random", "ties", "negative"])
@pytest.mark.parametrize("m1", [1, 3, 9])
def test_compiled_candidate_pass_matches_numpy(
    kind: str, m1: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(m1)
    n, e = 700, 24
    fit = {
        "random": rng.random((n, e)),
        "ties": rng.integers(0, 3, (n, e)).astype(float),
        "negative": rng.normal(size=(n, e)) * 1e3,
    }[kind]
    p = AssignmentProblem.balanced(fit, capacity=rng.integers(1, 4, n), tolerance=0.2)
    data, *_ = wd._prepare(p)
    prices = np.rint(rng.normal(0, 2.0 ** (data.scale_exp - 3), e))
    sel = np.sort(rng.choice(n, 300, replace=False))
    compiled = wd._top(data, prices, sel, m1)
    monkeypatch.setattr(wd, "compiled_kernel", lambda name: None)  # the NumPy pass
    plain = wd._top(data, prices, sel, m1)
    np.testing.assert_array_equal(compiled[1], plain[1])  # the same values, best first
    u = data.u(sel, prices)  # and the chosen experts carry them
    np.testing.assert_array_equal(np.take_along_axis(u, compiled[0].astype(int), 1), compiled[1])


def _candidate_state(seed: int, kind: str) -> tuple[Any, ...]:
    """A problem's data, candidates at perturbed prices and their price-induced
    choice (the state ``_add_takers`` and ``_recheck`` see in a repair)."""
    rng = np.random.default_rng(seed)
    n, e = 600, 40
    fit = rng.integers(0, 3, (n, e)).astype(float) if kind == "ties" else rng.random((n, e))
    p = AssignmentProblem.balanced(fit, capacity=rng.integers(1, 4, n), tolerance=0.1)
    data, *_ = wd._prepare(p)
    prices = np.rint(rng.normal(0, 2.0 ** (data.scale_exp - 2), e))
    idx, val = wd._top(data, prices, None, 5)
    cand = idx.astype(np.int64)
    gain = _warm_ssp.gains(cand, val, prices.astype(np.int64))
    held = np.zeros(cand.shape, dtype=bool)
    for i in range(n):
        held[i, : data.cap[i]] = True
    return data, cand, gain, held, prices.astype(np.int64)


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("seed", range(3))
def test_compiled_takers_match_numpy(kind: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    data, cand, gain, held, prices = _candidate_state(seed, kind)
    assert _warm_ssp._shortfall(data, cand, held, prices).any()  # some expert is short
    got = _warm_ssp._add_takers(data, cand, gain, held, prices)
    monkeypatch.setattr(wd, "_COMPILED_PASSES", False)
    ref = _warm_ssp._add_takers(data, cand, gain, held, prices)
    m = cand.shape[1]

    def pairs(out: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        c, g = out[0][:, m:], out[1][:, m:]
        r, s = np.nonzero(g > _warm_ssp._G_INVALID // 2)
        return np.sort(r * data.e + c[r, s]), np.sort(g[r, s])

    if kind == "random":  # no ties: the very same pairs
        np.testing.assert_array_equal(pairs(got)[0], pairs(ref)[0])
        np.testing.assert_array_equal(got[3], ref[3])
    else:  # ties: the same number of takers per expert, at the same losses
        np.testing.assert_array_equal(pairs(got)[1], pairs(ref)[1])
        np.testing.assert_array_equal(
            np.bincount(got[0][:, m:][got[1][:, m:] > _warm_ssp._G_INVALID // 2], minlength=40),
            np.bincount(ref[0][:, m:][ref[1][:, m:] > _warm_ssp._G_INVALID // 2], minlength=40),
        )


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_compiled_recheck_matches_numpy(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data, cand, gain, held, prices = _candidate_state(5, kind)
    low, h = _lowest_held(cand, gain, held, prices)
    rows = np.arange(0, data.n, 2)
    moved = prices + np.rint(np.random.default_rng(1).normal(0, 2.0 ** (data.scale_exp - 2), 40))
    got, got_best = _warm_ssp._recheck(
        data, cand, gain, rows, low[rows], h[rows], moved.astype(np.int64)
    )
    monkeypatch.setattr(wd, "_COMPILED_PASSES", False)
    ref, ref_best = _warm_ssp._recheck(
        data, cand, gain, rows, low[rows], h[rows], moved.astype(np.int64)
    )
    assert 0 < ref.size < rows.size  # some clients fail, some pass
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got_best, ref_best)  # the bound the next round uses
    # and the pass's own values: each client's best u off its candidates
    kernel = importlib.import_module("flexassign.backends.flow.ssp_kernel").off_candidate_best
    scale = float(2.0**data.scale_exp)
    near = np.rint(np.random.default_rng(2).normal(0, 2.0 ** (data.scale_exp - 6), 40))
    best = kernel(data.fitness, rows, scale, near, cand[rows], gain[rows])
    u = data.u(rows, near)
    u[np.arange(rows.size)[:, None], cand[rows]] = -np.inf
    np.testing.assert_array_equal(best, u.max(axis=1))
    assert np.unique(u.argmax(axis=1)).size >= 10  # many experts are someone's best


def _lowest_held(
    cand: np.ndarray, gain: np.ndarray, held: np.ndarray, prices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    u = gain + prices[cand]
    low = np.where(held, u, np.iinfo(np.int64).max).min(axis=1).astype(np.float64)
    return low, held.sum(axis=1)


@pytest.mark.parametrize("seed", range(8))
def test_compiled_refinement_matches_numpy(seed: int) -> None:
    from flexassign.backends.flow.prices import refine_prices

    rng = np.random.default_rng(seed)
    n, e = int(rng.integers(20, 300)), int(rng.integers(3, 24))
    fit = rng.integers(0, 4, (n, e)).astype(float) if seed % 2 else rng.random((n, e))
    cap = rng.integers(1, min(e, 4) + 1, n)
    kw: dict = {"min_experts": np.minimum(cap, rng.integers(0, 3, n))} if seed % 3 else {}
    if seed % 4 == 1:
        kw["allowed"] = rng.random((n, e)) < 0.8
        kw["allowed"][:, 0] = True  # every client may take enough experts
        kw["allowed"][:, 1] = True
        kw["allowed"][:, 2] = True
        kw["allowed"][:, 3 % e] = True
    p = AssignmentProblem.balanced(fit, capacity=cap, tolerance=0.1, **kw)
    data, *_ = wd._prepare(p)
    m1 = min(e, int(data.cap.max()) + 3)
    prices = np.rint(rng.normal(0, 2.0 ** (data.scale_exp - 3), e)).astype(np.int64)
    idx, val = wd._top(data, prices, None, m1)
    args = (idx, val, data.cap, data.kmin, data.lo, data.hi, prices)
    compiled = refine_prices(*args, steps=4, damping=0.8, compiled=True)
    plain = refine_prices(*args, steps=4, damping=0.8, compiled=False)
    np.testing.assert_array_equal(compiled, plain)
    assert compiled.any()  # the random prices are off: the steps moved them


def test_repair_moves_exactly_the_excess_from_optimal_prices_nudged() -> None:
    rng = np.random.default_rng(3)
    n, e = 2000, 20
    fit = 1.0 / (1.0 + np.arange(e)) ** 0.5 + 0.3 * rng.random((n, e))
    p = AssignmentProblem.balanced(fit, capacity=rng.integers(1, 4, n), tolerance=0.05)
    good = solve_assignment(p, method="flow-warm", options={"engine": "ssp"})
    nudged = good.stats["expert_prices"] + rng.normal(0, 0.01, e)
    res = solve_assignment(p, method="flow-warm", options={"prices": nudged, "engine": "ssp"})
    assert res.stats["engine"] == "ssp"
    # each augmenting path of the first round moves at least one unit of its excess
    assert 0 < res.stats["paths"][0] <= res.stats["start_excess"]
    assert res.objective == pytest.approx(_full(p), rel=1e-12)
    assert res.objective == pytest.approx(good.objective, rel=1e-12)


def test_experts_nobody_lists_get_takers_instead_of_a_handover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # exact loads, one expert per client: at rough prices (two refinement steps from
    # zero, not the cold estimate) some experts are among too few clients' candidates
    # to reach their load; the repair adds takers for them
    fs = importlib.import_module("flexassign.backends.flow.warm_solve")
    monkeypatch.setattr(fs, "_SSP_ESTIMATE", False)
    monkeypatch.setattr(fs, "_SSP_FULL_PAIRS", 0)  # a few candidates each, as on big problems
    monkeypatch.setattr(fs, "_SSP_WIDE_PAIRS", 0)
    rng = np.random.default_rng(0)
    n, e = 960, 64  # below the size where a cold start samples
    popular = 3.0 / (1.0 + np.arange(e)) ** 0.7
    fit = popular[None, :] + rng.random((n, e))
    p = AssignmentProblem.balanced(fit, capacity=1, tolerance=0.0, exact_capacity=True)
    res = solve_assignment(p, method="flow-warm", options={"engine": "ssp"})
    assert res.stats["engine"] == "ssp" and res.stats.get("added_takers", 0) > 0
    assert res.objective == pytest.approx(_full(p), rel=1e-12)


def test_sample_rows_map_to_the_full_problem_through_two_levels() -> None:
    rng = np.random.default_rng(7)
    p = AssignmentProblem.balanced(rng.random((400, 6)), capacity=2, tolerance=0.2)
    data = wd._prepare(p)[0]
    np.testing.assert_array_equal(data.full(), np.arange(400))
    sub = wd._sample(data, np.random.default_rng(1))
    subsub = wd._sample(sub, np.random.default_rng(2))
    assert subsub.n == 25 and subsub.rows is not None and sub.rows is not None
    np.testing.assert_array_equal(subsub.full(), subsub.rows)
    local = np.array([0, 3, 24])
    # a level's local rows are rows of the level above, which are rows of the full problem
    np.testing.assert_array_equal(subsub.full(local), subsub.rows[local])
    assert set(subsub.full().tolist()) <= set(sub.full().tolist())
    np.testing.assert_array_equal(
        subsub.cost(local, np.array([1, 2, 5])),
        np.rint(np.ldexp(p.fitness[subsub.rows[local], [1, 2, 5]], data.scale_exp)),
    )


def _clustered(seed: int, n: int = 625, e: int = 256) -> AssignmentProblem:
    """Three favourites per client over noise, an eighth of the experts popular."""
    rng = np.random.default_rng(seed)
    fit = 0.3 * rng.random((n, e))
    fit[:, rng.permutation(e)[: e // 8]] += 0.4
    favs = np.argsort(rng.random((n, e)), axis=1)[:, :3]
    np.put_along_axis(fit, favs, np.take_along_axis(fit, favs, axis=1) + 0.6, axis=1)
    return AssignmentProblem.balanced(fit, capacity=rng.choice([1, 2, 4], size=n), tolerance=0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_small_sample_levels_give_every_expert_as_a_candidate(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a cold start's first sample level (625 of 2,500 clients, 256 experts): with
    # max(k) + margin + 1 candidates the first round's prices leave most clients
    # preferring an expert off their candidates (each re-chosen, the load moved back
    # path by path); with every expert, one round
    fs = importlib.import_module("flexassign.backends.flow.warm_solve")
    wd = importlib.import_module("flexassign.backends.flow.warm_data")
    data = wd._prepare(_clustered(seed, n=2500))[0]
    data.compiled = True
    sub = wd._sample(data, np.random.default_rng(seed))
    assert sub.n * sub.e <= fs._SSP_FULL_PAIRS and sub.e >= fs._SSP_WIDE_MIN_EXPERTS

    def level() -> dict[str, Any]:
        stats: dict[str, Any] = {}
        solved = fs._solve_data(sub, None, 4, 12, stats, engine="ssp")
        rows = sub.rows[solved.rows]
        x = np.zeros((data.fitness.shape[0], sub.e), dtype=bool)
        x[rows, solved.experts] = True
        stats["value"] = float(data.fitness[x].sum())
        return stats

    wide = level()
    assert wide["engine"] == "ssp" and wide["rounds"] == 1
    monkeypatch.setattr(fs, "_SSP_FULL_PAIRS", 0)
    monkeypatch.setattr(fs, "_SSP_WIDE_PAIRS", 0)
    narrow = level()
    assert narrow["recandidated"][0] > sub.n // 2  # what the rule avoids
    assert sum(narrow["paths"]) > 3 * sum(wide["paths"])
    assert narrow["value"] == pytest.approx(wide["value"], rel=1e-12)  # both optimal


def test_a_sample_level_stops_at_the_optimum_over_its_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a sample level's prices only start the next level: with certify=False the repair
    # skips the checks and fresh-candidate rounds off the candidates (a few candidates
    # each, where the certified repair needs several rounds), but its answer is still
    # a flow over the candidate arcs within every bound
    fs = importlib.import_module("flexassign.backends.flow.warm_solve")
    monkeypatch.setattr(fs, "_SSP_FULL_PAIRS", 0)
    monkeypatch.setattr(fs, "_SSP_WIDE_PAIRS", 0)
    data = wd._prepare(_clustered(0, n=2500))[0]
    data.compiled = True
    sub = wd._sample(data, np.random.default_rng(0))
    idx, val = wd._top(sub, np.zeros(sub.e), None, int(sub.cap.max()) + 5)
    p0 = np.zeros(sub.e, dtype=np.int64)

    def repair(certify: bool) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        stats: dict[str, Any] = {}
        _, cand, held = _warm_ssp.solve_candidates(
            sub, idx, val, p0, p0, max_rounds=12, max_paths=10_000, stats=stats, certify=certify
        )
        return stats, cand, held

    certified, cand_c, held_c = repair(True)
    hint, cand, held = repair(False)
    assert len(certified["paths"]) > 1 and certified["recandidated"][0] > 0
    assert hint["paths"] == certified["paths"][:1]  # the same first round, then stop
    assert hint["recandidated"] == [0] and hint["rechecked_rows"] == 0
    h = held.sum(axis=1)
    assert ((h >= sub.kmin) & (h <= sub.cap)).all()
    load = np.bincount(cand[held], minlength=sub.e)
    assert ((load >= sub.lo) & (load <= sub.hi)).all()

    def value(cand: np.ndarray, held: np.ndarray) -> float:
        return float(data.fitness[sub.rows[np.nonzero(held)[0]], cand[held]].sum())

    # optimal over fewer arcs: never above the certified optimum
    assert value(cand, held) <= value(cand_c, held_c) + 1e-9


def test_a_broken_repair_is_caught_by_the_numpy_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = importlib.import_module("flexassign.backends.flow.ssp_kernel")
    real = kernel.ssp

    def wrong(*args):  # type: ignore[no-untyped-def]
        status, prices, paths, excess = real(*args)
        held = args[7]
        r = int(np.flatnonzero(held.any(axis=1))[0])
        held[r] = False  # drop one client's experts: load and capacity break
        return status, prices, paths, excess

    monkeypatch.setattr(kernel, "ssp", wrong)
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(rng.random((500, 8)), capacity=2, min_experts=2, tolerance=0.1)
    res = solve_assignment(p, method="flow-warm", options={"engine": "ssp"})
    assert res.status is Status.OPTIMAL
    assert "engine_fallback" in res.stats and res.stats["engine"] == "ortools"
    assert res.objective == pytest.approx(_full(p), rel=1e-12)


def test_auto_engine_follows_clients_per_expert() -> None:
    fw = importlib.import_module("flexassign.backends.flow.warm")
    rng = np.random.default_rng(2)
    few = AssignmentProblem.balanced(rng.random((400, 8)), capacity=1, tolerance=0.2)
    many_n = fw._SSP_MAX_PER_EXPERT * 4 + 1
    many = AssignmentProblem.balanced(rng.random((many_n, 4)), capacity=1, tolerance=0.2)
    assert solve_assignment(few, method="flow-warm").stats["engine"] == "ssp"
    assert solve_assignment(many, method="flow-warm").stats["engine"] == "ortools"


def test_auto_engine_from_handed_over_prices_takes_fewer_clients_per_expert() -> None:
    from flexassign.backends.flow.kernel_state import warmup

    warmup()  # loaded: the kernels pay
    fw = importlib.import_module("flexassign.backends.flow.warm")
    rng = np.random.default_rng(5)
    per = (fw._SSP_MAX_PER_EXPERT_WARM + fw._SSP_MAX_PER_EXPERT) // 2
    n, e = per * 4, 4
    p = AssignmentProblem.balanced(rng.random((n, e)), capacity=1, tolerance=0.2)
    cold = solve_assignment(p, method="flow-warm")
    assert cold.stats["engine"] == "ssp"
    warm = solve_assignment(p, method="flow-warm", options={"prices": cold.stats["expert_prices"]})
    assert warm.stats["engine"] == "ortools" and "stale_prices" not in warm.stats
    # prices that send everyone to one expert are dropped: a cold start, by the cold rule
    stale = solve_assignment(p, method="flow-warm", options={"prices": [9.0, -9.0, -9.0, -9.0]})
    assert "stale_prices" in stale.stats and stale.stats["engine"] == "ssp"
    for res in (warm, stale):
        assert res.objective == pytest.approx(cold.objective, rel=1e-12)


def test_sample_levels_with_few_clients_per_expert_take_the_compiled_repair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flexassign.backends.flow.kernel_state import warmup

    warmup()  # the compiled passes are loaded: they pay
    fw = importlib.import_module("flexassign.backends.flow.warm")
    rng = np.random.default_rng(4)
    p = AssignmentProblem.balanced(
        rng.random((20_000, 32)), capacity=rng.choice([1, 2, 4], 20_000), tolerance=0.1
    )
    seen: list[tuple[int, str]] = []
    solve_data = fw._solve_data

    def spy(data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((data.n, kwargs["engine"]))
        return solve_data(data, *args, **kwargs)

    fl = importlib.import_module("flexassign.backends.flow.warm_levels")
    monkeypatch.setattr(fw, "_solve_data", spy)  # the top level
    monkeypatch.setattr(fl, "_solve_data", spy)  # the sample levels
    # a top level that takes OR-Tools (625 clients per expert, above this bound) at a
    # size that solves quickly
    monkeypatch.setattr(fw, "_SSP_MAX_PER_EXPERT", 500)
    ref = _full(p)
    res = solve_assignment(p, method="flow-warm")
    assert res.objective == pytest.approx(ref, rel=1e-9)
    # 625 clients per expert at the top: OR-Tools; the 5,000-client level, 156 per
    # expert: the compiled repair
    assert seen == [(5000, "ssp"), (20_000, "ortools")]
    seen.clear()
    monkeypatch.setattr(fl, "_SSP_LEVELS", False)
    solve_assignment(p, method="flow-warm")
    assert seen == [(5000, "ortools"), (20_000, "ortools")]
    seen.clear()
    monkeypatch.setattr(fl, "_SSP_LEVELS", True)
    solve_assignment(p, method="flow-warm", options={"engine": "ortools"})  # as asked
    assert [engine for _, engine in seen] == ["ortools", "ortools"]


@pytest.mark.parametrize("seed", range(4))
def test_single_arc_updates_reach_the_row_rebuilds_optimum(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the repair recomputes one swap arc where a move invalidates only that one; the
    # same repair rebuilding whole rows (the slot table off) must reach the same optimum
    rng = np.random.default_rng(seed)
    n, e = 3000, 40
    fit = rng.integers(-2, 3, (n, e)).astype(float) if seed % 2 else rng.random((n, e))
    cap = rng.integers(1, 5, n)
    kw: dict = {"min_experts": np.minimum(cap, rng.integers(0, 3, n))} if seed > 1 else {}
    p = AssignmentProblem.balanced(fit, capacity=cap, tolerance=0.05, **kw)
    ref = _full(p)
    results = []
    for pairs in (_warm_ssp._SINGLE_ARC_PAIRS, 0):
        monkeypatch.setattr(_warm_ssp, "_SINGLE_ARC_PAIRS", pairs)
        res = solve_assignment(p, method="flow-warm", options={"engine": "ssp"})
        assert res.stats["engine"] == "ssp" and sum(res.stats["paths"]) > 50
        results.append(res.objective)
    assert results == pytest.approx([ref, ref], rel=1e-9, abs=1e-9)


def test_asking_for_the_compiled_engine_without_numba_names_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flexassign.errors import InvalidProblemError

    monkeypatch.setattr(_warm_ssp, "available", lambda: False)
    p = AssignmentProblem.balanced(np.random.default_rng(0).random((60, 6)), capacity=1)
    with pytest.raises(InvalidProblemError, match=r"`options\['engine'\]='ssp'` needs numba"):
        solve_assignment(p, method="flow-warm", options={"engine": "ssp"})
    res = solve_assignment(p, method="flow-warm")  # "auto" takes the OR-Tools engine
    assert res.stats["engine"] == "ortools"
    assert res.objective == pytest.approx(_full(p), rel=1e-12)


@pytest.mark.parametrize("seed", range(16))
def test_compiled_repair_on_mid_size_instances_with_optional_slots(seed: int) -> None:
    # mid-size instances where clients may drop slots (min_experts < capacity), with ties,
    # negative and skewed scores: the repair's swap, drop and take arcs, and their updates
    # as clients move, against the full network, cold and from random prices
    rng = np.random.default_rng(1000 + seed)
    n, e = int(rng.integers(200, 3000)), int(rng.integers(8, 64))
    fit = [
        rng.random((n, e)),
        rng.integers(-3, 4, (n, e)).astype(float),
        rng.normal(size=(n, e)),
        rng.random((n, e)) ** 8 * 10 - 1,
    ][seed % 4]
    cap = rng.integers(1, min(e, 4) + 1, n)
    kmin = np.minimum(cap, rng.integers(0, 3, n))
    tol = float(rng.choice([0.0, 0.05, 0.2]))
    p = AssignmentProblem.balanced(fit, capacity=cap, min_experts=kmin, tolerance=tol)
    ref = solve_assignment(p, method="flow", options={"prune": False})
    for options in ({"engine": "ssp"}, {"engine": "ssp", "prices": rng.normal(size=e) * 0.3}):
        res = solve_assignment(p, method="flow-warm", options=options)
        assert res.status is ref.status
        if ref.success:
            assert res.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_compiled_frozen_recheck_matches_numpy(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # the OR-Tools engine's exact re-check of frozen clients: the compiled pass over
    # their rows gives the same slack, and fails the same clients, as the NumPy blocks
    from flexassign.backends.flow import warm_network as wn

    rng = np.random.default_rng(seed)
    n, e = 900, 6  # capacities up to E: some clients hold every expert
    fit = rng.integers(0, 4, (n, e)).astype(float) + 0.1 * rng.random((n, e))
    cap = rng.integers(1, e + 1, n)
    kmin = np.where(rng.random(n) < 0.3, cap, 0)  # some must take all they can
    p = AssignmentProblem.balanced(fit, capacity=cap, min_experts=kmin)
    data, *_ = wd._prepare(p)
    prices = np.rint(rng.normal(0, 2.0 ** (data.scale_exp - 2), e)).astype(np.int64)
    idx, _ = wd._top(data, prices, None, e)
    h = rng.integers(data.kmin, data.cap + 1)  # some hold none, some every expert
    moved = prices + np.rint(rng.normal(0, 2.0 ** (data.scale_exp - 3), e)).astype(np.int64)

    def state() -> Any:
        return wn._State(
            data=data,
            p=moved,
            top_idx=idx,
            h=h,
            slack=np.zeros(n),
            is_open=np.zeros(n, dtype=bool),
            m=e,
            margin=1,
        )

    rows = np.sort(rng.choice(n, 700, replace=False))
    got_state, ref_state = state(), state()
    assert wd._compiled_rows(data)
    got = wn._recheck_frozen(got_state, rows)
    monkeypatch.setattr(wd, "_COMPILED_PASSES", False)
    ref = wn._recheck_frozen(ref_state, rows)
    assert 0 < ref.size < rows.size  # some clients fail, some pass
    assert (h[rows] == 0).any() and (h[rows] == e).any()
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got_state.slack, ref_state.slack)


@pytest.mark.parametrize("seed", range(3))
def test_arcs_in_one_pass_match_expert_by_expert(seed: int) -> None:
    # ssp builds its residual arcs in one pass over the clients; the repair rebuilds
    # rows expert by expert: the same cheapest client for every arc, ties included
    k = importlib.import_module("flexassign.backends.flow.ssp_kernel")
    rng = np.random.default_rng(seed)
    n, m, e = 400, 6, 12
    cand = np.stack([rng.permutation(e)[:m] for _ in range(n)]).astype(np.int64)
    gain = rng.integers(-3, 4, (n, m)).astype(np.int64)  # many ties
    gain[rng.random((n, m)) < 0.1] = _warm_ssp._G_INVALID  # some slots invalid
    held = (rng.random((n, m)) < 0.4) & (gain > _warm_ssp._G_INVALID // 2)
    h = held.sum(axis=1).astype(np.int64)
    kmin = np.minimum(h, rng.integers(0, 2, n)).astype(np.int64)
    cap = np.minimum(h + rng.integers(0, 2, n), m).astype(np.int64)
    hub = e
    ptr, ci, cs, nh, _ = k._csr(cand, gain, held, e)
    w1 = np.empty((e + 1, e + 1), np.int64)
    arg1 = np.empty_like(w1)
    k._build_arcs(hub, w1, arg1, cand, gain, held, h, kmin, cap)
    w2 = np.empty_like(w1)
    arg2 = np.empty_like(w1)
    w2[hub], arg2[hub] = k._INF, -1
    for a in range(e):
        k._row(a, hub, w2, arg2, ptr, ci, cs, nh, cand, gain, held, h, kmin)
        k._take(a, hub, w2, arg2, ptr, ci, cs, nh, gain, held, h, cap)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(arg1, arg2)
    assert (w1 < k._INF).sum() > e * e // 2  # most arcs exist


def test_ortools_engine_hands_over_when_a_round_reopens_many_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.families import family_rounds
    from flexassign.backends.flow import warm_solve as ws
    from flexassign.backends.flow.kernel_state import warmup

    warmup()  # the compiled engine is loaded: the switch needs it
    # round 2 of low-rank scores after a shift of the population: 750 clients per
    # expert (OR-Tools at the top with the bound lowered to 500; a size that solves
    # quickly), whose first round re-opens 210 of 6,000 clients
    monkeypatch.setattr(
        importlib.import_module("flexassign.backends.flow.warm"), "_SSP_MAX_PER_EXPERT", 500
    )
    _, p = family_rounds("lowrank", 6000, 8, seed=0, shift=True)
    ref = _full(p)
    plain = solve_assignment(p, method="flow-warm")
    assert plain.stats["engine"] == "ortools" and "engine_switch" not in plain.stats
    assert 0 < plain.stats["reopened"][0] < ws._SWITCH_REOPENED * 6000  # below the share
    monkeypatch.setattr(ws, "_SWITCH_REOPENED", 0.01)
    switched = solve_assignment(p, method="flow-warm")
    assert "re-opened 210 clients" in switched.stats["engine_switch"]
    assert switched.stats["engine"] == "ssp"
    assert switched.status is Status.OPTIMAL
    assert switched.objective == pytest.approx(ref, rel=1e-9)
    assert plain.objective == pytest.approx(ref, rel=1e-9)
    # an engine the caller asked for is kept
    asked = solve_assignment(p, method="flow-warm", options={"engine": "ortools"})
    assert "engine_switch" not in asked.stats and asked.stats["engine"] == "ortools"
    assert asked.objective == pytest.approx(ref, rel=1e-9)
