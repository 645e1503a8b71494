"""Expert usage monitoring: loads, usage score, deficit, utilization statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexassign.alignment import UsageMonitor, deficit_targets, utilization_stats
from flexassign.errors import InvalidProblemError


def test_utilization_stats_hand_computed() -> None:
    s = utilization_stats([4, 2, 0, 2])
    assert s.mean == 2.0
    assert s.variance == pytest.approx(2.0)  # ((2)^2 + 0 + (-2)^2 + 0) / 4
    assert s.cv == pytest.approx(math.sqrt(2.0) / 2.0)
    assert s.min_max_ratio == 0.0
    assert s.never_trained == 1
    empty = utilization_stats([0, 0])
    assert math.isnan(empty.cv) and math.isnan(empty.min_max_ratio)
    assert empty.to_dict()["cv"] is None


def test_usage_monitor_ema_cumulative_deficit() -> None:
    m = UsageMonitor(4, decay=0.5)
    m.record_round([2, 2, 0, 0], [50, 30, 0, 0])
    m.record_round([0, 0, 0, 0], [0, 0, 0, 0])  # empty round: score unchanged
    m.record_round([1, 1, 1, 1], [10, 10, 10, 10])
    share1 = np.array([2.0, 2.0, 0.0, 0.0])  # E * load / total
    score = 0.5 * (0.5 * 1.0 + 0.5 * share1) + 0.5 * 1.0
    np.testing.assert_allclose(m.usage_score(), score)
    np.testing.assert_allclose(m.cumulative(), [3, 3, 1, 1])
    np.testing.assert_allclose(m.cumulative("samples"), [60, 40, 10, 10])
    np.testing.assert_allclose(m.deficit(), [-1, -1, 1, 1])
    assert m.rounds == 3
    last = m.stats(window=1)
    assert last.cv == 0.0 and last.rounds == 1
    assert m.stats(window=2).loads == (1.0, 1.0, 1.0, 1.0)
    assert m.stats().never_trained == 0
    with pytest.raises(InvalidProblemError, match="`window` must be a positive integer"):
        m.stats(window=0)
    with pytest.raises(InvalidProblemError, match="`kind` must be 'clients' or 'samples'"):
        m.stats(kind="flops")


def test_usage_monitor_roundtrip() -> None:
    m = UsageMonitor(3, decay=0.25)
    m.record_round([1, 0, 2], [5, 0, 9])
    m2 = UsageMonitor.from_dict(3, m.to_dict())
    assert m2.to_dict() == m.to_dict()
    with pytest.raises(InvalidProblemError, match="`usage` state"):
        UsageMonitor.from_dict(4, m.to_dict())


@given(
    cum=st.lists(st.integers(0, 50), min_size=2, max_size=10),
    total=st.integers(0, 40),
    shift=st.floats(0.0, 1.0),
    cap=st.integers(1, 12),
)
def test_deficit_targets_properties(cum: list[int], total: int, shift: float, cap: int) -> None:
    e = len(cum)
    h = np.full(e, float(cap))
    t = deficit_targets(cum, total, h, shift)
    k = min(total, cap * e)
    assert t.sum() == pytest.approx(k, abs=1e-6)
    assert (t >= -1e-9).all() and (t <= h + 1e-9).all()
    # experts further behind never get a smaller target
    order = np.argsort(cum, kind="stable")
    assert (np.diff(t[order]) <= 1e-6).all()
    if shift == 0:
        np.testing.assert_allclose(t, np.full(e, k / e), atol=1e-6)


def test_deficit_targets_full_shift_equalizes_when_possible() -> None:
    t = deficit_targets([5, 3, 0, 0], 10, [10] * 4, 1.0)
    # water level 13/3: expert 0 (already above it) gets nothing, the rest meet at 13/3
    np.testing.assert_allclose(np.array([5, 3, 0, 0]) + t, [5, 13 / 3, 13 / 3, 13 / 3])


@given(
    cum=st.lists(st.integers(0, 50), min_size=2, max_size=8),
    forced=st.integers(0, 3),
    extra=st.integers(0, 20),
    shift=st.floats(0.0, 1.0),
)
def test_deficit_targets_respect_lower_bounds(
    cum: list[int], forced: int, extra: int, shift: float
) -> None:
    e = len(cum)
    h = np.full(e, float(forced + extra))
    m = np.full(e, float(forced))
    total = forced * e + extra
    t = deficit_targets(cum, total, h, shift, lower=m)
    assert (t >= m - 1e-9).all() and (t <= h + 1e-9).all()
    assert t.sum() == pytest.approx(min(total, h.sum()), abs=1e-6)
