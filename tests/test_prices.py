"""Expert price guesses (``backends/_prices.py``): the refinement ``flow-warm`` runs
before its exact solve and the cold estimate of ``flow``. Heuristics: they only have to
move prices the right way; each backend's certificate decides optimality."""

from __future__ import annotations

import doctest

import numpy as np

from flexassign.backends.flow import prices as _prices
from flexassign.backends.flow.prices import estimate_prices, refine_prices


def _instance(seed: int, n: int = 400, e: int = 12):
    rng = np.random.default_rng(seed)
    popular = 1.0 / (1.0 + np.arange(e)) ** 0.5
    u = np.rint((popular[None, :] + 0.3 * rng.random((n, e))) * 2**20)
    idx = np.argsort(-u, axis=1)
    val = np.take_along_axis(u, idx, axis=1)
    cap = rng.integers(1, 4, n).astype(np.int64)
    avg = cap.sum() / e
    lo = np.full(e, int(np.floor(0.9 * avg)), dtype=np.int64)
    hi = np.full(e, int(np.ceil(1.1 * avg)), dtype=np.int64)
    return idx, val, cap, np.zeros(n, dtype=np.int64), lo, hi


def _excess(idx, val, cap, lo, hi, delta) -> int:
    u = val + delta[idx]
    order = np.argsort(-u, axis=1, kind="stable")
    ids = np.take_along_axis(idx, order, axis=1)
    held = np.arange(idx.shape[1])[None, :] < cap[:, None]
    load = np.bincount(ids[held], minlength=lo.size)
    return int(np.maximum(load - hi, 0).sum() + np.maximum(lo - load, 0).sum())


def test_refinement_moves_load_back_inside_the_bounds() -> None:
    before = after = 0
    for seed in range(10):
        idx, val, cap, kmin, lo, hi = _instance(seed)
        zero = np.zeros(lo.size, dtype=np.int64)
        delta = refine_prices(idx, val, cap, kmin, lo, hi, zero, steps=4, damping=0.8)
        before += _excess(idx, val, cap, lo, hi, zero)
        after += _excess(idx, val, cap, lo, hi, delta.astype(np.float64))
    assert before > 0
    assert after < before / 2


def test_popular_experts_get_cheaper() -> None:
    idx, val, cap, kmin, lo, hi = _instance(0)
    zero = np.zeros(lo.size, dtype=np.int64)
    delta = refine_prices(idx, val, cap, kmin, lo, hi, zero, steps=3, damping=0.8)
    # expert 0 is everybody's favourite, the last one nobody's
    assert delta[0] < 0 < delta[-1]


def test_nothing_moves_when_loads_fit_and_slackness_holds() -> None:
    idx, val, cap, kmin, lo, hi = _instance(1)
    wide_lo = np.zeros_like(lo)
    wide_hi = np.full_like(hi, cap.sum())
    zero = np.zeros(lo.size, dtype=np.int64)
    delta = refine_prices(idx, val, cap, kmin, wide_lo, wide_hi, zero, steps=3, damping=0.8)
    assert not delta.any()


def test_a_price_heading_for_zero_does_not_cross_it() -> None:
    # loads fit, but a bonus on an expert above its minimum breaks slackness: it shrinks
    # towards zero and stops there
    idx, val, cap, kmin, lo, hi = _instance(2)
    wide_lo = np.zeros_like(lo)
    wide_hi = np.full_like(hi, cap.sum())
    prices = np.zeros(lo.size, dtype=np.int64)
    prices[3] = 2**18
    u = val + prices[idx]
    delta = refine_prices(idx, u, cap, kmin, wide_lo, wide_hi, prices, steps=5, damping=0.8)
    assert -(2**18) <= delta[3] < 0
    assert (delta[np.arange(lo.size) != 3] == 0).all()


def test_doctests() -> None:
    assert doctest.testmod(_prices).failed == 0


def test_cold_estimate_prices_the_popular_expert_down() -> None:
    rng = np.random.default_rng(3)
    n, e = 300, 6
    popular = np.linspace(1.0, 0.0, e)
    fit = popular[None, :] + 0.2 * rng.random((n, e))
    cap = np.ones(n, dtype=np.int64)
    lo = np.full(e, 40)
    hi = np.full(e, 60)
    est = estimate_prices(fit, cap, lo, hi)
    assert est is not None
    prices, spread = est
    assert prices[0] < 0 < prices[-1] and spread >= 0

    # the moved prices leave less load outside the bounds than greedy's choice
    def excess(p: np.ndarray) -> int:
        load = np.bincount((fit + p).argmax(axis=1), minlength=e)
        return int(np.maximum(load - hi, 0).sum() + np.maximum(lo - load, 0).sum())

    assert excess(prices) < excess(np.zeros(e)) / 2
    # a masked pair is never anyone's choice, and prices cannot matter without capacity
    free = np.ones((n, e), dtype=bool)
    free[:, 0] = False
    masked = estimate_prices(fit, cap, lo, hi, free=free)
    assert masked is not None and np.isfinite(masked[0]).all()
    assert estimate_prices(fit, np.zeros(n, dtype=np.int64), lo, hi) is None
