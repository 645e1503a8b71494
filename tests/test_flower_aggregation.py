"""Server-side aggregation of FLEX-MoE replies against hand-computed means."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")

from flexassign.alignment import Feedback
from flexassign.integrations.flower.messages import (
    MessageFormatError,
    TrainReply,
)
from flexassign.integrations.flower.strategy import aggregate_replies

pytestmark = pytest.mark.flower


def _reply(shared: float, experts: dict[int, float], counts: dict[int, int], n: int) -> TrainReply:
    return TrainReply(
        shared={"w": np.full(2, shared, dtype=np.float32)},
        experts={e: {"0.w": np.full(3, v, dtype=np.float32)} for e, v in experts.items()},
        num_examples=n,
        metrics={},
        feedback=Feedback(experts=list(counts), counts=list(counts.values())),
    )


CUR_SHARED = {"w": np.zeros(2, dtype=np.float32)}
CUR_EXPERTS = {e: {"0.w": np.full(3, 100.0 + e, dtype=np.float32)} for e in range(4)}


def test_shared_by_samples_and_experts_by_usage_over_their_trainers() -> None:
    replies = [
        _reply(1.0, {0: 1.0, 1: 2.0}, {0: 3, 1: 1}, n=10),
        _reply(4.0, {1: 5.0}, {1: 3}, n=30),
        _reply(7.0, {2: 9.0}, {2: 0}, n=0),  # no samples, zero usage: weight 0
    ]
    shared, experts = aggregate_replies(CUR_SHARED, CUR_EXPERTS, replies)
    # shared: (10*1 + 30*4 + 0*7) / 40
    np.testing.assert_allclose(shared["w"], [3.25, 3.25])
    # expert 0: trained only by reply 0 -> its value
    np.testing.assert_allclose(experts[0]["0.w"], 1.0)
    # expert 1, partially trained (2 of 3 nodes): (1*2 + 3*5) / (1 + 3) = 4.25
    np.testing.assert_allclose(experts[1]["0.w"], 4.25)
    # expert 2: its only trainer routed no sample to it -> unchanged
    np.testing.assert_array_equal(experts[2]["0.w"], CUR_EXPERTS[2]["0.w"])
    # expert 3: nobody trained it -> unchanged
    np.testing.assert_array_equal(experts[3]["0.w"], CUR_EXPERTS[3]["0.w"])
    assert experts[1]["0.w"].dtype == np.float32 and shared["w"].dtype == np.float32


def test_expert_missing_from_usage_counts_as_zero() -> None:
    replies = [_reply(1.0, {0: 1.0}, {}, n=1), _reply(1.0, {0: 5.0}, {0: 2}, n=1)]
    _, experts = aggregate_replies(CUR_SHARED, CUR_EXPERTS, replies)
    np.testing.assert_allclose(experts[0]["0.w"], 5.0)


def test_no_replies_keeps_everything() -> None:
    shared, experts = aggregate_replies(CUR_SHARED, CUR_EXPERTS, [])
    np.testing.assert_array_equal(shared["w"], CUR_SHARED["w"])
    for e in CUR_EXPERTS:
        np.testing.assert_array_equal(experts[e]["0.w"], CUR_EXPERTS[e]["0.w"])


def test_zero_total_samples_keeps_shared() -> None:
    shared, _ = aggregate_replies(CUR_SHARED, CUR_EXPERTS, [_reply(5.0, {}, {}, n=0)])
    np.testing.assert_array_equal(shared["w"], CUR_SHARED["w"])


def test_inputs_not_modified() -> None:
    before = {e: v["0.w"].copy() for e, v in CUR_EXPERTS.items()}
    aggregate_replies(CUR_SHARED, CUR_EXPERTS, [_reply(1.0, {0: 1.0}, {0: 1}, n=1)])
    for e, v in before.items():
        np.testing.assert_array_equal(CUR_EXPERTS[e]["0.w"], v)


def test_mismatched_shared_keys_raise() -> None:
    bad = _reply(1.0, {}, {}, n=1)
    bad.shared["extra"] = np.zeros(1, dtype=np.float32)
    with pytest.raises(MessageFormatError, match="shared keys"):
        aggregate_replies(CUR_SHARED, CUR_EXPERTS, [bad])


def test_unknown_expert_raises() -> None:
    with pytest.raises(ValueError, match="expert 9"):
        aggregate_replies(CUR_SHARED, CUR_EXPERTS, [_reply(1.0, {9: 1.0}, {9: 1}, n=1)])
