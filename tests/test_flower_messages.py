"""Wire format of the FLEX-MoE Flower integration and ExpertLayout."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from flexassign.alignment import Feedback
from flexassign.integrations.flower import ExpertLayout, LayoutError
from flexassign.integrations.flower.messages import (
    ARRAYS_KEY,
    CONFIG_KEY,
    EXPERT_WEIGHTS_KEY,
    FEEDBACK_KEY,
    METRICS_KEY,
    PROFILE_KEY,
    MessageFormatError,
    decode_evaluate_reply,
    decode_profile,
    decode_train_instruction,
    decode_train_reply,
    encode_evaluate_reply,
    encode_profile,
    encode_train_instruction,
    encode_train_reply,
    expert_weights,
    numpy_to_arrayrecord,
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


# ----------------------------------------------------------------------- layout


def test_default_layout_is_the_harness_naming() -> None:
    shared, experts = ExpertLayout().split(_state())
    assert list(shared) == ["features.0.weight", "head.weight"]
    assert list(experts) == [0, 2, 10]
    assert list(experts[0]) == ["experts.0.0.weight", "experts.0.0.bias"]  # model names
    assert ExpertLayout().is_local("router.weight")
    assert "router.weight" not in ExpertLayout().public(_state())


def test_user_layout_expert_spans_layers_and_gates_stay_local() -> None:
    layout = ExpertLayout(expert=r"^blocks\.\d+\.experts\.(\d+)\.", local=r"^blocks\.\d+\.gate\.")
    names = ["embed.weight", "blocks.0.gate.weight", "blocks.1.gate.bias",
             "blocks.0.experts.3.fc.weight", "blocks.1.experts.3.fc.weight",
             "blocks.1.experts.0.fc.weight", "head.bias"]
    shared, experts = layout.split({n: np.zeros(1) for n in names})
    assert sorted(shared) == ["embed.weight", "head.bias"]
    assert sorted(experts[3]) == ["blocks.0.experts.3.fc.weight", "blocks.1.experts.3.fc.weight"]
    assert list(experts) == [0, 3]
    assert [layout.role(n) for n in names[1:3]] == ["local", "local"]


def test_layout_with_no_expert_is_a_clear_error() -> None:
    state = {"blocks.0.experts.0.w": np.zeros(1), "blocks.0.gate.w": np.zeros(1)}
    with pytest.raises(LayoutError, match=r"`layout` finds 0 experts.*blocks\.0\.experts\.0\.w"):
        ExpertLayout().check_model(state)
    with pytest.raises(LayoutError, match=r"`layout` finds experts \[0\] but the planner plans 2"):
        ExpertLayout().check_model({"experts.0.w": np.zeros(1)}, num_experts=2)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"expert": r"experts\.\d+"}, "needs a group"), ({"expert": "("}, "does not compile"),
     ({"local": 3}, r"`layout.local`"), ({"expert": None}, r"`layout.expert`")],
)
def test_bad_layouts(kw: dict[str, object], match: str) -> None:
    with pytest.raises(LayoutError, match=match):
        ExpertLayout(**kw)  # type: ignore[arg-type]


def test_layout_group_must_be_digits() -> None:
    layout = ExpertLayout(expert=r"experts\.(\w+)\.")
    with pytest.raises(LayoutError, match="not an expert id"):
        layout.role("experts.a.w")


# ----------------------------------------------------------------- instructions


def test_train_instruction_round_trip_in_model_names() -> None:
    shared, experts = ExpertLayout().split(_state())
    arrays = {**shared, **experts[0], **experts[2]}
    content = encode_train_instruction(server_round=3, arrays=arrays, expert_ids=[2, 0],
                                       config={"lr": 0.1})
    assert sorted(content.array_records) == [ARRAYS_KEY]
    assert list(content.config_records[CONFIG_KEY]["expert-ids"]) == [0, 2]
    ins = decode_train_instruction(content)
    assert ins.server_round == 3
    assert ins.expert_ids == (0, 2)
    assert ins.config == {"lr": 0.1}
    assert list(ins.arrays) == list(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(ins.arrays[k], v)
        assert ins.arrays[k].dtype == v.dtype


def test_instruction_config_is_not_mutated() -> None:
    cfg = {"lr": 0.1}
    encode_train_instruction(server_round=1, arrays={}, expert_ids=[], config=cfg)
    assert cfg == {"lr": 0.1}


@pytest.mark.parametrize("key", ["server-round", "expert-ids"])
def test_instruction_rejects_reserved_config_keys(key: str) -> None:
    with pytest.raises(MessageFormatError, match=f"reserved key `{key}`"):
        encode_train_instruction(server_round=1, arrays={}, expert_ids=[], config={key: 1})


def test_instruction_missing_records() -> None:
    with pytest.raises(MessageFormatError, match="`arrays` ArrayRecord"):
        decode_train_instruction(RecordDict({CONFIG_KEY: ConfigRecord({"x": 1})}))
    with pytest.raises(MessageFormatError, match="`config` ConfigRecord"):
        decode_train_instruction(RecordDict({ARRAYS_KEY: numpy_to_arrayrecord({})}))
    bad = encode_train_instruction(server_round=1, arrays={}, expert_ids=[0])
    bad[CONFIG_KEY]["expert-ids"] = [-1]
    with pytest.raises(MessageFormatError, match="`expert-ids`"):
        decode_train_instruction(bad)


# ---------------------------------------------------------------------- replies


def test_train_reply_round_trip_and_keys_filter() -> None:
    state = _state()
    fb = Feedback(experts=[0, 2], counts=[5, 0], accuracy=[0.5, float("nan")],
                  loss=[1.0, float("nan")], round_time=2.5, train_samples=10)
    sent = [k for k in state if k != "router.weight" and not k.startswith("experts.10.")]
    content = encode_train_reply(state, num_examples=7, feedback=fb, metrics={"accuracy": 0.75},
                                 profile={"client-id": "c1", "capacity": 2}, keys=sent)
    reply = decode_train_reply(content)
    assert list(reply.arrays) == sent  # the router and unheld experts stayed home
    assert reply.num_examples == 7
    assert reply.metrics == {"accuracy": 0.75}
    assert reply.feedback.experts == (0, 2) and reply.feedback.counts == (5, 0)
    assert reply.feedback.accuracy[0] == 0.5 and np.isnan(reply.feedback.accuracy[1])
    assert reply.feedback.round_time == 2.5 and reply.feedback.train_samples == 10
    assert reply.profile == {"client-id": "c1", "capacity": 2}
    np.testing.assert_array_equal(reply.arrays["experts.2.0.bias"], state["experts.2.0.bias"])
    with pytest.raises(MessageFormatError, match="named in `keys`"):
        encode_train_reply({}, num_examples=1, feedback=fb, keys=["x"])


def test_train_reply_accepts_harness_feedback_objects() -> None:
    class HarnessLike:  # duck-typed like fl_harness.client.ExpertFeedback
        experts = (1,)
        counts = (3,)
        accuracy = (1.0,)
        loss = (0.1,)

    reply = decode_train_reply(encode_train_reply({}, num_examples=1, feedback=HarnessLike()))
    assert reply.feedback.experts == (1,) and reply.feedback.loss == (0.1,)
    assert reply.feedback.round_time is None


def _reply(**metrics: object) -> RecordDict:
    content = encode_train_reply({}, num_examples=1, feedback=Feedback(experts=[0], counts=[1]))
    for k, v in metrics.items():
        content[METRICS_KEY][k] = v
    return content


@pytest.mark.parametrize(
    ("value", "match"),
    [(float("inf"), "`num-examples` must be a finite integer"),
     (float("nan"), "`num-examples`"), (-3, "`num-examples`"), (2.5, "`num-examples`")],
)
def test_train_reply_rejects_bad_num_examples(value: float, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        decode_train_reply(_reply(**{"num-examples": value}))


def test_train_reply_rejects_non_finite_metrics() -> None:
    with pytest.raises(MessageFormatError, match="metric `accuracy` is not finite"):
        decode_train_reply(_reply(accuracy=float("nan")))


@pytest.mark.parametrize(
    "record",
    [{"experts": [0, 1], "counts": [1]}, {"experts": [0], "counts": [float("inf")]},
     {"experts": [0], "counts": [-1]}, {"experts": [0], "counts": [1], "accuracy": [2.0]},
     {"experts": [0], "counts": [1e300]}],
)
def test_train_reply_rejects_invalid_feedback(record: dict[str, object]) -> None:
    content = _reply()
    content[FEEDBACK_KEY] = MetricRecord(record)  # type: ignore[arg-type]
    # 1e300 is finite but more than a planner state file stores (2**53): rejected too
    with pytest.raises(MessageFormatError, match="feedback is invalid"):
        decode_train_reply(content)


def test_expert_weights_round_trip_and_fallback_to_counts() -> None:
    fb = Feedback(experts=[0, 2], counts=[5, 1])
    plain_content = encode_train_reply({}, num_examples=9, feedback=fb)
    assert EXPERT_WEIGHTS_KEY not in plain_content.metric_records
    plain = decode_train_reply(plain_content)
    assert plain.expert_weights is None
    assert expert_weights(plain) == {0: 5.0, 2: 1.0}  # no weights sent: the counts
    content = encode_train_reply({}, num_examples=9, feedback=fb,
                                 expert_weights={2: 7, 0: 2.5})
    assert list(content.metric_records[EXPERT_WEIGHTS_KEY]["experts"]) == [2, 0]
    reply = decode_train_reply(content)
    assert reply.expert_weights == {2: 7.0, 0: 2.5}
    assert expert_weights(reply) == {2: 7.0, 0: 2.5}
    assert reply.feedback.counts == (5, 1)  # the planner's feedback is untouched


@pytest.mark.parametrize(
    ("record", "match"),
    [({"experts": [0, 1], "weights": [1.0]}, "2 experts but 1 weights"),
     ({"experts": [0], "weights": [float("inf")]}, "expert 0 must be finite and >= 0"),
     ({"experts": [0], "weights": [float("nan")]}, "expert 0 must be finite and >= 0"),
     ({"experts": [0], "weights": [-1.0]}, "expert 0 must be finite and >= 0"),
     ({"experts": [0, 0], "weights": [1.0, 1.0]}, "names expert 0 twice"),
     ({"experts": [-1], "weights": [1.0]}, "`expert-weights` must be a finite integer"),
     ({"experts": [0]}, "lacks `experts` or `weights`")],
)
def test_train_reply_rejects_invalid_expert_weights(record: dict[str, object],
                                                    match: str) -> None:
    content = _reply()
    content[EXPERT_WEIGHTS_KEY] = MetricRecord(record)  # type: ignore[arg-type]
    with pytest.raises(MessageFormatError, match=match):
        decode_train_reply(content)


def test_encode_rejects_invalid_expert_weights() -> None:
    fb = Feedback(experts=[0], counts=[1])
    with pytest.raises(MessageFormatError, match="`expert-weights` of expert 0"):
        encode_train_reply({}, num_examples=1, feedback=fb, expert_weights={0: float("nan")})


def test_train_reply_missing_records() -> None:
    content = _reply()
    del content[FEEDBACK_KEY]
    with pytest.raises(MessageFormatError, match="`feedback` MetricRecord"):
        decode_train_reply(content)
    with pytest.raises(MessageFormatError, match="`arrays` ArrayRecord"):
        decode_train_reply(RecordDict({}))


def test_evaluate_reply_round_trip() -> None:
    n, m = decode_evaluate_reply(encode_evaluate_reply(num_examples=5, metrics={"loss": 0.25}))
    assert (n, m) == (5, {"loss": 0.25})
    bad = encode_evaluate_reply(num_examples=5, metrics={"loss": 0.25})
    bad[METRICS_KEY]["num-examples"] = float("inf")
    with pytest.raises(MessageFormatError, match="`num-examples`"):
        decode_evaluate_reply(bad)


# --------------------------------------------------------------------- profiles


def test_profile_round_trip_and_checks() -> None:
    rec = encode_profile({"client-id": 3, "capacity": np.int64(2), "device-class": "tablet",
                          "num-examples": 120, "unused": None})
    assert decode_profile(rec) == {"client-id": 3, "capacity": 2, "device-class": "tablet",
                                   "num-examples": 120}
    assert PROFILE_KEY == "profile"
    with pytest.raises(MessageFormatError, match="profile field `bad`"):
        encode_profile({"bad": [1, 2]})
    with pytest.raises(MessageFormatError, match="lacks `client-id`"):
        decode_profile(ConfigRecord({"capacity": 1}))
    with pytest.raises(MessageFormatError, match="`capacity`"):
        decode_profile(ConfigRecord({"client-id": 1, "capacity": -1}))
    with pytest.raises(MessageFormatError, match="`num-examples`"):
        decode_profile(ConfigRecord({"client-id": 1, "num-examples": float("inf")}))
    with pytest.raises(MessageFormatError, match="`client-id`"):
        decode_profile(ConfigRecord({"client-id": 1.5}))
