"""The numpy aggregation module shared by the Flower strategy and the harness,
against hand-computed means, numpy/scipy references and its input checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from flexassign.integrations.aggregation import (
    AggregationError,
    aggregate_experts,
    aggregate_shared,
    bound_weights,
    check_arrays,
    weighted_average,
)


def _s(v: float, dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"w": np.full(2, v, dtype=dtype)}


CUR = {e: {"0.w": np.full(3, 100.0 + e, dtype=np.float32)} for e in range(4)}


def _ex(v: float) -> dict[str, np.ndarray]:
    return {"0.w": np.full(3, v, dtype=np.float32)}


def test_shared_by_samples_and_experts_by_usage_over_their_trainers() -> None:
    shared = aggregate_shared([(_s(1.0), 10), (_s(4.0), 30), (_s(7.0), 0)])
    np.testing.assert_allclose(shared["w"], [3.25, 3.25])  # (10*1 + 30*4) / 40
    assert shared["w"].dtype == np.float32
    updates = [
        ({0: _ex(1.0), 1: _ex(2.0)}, {0: 3, 1: 1}),
        ({1: _ex(5.0)}, {1: 3}),
        ({2: _ex(9.0)}, {2: 0}),  # its only trainer routed nothing to it
    ]
    experts = aggregate_experts(CUR, updates)
    np.testing.assert_allclose(experts[0]["0.w"], 1.0)
    np.testing.assert_allclose(experts[1]["0.w"], 4.25)  # (1*2 + 3*5) / 4
    np.testing.assert_array_equal(experts[2]["0.w"], CUR[2]["0.w"])
    np.testing.assert_array_equal(experts[3]["0.w"], CUR[3]["0.w"])  # nobody trained it
    assert experts[1]["0.w"].dtype == np.float32


def test_expert_missing_from_usage_counts_as_zero() -> None:
    out = aggregate_experts(CUR, [({0: _ex(1.0)}, {}), ({0: _ex(5.0)}, {0: 2})])
    np.testing.assert_allclose(out[0]["0.w"], 5.0)


def test_zero_weight_state_is_not_read() -> None:
    poisoned = {"w": np.array([np.nan, np.inf])}
    out = weighted_average([{"w": np.array([1.0, 2.0])}, poisoned], [1, 0])
    np.testing.assert_array_equal(out["w"], [1.0, 2.0])


def test_integer_arrays_come_from_the_heaviest_state() -> None:
    a = {"w": np.array([0.0]), "steps": np.array([3], dtype=np.int64)}
    b = {"w": np.array([1.0]), "steps": np.array([7], dtype=np.int64)}
    out = weighted_average([a, b], [1, 2])
    assert out["steps"].tolist() == [7] and out["steps"].dtype == np.int64
    out["steps"][0] = 0
    assert b["steps"][0] == 7  # a copy


def test_inputs_not_modified() -> None:
    before = {e: v["0.w"].copy() for e, v in CUR.items()}
    states = [_s(1.0), _s(3.0)]
    for method in ("mean", "median", "trimmed-mean"):
        aggregate_experts(CUR, [({0: _ex(1.0)}, {0: 1})], method=method)
        weighted_average(states, [1, 2], method=method)
    for e, v in before.items():
        np.testing.assert_array_equal(CUR[e]["0.w"], v)
    assert states[0]["w"][0] == 1.0 and states[1]["w"][0] == 3.0


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7])
def test_median_with_equal_weights_is_numpy_median(m: int) -> None:
    rng = np.random.default_rng(m)
    vals = rng.normal(size=(m, 5, 3))
    out = weighted_average([{"x": v} for v in vals], [2.0] * m, method="median")
    np.testing.assert_allclose(out["x"], np.median(vals, axis=0))


def test_weighted_median_by_hand() -> None:
    states = [{"x": np.array([v])} for v in (1.0, 2.0, 10.0)]
    # weights 1, 1, 3: half the mass (2.5) lies inside the third state's interval
    assert weighted_average(states, [1, 1, 3], method="median")["x"][0] == 10.0
    # weights 1, 1, 2: half the mass (2) falls on the boundary between 2.0 and 10.0
    assert weighted_average(states, [1, 1, 2], method="median")["x"][0] == 6.0


@pytest.mark.parametrize(("m", "k"), [(5, 1), (8, 2), (10, 3)])
def test_trimmed_mean_with_equal_weights_is_scipy_trim_mean(m: int, k: int) -> None:
    rng = np.random.default_rng(m)
    vals = rng.normal(size=(m, 4))
    out = weighted_average([{"x": v} for v in vals], [1.0] * m, method="trimmed-mean",
                           trim=k / m)
    np.testing.assert_allclose(out["x"], stats.trim_mean(vals, k / m, axis=0))


def test_trimmed_mean_cuts_a_straddling_state_partially() -> None:
    states = [{"x": np.array([v])} for v in (0.0, 1.0, 2.0, 3.0)]
    # weights 1 each, trim 0.125: half of 0.0's and half of 3.0's weight remain
    out = weighted_average(states, [1, 1, 1, 1], method="trimmed-mean", trim=0.125)
    want = (0.5 * 0.0 + 1.0 + 2.0 + 0.5 * 3.0) / 3.0
    np.testing.assert_allclose(out["x"][0], want)
    zero = weighted_average(states, [1, 2, 3, 4], method="trimmed-mean", trim=0.0)
    np.testing.assert_allclose(zero["x"], weighted_average(states, [1, 2, 3, 4])["x"])


def test_robust_rules_ignore_one_huge_outlier() -> None:
    honest = [{"x": np.array([1.0, -1.0])}, {"x": np.array([1.2, -0.8])},
              {"x": np.array([0.8, -1.2])}, {"x": np.array([1.1, -0.9])}]
    liar = {"x": np.array([1e30, -1e30])}
    for method in ("median", "trimmed-mean"):
        out = weighted_average([*honest, liar], [1] * 5, method=method, trim=0.2)
        assert np.all(np.abs(out["x"] - [1.0, -1.0]) <= 0.21), method


def test_bound_weights_caps_and_median_ratio() -> None:
    out = bound_weights([10, 12, 1e9], caps=[np.inf, 5, np.nan], max_ratio=10.0)
    # caps first: [10, 5, 1e9]; median of the positive claims 10 -> ratio cap 100
    np.testing.assert_array_equal(out, [10, 5, 100])
    np.testing.assert_array_equal(bound_weights([0, 0]), [0, 0])
    np.testing.assert_array_equal(bound_weights([3, 1e9], max_ratio=None), [3, 1e9])


@pytest.mark.parametrize("m", [3, 5, 9])
def test_a_liar_share_is_bounded_whatever_it_claims(m: int) -> None:
    r = 10.0
    for claim in (1e3, 1e9, 1e300):
        w = bound_weights([100.0] * (m - 1) + [claim], max_ratio=r)
        assert w[-1] / w.sum() <= r / (r + m - 1) + 1e-12


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: weighted_average([], []), "`states` must not be empty"),
        (lambda: weighted_average([_s(1.0)], [1, 2]), "`weights`"),
        (lambda: weighted_average([_s(1.0), _s(2.0)], [0, 0]), "total weight is zero"),
        (lambda: weighted_average([_s(1.0)], [-1]), "`weights` must be finite and >= 0"),
        (lambda: weighted_average([_s(1.0)], [np.nan]), "`weights` must be finite"),
        (lambda: weighted_average([_s(1.0)], [np.inf]), "`weights` must be finite"),
        (lambda: weighted_average([_s(1.0)], [True]), "`weights` must be finite"),
        (lambda: weighted_average([_s(1.0), {"v": np.zeros(2)}], [1, 1]), "entry 1 has keys"),
        (lambda: weighted_average([_s(1.0), {"w": np.zeros(3)}], [1, 1]), "has shape"),
        (lambda: weighted_average([_s(1.0)], [1], method="mode"), "unknown `method` 'mode'"),
        (lambda: weighted_average([_s(1.0)], [1], method="trimmed-mean", trim=0.5), "`trim`"),
        (lambda: aggregate_shared([]), "`updates` must not be empty"),
        (lambda: aggregate_experts(CUR, [({9: _ex(1.0)}, {9: 1})]), "expert 9"),
        (lambda: aggregate_experts(CUR, [({0: {"0.v": np.zeros(3)}}, {0: 1})]), "expert 0"),
        (lambda: aggregate_experts(CUR, [({0: _ex(1.0)}, {0: -2})]), "`usage`"),
        (lambda: bound_weights([1, np.inf]), "`claims`"),
        (lambda: bound_weights([1, 2], caps=[1]), "`caps`"),
        (lambda: bound_weights([1, 2], max_ratio=0.5), "`max_ratio`"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call: object, match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        call()  # type: ignore[operator]


def test_aggregation_error_is_a_value_error() -> None:
    assert issubclass(AggregationError, ValueError)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({}, r"missing \['w'\]"),
        ({"w": np.zeros(2, np.float32), "x": np.zeros(1)}, r"unexpected \['x'\]"),
        ({"w": np.zeros(3, np.float32)}, "shape"),
        ({"w": np.float32(0.0)}, "not an ndarray"),
        ({"w": np.zeros((), np.float32)}, "shape"),
        ({"w": np.zeros(2, np.float64)}, "dtype"),
        ({"w": np.array([0, np.inf], np.float32)}, "non-finite"),
        ({"w": np.array([np.nan, 0], np.float32)}, "non-finite"),
    ],
)
def test_check_arrays(arrays: dict[str, object], match: str) -> None:
    ref = {"w": np.zeros(2, dtype=np.float32)}
    check_arrays({"w": np.ones(2, dtype=np.float32)}, ref)
    with pytest.raises(AggregationError, match=match):
        check_arrays(arrays, ref, name="reply")  # type: ignore[arg-type]
