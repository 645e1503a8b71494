"""Wire format of the FLEX-MoE Flower integration: (de)serialization round trips."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from flexassign.alignment import Feedback
from flexassign.integrations.flower.messages import (
    CONFIG_KEY,
    FEEDBACK_KEY,
    PROFILE_KEY,
    SHARED_KEY,
    MessageFormatError,
    decode_profile,
    decode_train_instruction,
    decode_train_reply,
    encode_profile,
    encode_train_instruction,
    encode_train_reply,
    expert_record_key,
    join_state,
    numpy_to_arrayrecord,
    split_state,
)

pytestmark = pytest.mark.flower


def _state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "features.0.weight": rng.normal(size=(3, 2)).astype(np.float32),
        "experts.0.0.weight": rng.normal(size=(2, 2)).astype(np.float32),
        "experts.0.0.bias": rng.normal(size=2).astype(np.float32),
        "experts.2.0.weight": rng.normal(size=(2, 2)).astype(np.float32),
        "experts.2.0.bias": rng.normal(size=2).astype(np.float32),
        "experts.10.0.bias": rng.normal(size=2).astype(np.float32),
        "head.weight": rng.normal(size=(4, 2)).astype(np.float32),
        "router.weight": rng.normal(size=(11, 2)).astype(np.float32),
    }


def test_split_and_join_state() -> None:
    state = _state()
    shared, experts = split_state(state)
    assert list(shared) == ["features.0.weight", "head.weight"]
    assert list(experts) == [0, 2, 10]
    assert list(experts[0]) == ["0.weight", "0.bias"]
    joined = join_state(shared, experts)
    assert "router.weight" not in joined
    assert set(joined) == set(state) - {"router.weight"}
    for k, v in joined.items():
        np.testing.assert_array_equal(v, state[k])


def test_split_state_rejects_bad_expert_key() -> None:
    with pytest.raises(MessageFormatError, match=r"experts\.x\.w"):
        split_state({"experts.x.w": np.zeros(1)})


def test_train_instruction_round_trip_carries_only_assigned_experts() -> None:
    shared, experts = split_state(_state())
    content = encode_train_instruction(
        server_round=3, shared=shared, experts={2: experts[2], 0: experts[0]},
        config={"lr": 0.1},
    )
    assert sorted(content.array_records) == sorted(
        [SHARED_KEY, expert_record_key(0), expert_record_key(2)]
    )
    assert list(content.config_records[CONFIG_KEY]["expert-ids"]) == [0, 2]
    ins = decode_train_instruction(content)
    assert ins.server_round == 3
    assert ins.expert_ids == (0, 2)
    assert ins.config == {"lr": 0.1}
    for e in (0, 2):
        for k, v in experts[e].items():
            np.testing.assert_array_equal(ins.experts[e][k], v)
            assert ins.experts[e][k].dtype == v.dtype
    for k, v in shared.items():
        np.testing.assert_array_equal(ins.shared[k], v)


def test_instruction_with_no_config_is_not_mutated() -> None:
    cfg = {"lr": 0.1}
    encode_train_instruction(server_round=1, shared={}, experts={}, config=cfg)
    assert cfg == {"lr": 0.1}


@pytest.mark.parametrize("key", ["server-round", "expert-ids"])
def test_instruction_rejects_reserved_config_keys(key: str) -> None:
    with pytest.raises(MessageFormatError, match=f"reserved key `{key}`"):
        encode_train_instruction(server_round=1, shared={}, experts={}, config={key: 1})


def test_instruction_expert_ids_must_match_records() -> None:
    shared, experts = split_state(_state())
    content = encode_train_instruction(server_round=1, shared=shared, experts={0: experts[0]})
    content[CONFIG_KEY]["expert-ids"] = [0, 2]
    with pytest.raises(MessageFormatError, match=r"does not match the expert ArrayRecords"):
        decode_train_instruction(content)


def test_instruction_missing_records() -> None:
    with pytest.raises(MessageFormatError, match="`shared` ArrayRecord"):
        decode_train_instruction(RecordDict({CONFIG_KEY: ConfigRecord({"x": 1})}))
    with pytest.raises(MessageFormatError, match="`config` ConfigRecord"):
        decode_train_instruction(RecordDict({SHARED_KEY: numpy_to_arrayrecord({})}))


def test_train_reply_round_trip() -> None:
    shared, experts = split_state(_state())
    fb = Feedback(experts=[0, 2], counts=[5, 0], accuracy=[0.5, float("nan")],
                  loss=[1.0, float("nan")], round_time=2.5, train_samples=10)
    content = encode_train_reply(
        shared=shared, experts={0: experts[0], 2: experts[2]}, num_examples=7,
        feedback=fb, metrics={"accuracy": 0.75}, profile={"client-id": "c1", "capacity": 2},
    )
    reply = decode_train_reply(content)
    assert reply.num_examples == 7
    assert reply.metrics == {"accuracy": 0.75}
    assert reply.feedback.experts == (0, 2) and reply.feedback.counts == (5, 0)
    assert reply.feedback.accuracy[0] == 0.5 and np.isnan(reply.feedback.accuracy[1])
    assert reply.feedback.round_time == 2.5 and reply.feedback.train_samples == 10
    assert reply.profile == {"client-id": "c1", "capacity": 2}
    assert list(reply.experts) == [0, 2]
    np.testing.assert_array_equal(reply.experts[2]["0.bias"], experts[2]["0.bias"])


def test_train_reply_accepts_harness_feedback_objects() -> None:
    class HarnessLike:  # duck-typed like fl_harness.client.ExpertFeedback
        experts = (1,)
        counts = (3,)
        accuracy = (1.0,)
        loss = (0.1,)

    reply = decode_train_reply(
        encode_train_reply(shared={}, experts={}, num_examples=1, feedback=HarnessLike())
    )
    assert reply.feedback.experts == (1,) and reply.feedback.loss == (0.1,)
    assert reply.feedback.round_time is None


def test_train_reply_rejects_invalid_feedback() -> None:
    content = encode_train_reply(
        shared={}, experts={}, num_examples=1,
        feedback=Feedback(experts=[0], counts=[1], accuracy=[0.5]),
    )
    content[FEEDBACK_KEY] = MetricRecord({"experts": [0, 1], "counts": [1]})
    with pytest.raises(MessageFormatError, match="feedback is invalid"):
        decode_train_reply(content)
    del content[FEEDBACK_KEY]
    with pytest.raises(MessageFormatError, match="`feedback` MetricRecord"):
        decode_train_reply(content)


def test_profile_round_trip_and_type_check() -> None:
    rec = encode_profile({"client-id": 3, "capacity": np.int64(2), "device-class": "tablet",
                          "unused": None})
    assert decode_profile(rec) == {"client-id": 3, "capacity": 2, "device-class": "tablet"}
    assert PROFILE_KEY == "profile"
    with pytest.raises(MessageFormatError, match="profile field `bad`"):
        encode_profile({"bad": [1, 2]})
