"""FlexMoEStrategy against an in-process scripted Grid (no Ray, no training).

Each scripted node answers ``query`` with a capacity profile and ``train`` with
deterministic parameter updates and feedback, so every aggregated value can be
computed by hand. Covers planned-expert dispatch, load bounds, failed / missing /
malformed / lying replies, metrics, results, and checkpoint-resume equivalence.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from _flower_grid import InProcessGrid, task_identity  # noqa: F401 - an autouse fixture
from flwr.app import Error, Message, MessageType, RecordDict

from flexassign.alignment import Feedback, Planner
from flexassign.integrations.flower import ExpertLayout, FlexMoEStrategy
from flexassign.integrations.flower.checkpoint import load_checkpoint
from flexassign.integrations.flower.messages import (
    PROFILE_KEY,
    arrayrecord_to_numpy,
    decode_train_instruction,
    encode_profile,
    encode_train_reply,
    numpy_to_arrayrecord,
)


def split_state(state: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[int, Any]]:
    """Shared and per-expert arrays, expert names relative to ``experts.<e>.``."""
    shared, experts = ExpertLayout().split(state)
    return shared, {e: {k.split(".", 2)[2]: v for k, v in p.items()} for e, p in experts.items()}

pytestmark = pytest.mark.flower


E = 4
CAPACITY = {0: 1, 1: 2, 2: 2, 3: 3, 4: 1}
NODE_IDS = {i: 1000 + 7 * i for i in CAPACITY}  # Flower node ids are arbitrary ints
DECLARED: dict[int, dict[str, int]] = {}  # extra profile fields per node


def initial_arrays() -> Any:
    state = {"features.w": np.zeros(2, dtype=np.float32)}
    for e in range(E):
        state[f"experts.{e}.0.w"] = np.full(3, 100.0 + e, dtype=np.float32)
    return numpy_to_arrayrecord(state)


def node_reply(i: int, msg: Message) -> Message:
    """Node i: shared <- shared + (i + 1); expert e <- 10 i + e; usage (i + 1)(e + 1)."""
    ins = decode_train_instruction(msg.content)
    arrays = {}
    for k, v in ins.arrays.items():
        e = ExpertLayout().role(k)
        arrays[k] = v + (i + 1) if e == "shared" else np.full_like(v, 10.0 * i + int(e))
    fb = Feedback(experts=list(ins.expert_ids),
                  counts=[(i + 1) * (e + 1) for e in ins.expert_ids],
                  accuracy=[0.1 * (i + 1) for _ in ins.expert_ids],
                  loss=[1.0 for _ in ins.expert_ids])
    content = encode_train_reply(arrays, num_examples=10 * (i + 1), feedback=fb,
                                 metrics={"accuracy": 0.1 * (i + 1)})
    return Message(content, reply_to=msg)


class ScriptedGrid(InProcessGrid):
    """Delivers messages to Python callables; a handler returning None loses the reply."""

    def __init__(self, behaviour: Callable[[int, int, Message], Message | None] | None = None):
        super().__init__(NODE_IDS.values())
        self.behaviour = behaviour

    def reply(self, msg: Message) -> Message | None:
        i = {n: i for i, n in NODE_IDS.items()}[msg.metadata.dst_node_id]
        if msg.metadata.message_type == MessageType.QUERY:
            prof = encode_profile({"client-id": f"c{i}", "capacity": CAPACITY[i],
                                   **DECLARED.get(i, {})})
            return Message(RecordDict({PROFILE_KEY: prof}), reply_to=msg)
        if msg.metadata.message_type == MessageType.EVALUATE:
            return None  # no federated evaluation here
        rnd = int(msg.content.config_records["config"]["server-round"])
        return (self.behaviour or (lambda i, r, m: node_reply(i, m)))(i, rnd, msg)


def make_strategy(**kw: Any) -> FlexMoEStrategy:
    planner = Planner(num_experts=E, strategy="flex", tolerance=0.1, seed=0)
    return FlexMoEStrategy(planner=planner, min_available_nodes=len(CAPACITY),
                           fraction_evaluate=0.0, settle_time=0.0, **kw)


def test_each_node_gets_only_its_planned_experts_and_bounds_hold() -> None:
    grid = ScriptedGrid()
    strategy = make_strategy()
    result = strategy.start(grid, initial_arrays(), num_rounds=2)
    train_msgs = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(train_msgs) == 2 * len(CAPACITY)
    for msg in train_msgs:
        ins = decode_train_instruction(msg.content)
        record = strategy.history[ins.server_round]
        client = next(c for c, n in record.node_of.items() if n == msg.metadata.dst_node_id)
        assert ins.expert_ids == record.plan[client]
        assert ExpertLayout().expert_ids(ins.arrays) == list(record.plan[client])
        assert len(record.plan[client]) == CAPACITY[int(client[1:])]
    for record in strategy.history.values():
        assert record.fallback is None
        loads = np.array(record.loads)
        assert np.all(loads >= record.lower) and np.all(loads <= record.upper)
    assert set(result.train_metrics_clientapp) == {1, 2}
    m = result.train_metrics_clientapp[2]
    for key in ("accuracy", "utilization-cv", "plan-load-cv", "solve-time", "num-failures"):
        assert key in m
    assert m["num-failures"] == 0 and m["num-replies"] == len(CAPACITY)
    # accuracy is the sample-weighted mean of the node metrics
    w = np.array([10.0 * (i + 1) for i in CAPACITY])
    np.testing.assert_allclose(m["accuracy"], np.sum(w * 0.1 * (w / 10)) / w.sum())


def test_one_round_matches_hand_computed_aggregate() -> None:
    strategy = make_strategy()
    result = strategy.start(ScriptedGrid(), initial_arrays(), num_rounds=1)
    record = strategy.history[1]
    shared, experts = split_state(arrayrecord_to_numpy(result.arrays))
    n = {c: 10 * (int(c[1:]) + 1) for c in record.plan}
    want_shared = sum(n[c] * (int(c[1:]) + 1) for c in n) / sum(n.values())
    np.testing.assert_allclose(shared["features.w"], want_shared, rtol=1e-6)
    for e in range(E):
        trainers = [c for c, ex in record.plan.items() if e in ex]
        if not trainers:
            np.testing.assert_array_equal(experts[e]["0.w"], 100.0 + e)
            continue
        u = {c: (int(c[1:]) + 1) * (e + 1) for c in trainers}
        want = sum(u[c] * (10.0 * int(c[1:]) + e) for c in trainers) / sum(u.values())
        np.testing.assert_allclose(experts[e]["0.w"], want, rtol=1e-6)


def test_failed_missing_and_malformed_replies_are_dropped() -> None:
    def behaviour(i: int, rnd: int, msg: Message) -> Message | None:
        if rnd == 2 and i == 1:
            raise RuntimeError("boom")
        if rnd == 2 and i == 2:
            return None  # never answers (timeout)
        if rnd == 2 and i == 3:  # sends back an expert it was not given
            reply = node_reply(i, msg)
            ins = decode_train_instruction(msg.content)
            extra = next(e for e in range(E) if e not in ins.expert_ids)
            reply.content["arrays"][f"experts.{extra}.0.w"] = reply.content["arrays"][
                f"experts.{ins.expert_ids[0]}.0.w"]
            return reply
        return node_reply(i, msg)

    strategy = make_strategy()
    grid = ScriptedGrid(behaviour)
    result = strategy.start(grid, initial_arrays(), num_rounds=2)
    r2 = strategy.history[2]
    assert r2.failed == ["c1", "c2", "c3"]
    assert "boom" in r2.dropped["c1"] and "no reply" in r2.dropped["c2"]
    assert "not assigned" in r2.dropped["c3"]
    assert r2.replied == ["c0", "c4"]
    assert set(r2.feedback) == {"c0", "c4"}
    assert result.train_metrics_clientapp[2]["num-failures"] == 3
    # the aggregate uses only c0 and c4: redo it by hand from round 1's result
    before = strategy_after_round_1_arrays()
    shared_b, experts_b = split_state(before)
    shared, experts = split_state(arrayrecord_to_numpy(result.arrays))
    np.testing.assert_allclose(
        shared["features.w"], shared_b["features.w"] + (10 * 1 + 50 * 5) / 60, rtol=1e-6
    )
    for e in range(E):
        trainers = [c for c in ("c0", "c4") if e in r2.plan[c]]
        if not trainers:
            np.testing.assert_array_equal(experts[e]["0.w"], experts_b[e]["0.w"])
        else:
            u = {c: (int(c[1:]) + 1) * (e + 1) for c in trainers}
            want = sum(u[c] * (10.0 * int(c[1:]) + e) for c in trainers) / sum(u.values())
            np.testing.assert_allclose(experts[e]["0.w"], want, rtol=1e-6)
    # the planner saw no feedback from the failed clients; they become dropouts
    strategy.planner.end_round()
    assert [strategy.planner.dropouts(c) for c in ("c0", "c1", "c2", "c3")] == [0, 1, 1, 1]


def strategy_after_round_1_arrays() -> dict[str, np.ndarray]:
    strategy = make_strategy()
    return arrayrecord_to_numpy(strategy.start(ScriptedGrid(), initial_arrays(),
                                               num_rounds=1).arrays)


def test_all_replies_failing_keeps_the_model() -> None:
    def behaviour(i: int, rnd: int, msg: Message) -> Message | None:
        raise RuntimeError("down")

    strategy = make_strategy()
    init = arrayrecord_to_numpy(initial_arrays())
    result = strategy.start(ScriptedGrid(behaviour), initial_arrays(), num_rounds=1)
    after = arrayrecord_to_numpy(result.arrays)
    for k in init:
        np.testing.assert_array_equal(after[k], init[k])
    assert result.train_metrics_clientapp[1]["num-replies"] == 0


def test_checkpoint_resume_equals_uninterrupted(tmp_path: Path) -> None:
    full = make_strategy()
    res_full = full.start(ScriptedGrid(), initial_arrays(), num_rounds=3)

    first = make_strategy(checkpoint_dir=tmp_path)
    first.start(ScriptedGrid(), initial_arrays(), num_rounds=2)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.server_round == 2 and len(ckpt.history) == 2

    resumed = make_strategy(checkpoint_dir=tmp_path)  # a fresh planner, replaced on resume
    res = resumed.start(ScriptedGrid(), initial_arrays(), num_rounds=3)
    assert sorted(resumed.history) == [3]
    assert resumed.history[3].plan == full.history[3].plan
    a, b = arrayrecord_to_numpy(res.arrays), arrayrecord_to_numpy(res_full.arrays)
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)
    assert load_checkpoint(tmp_path).server_round == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays-3.npz", "planner-3.json",
                                                          "state.json"]


def test_checkpoint_of_a_finished_run_trains_no_more(tmp_path: Path) -> None:
    make_strategy(checkpoint_dir=tmp_path).start(ScriptedGrid(), initial_arrays(), num_rounds=2)
    again = make_strategy(checkpoint_dir=tmp_path)
    grid = ScriptedGrid()
    again.start(grid, initial_arrays(), num_rounds=2)
    assert grid.sent == [] and again.history == {}


def test_sampler_and_node_config_hooks() -> None:
    grid = ScriptedGrid()
    strategy = make_strategy(
        sampler=lambda rnd, ids: [ids[rnd], ids[rnd + 1]],
        node_config_fn=lambda rnd, ids: {c: {"train-seed": 100 * rnd + k}
                                         for k, c in enumerate(ids)},
    )
    strategy.start(grid, initial_arrays(), num_rounds=2)
    assert strategy.history[1].sampled == ["c1", "c2"]
    assert strategy.history[2].sampled == ["c2", "c3"]
    seeds = [decode_train_instruction(m.content).config["train-seed"] for m in grid.sent
             if m.metadata.message_type == MessageType.TRAIN]
    assert seeds == [100, 101, 200, 201]


def test_bad_sampler_is_rejected() -> None:
    strategy = make_strategy(sampler=lambda rnd, ids: ["nobody"])
    with pytest.raises(ValueError, match="unknown or repeated"):
        strategy.start(ScriptedGrid(), initial_arrays(), num_rounds=1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"fraction_train": 0.0}, "fraction_train"), ({"fraction_evaluate": 2.0}, "fraction_eval"),
     ({"min_train_nodes": 0}, "min_train_nodes")],
)
def test_invalid_arguments(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FlexMoEStrategy(planner=Planner(num_experts=E), **kw)


# ------------------------------------------------------------ lying and broken replies

LIAR = 2  # node index whose reply is tampered with in the tests below


def _tamper(fn: Callable[[Message], None]) -> Callable[[int, int, Message], Message | None]:
    def behaviour(i: int, rnd: int, msg: Message) -> Message | None:
        reply = node_reply(i, msg)
        if i == LIAR:
            fn(reply)
        return reply
    return behaviour


def _set_array(name: str | None, value: Callable[[np.ndarray], np.ndarray]) -> Callable[
        [Message], None]:
    def fn(reply: Message) -> None:
        from flwr.app import Array

        rec = reply.content["arrays"]
        key = name or next(k for k in rec if k.startswith("experts."))
        rec[key] = Array(np.ascontiguousarray(value(rec[key].numpy())))
    return fn


def _del_array(reply: Message) -> None:
    del reply.content["arrays"]["features.w"]


def _add_array(name: str) -> Callable[[Message], None]:
    def fn(reply: Message) -> None:
        from flwr.app import Array

        reply.content["arrays"][name] = Array(np.zeros(2, dtype=np.float32))
    return fn


def _metric(key: str, value: Any) -> Callable[[Message], None]:
    def fn(reply: Message) -> None:
        reply.content["metrics"][key] = value
    return fn


def _counts(value: float) -> Callable[[Message], None]:
    def fn(reply: Message) -> None:
        fb = reply.content["feedback"]
        fb["counts"] = [value] * len(list(fb["experts"]))
    return fn


def _error(reply: Message) -> None:
    raise RuntimeError("node unavailable")


def _weights(value: Callable[[list[int]], dict[int, float]]) -> Callable[[Message], None]:
    """Attach ``expert-weights`` computed from the experts the reply trains."""
    def fn(reply: Message) -> None:
        from flwr.app import MetricRecord

        trained = ExpertLayout().expert_ids(arrayrecord_to_numpy(reply.content["arrays"]))
        w = value(trained)
        reply.content["expert-weights"] = MetricRecord(
            {"experts": list(w), "weights": [float(v) for v in w.values()]})
    return fn


def _round1_expected(weights: dict[str, float], usage: dict[tuple[str, int], float],
                     plan: dict[str, tuple[int, ...]]) -> tuple[float, dict[int, float]]:
    """Round 1 aggregate by hand: client ci sends shared i+1 and expert value 10 i + e."""
    shared = sum(w * (int(c[1:]) + 1) for c, w in weights.items()) / sum(weights.values())
    experts = {}
    for e in range(E):
        tr = [c for c in weights if e in plan[c] and usage[(c, e)] > 0]
        if tr:
            experts[e] = (sum(usage[(c, e)] * (10.0 * int(c[1:]) + e) for c in tr)
                          / sum(usage[(c, e)] for c in tr))
        else:
            experts[e] = 100.0 + e
    return shared, experts


def _honest(plan: dict[str, tuple[int, ...]], skip: str | None = None) -> tuple[
        dict[str, float], dict[tuple[str, int], float]]:
    weights = {c: 10.0 * (int(c[1:]) + 1) for c in plan if c != skip}
    usage = {(c, e): (int(c[1:]) + 1) * (e + 1.0) for c in weights for e in plan[c]}
    return weights, usage


def _check_round1(result: Any, want: tuple[float, dict[int, float]]) -> None:
    shared, experts = split_state(arrayrecord_to_numpy(result.arrays))
    np.testing.assert_allclose(shared["features.w"], want[0], rtol=1e-6)
    for e, v in want[1].items():
        np.testing.assert_allclose(experts[e]["0.w"], v, rtol=1e-6)
        assert np.all(np.isfinite(experts[e]["0.w"]))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_set_array("features.w", lambda a: a * np.nan), "non-finite"),
        (_set_array(None, lambda a: a + np.inf), "non-finite"),
        (_set_array("features.w", lambda a: np.zeros(5, dtype=np.float32)), "shape"),
        (_set_array("features.w", lambda a: np.float32(3.0).reshape(())), "shape"),
        (_set_array("features.w", lambda a: a.astype(np.float64)), "dtype"),
        (_del_array, "missing"),
        (_add_array("features.extra"), "unexpected"),
        (_add_array("router.weight"), "local parameter"),
        (_metric("num-examples", float("inf")), "num-examples"),
        (_metric("num-examples", float("nan")), "num-examples"),
        (_metric("accuracy", float("nan")), "accuracy"),
        (_counts(float("inf")), "feedback is invalid"),
        (_counts(-5.0), "feedback is invalid"),
        (_weights(lambda ex: dict.fromkeys(ex, float("nan"))), "must be finite and >= 0"),
        (_weights(lambda ex: dict.fromkeys(ex, -1.0)), "must be finite and >= 0"),
        (_weights(lambda ex: dict.fromkeys(ex[1:], 1.0)), "`expert-weights` name experts"),
        (_weights(lambda ex: {**dict.fromkeys(ex, 1.0), E: 1.0}), "`expert-weights` name experts"),
        (_error, "node unavailable"),
    ],
)
def test_a_broken_reply_is_dropped_and_the_honest_ones_aggregated(
    tamper: Callable[[Message], None], reason: str, caplog: Any
) -> None:
    strategy = make_strategy()
    with caplog.at_level("WARNING", logger="flwr"):
        result = strategy.start(ScriptedGrid(_tamper(tamper)), initial_arrays(), num_rounds=1)
    record = strategy.history[1]
    liar = f"c{LIAR}"
    assert record.failed == [liar] and reason in record.dropped[liar]
    assert record.replied == [c for c in record.sampled if c != liar]
    assert liar not in record.feedback
    assert result.train_metrics_clientapp[1]["num-failures"] == 1
    _check_round1(result, _round1_expected(*_honest(record.plan, skip=liar), record.plan))
    logged = [r.getMessage() for r in caplog.records if liar in r.getMessage()]
    assert any(f"node {NODE_IDS[LIAR]} (client {liar})" in m and reason in m for m in logged)


def test_huge_usage_counts_are_capped_at_the_claimed_examples(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = make_strategy()
    with caplog.at_level("WARNING", logger="flwr"):
        result = strategy.start(ScriptedGrid(_tamper(_counts(1e9))), initial_arrays(),
                                num_rounds=1)
    record = strategy.history[1]
    liar = f"c{LIAR}"
    assert record.failed == [] and set(record.feedback[liar].counts) == {30}
    weights, usage = _honest(record.plan)
    usage.update({(liar, e): 30.0 for e in record.plan[liar]})  # capped at its 30 examples
    _check_round1(result, _round1_expected(weights, usage, record.plan))
    capped = [r.getMessage() for r in caplog.records if "per-expert claims capped" in r.getMessage()]
    assert len(capped) == 1 and f"(client {liar})" in capped[0]
    assert f"count of expert {record.plan[liar][0]} 1000000000 -> 30" in capped[0]


def test_expert_weights_replace_counts_as_the_expert_weights() -> None:
    """Every node sends weights E - e (counts are (i + 1)(e + 1)): experts follow them."""
    strategy = make_strategy()
    honest = _weights(lambda ex: {e: float(E - e) for e in ex})

    def behaviour(i: int, rnd: int, msg: Message) -> Message:
        reply = node_reply(i, msg)
        honest(reply)
        return reply

    result = strategy.start(ScriptedGrid(behaviour), initial_arrays(), num_rounds=1)
    record = strategy.history[1]
    assert record.failed == []
    weights, counts = _honest(record.plan)
    usage = {(c, e): float(E - e) for (c, e) in counts}
    assert usage != counts
    _check_round1(result, _round1_expected(weights, usage, record.plan))
    # the planner still gets the feedback counts
    assert all(record.feedback[c].counts == tuple(int(counts[(c, e)]) for e in record.plan[c])
               for c in record.plan)


@pytest.mark.parametrize("declared", [None, 20])
def test_huge_expert_weights_are_bounded_like_counts(declared: int | None) -> None:
    DECLARED.clear()
    if declared is not None:
        DECLARED[LIAR] = {"num-examples": declared}
    try:
        strategy = make_strategy()
        liar_weights = _tamper(_weights(lambda ex: dict.fromkeys(ex, 1e9)))
        result = strategy.start(ScriptedGrid(liar_weights), initial_arrays(), num_rounds=1)
    finally:
        DECLARED.clear()
    record = strategy.history[1]
    liar = f"c{LIAR}"
    cap = 30.0 if declared is None else 20.0  # its claimed 30 examples, or its declared 20
    assert record.failed == [] and record.weights[liar] == (30, cap)
    weights, usage = _honest(record.plan)
    weights[liar] = cap
    usage.update({(liar, e): cap for e in record.plan[liar]})
    _check_round1(result, _round1_expected(weights, usage, record.plan))


@pytest.mark.parametrize("declared", [None, 30])
def test_huge_num_examples_is_capped(declared: int | None) -> None:
    DECLARED.clear()
    if declared is not None:
        DECLARED[LIAR] = {"num-examples": declared}
    try:
        strategy = make_strategy()
        result = strategy.start(ScriptedGrid(_tamper(_metric("num-examples", 1e9))),
                                initial_arrays(), num_rounds=1)
    finally:
        DECLARED.clear()
    record = strategy.history[1]
    liar = f"c{LIAR}"
    # claims 10, 20, 1e9, 40, 50: the median of the claims is 40, so at most 10 x 40
    cap = 400.0 if declared is None else 30.0
    assert record.weights[liar] == (10**9, cap)
    weights, usage = _honest(record.plan)
    weights[liar] = cap
    _check_round1(result, _round1_expected(weights, usage, record.plan))


@pytest.mark.parametrize("method", ["median", "trimmed-mean"])
def test_robust_aggregation_resists_a_bounded_liar(method: str) -> None:
    """Large but finite poisoned values pass every check; median / trimmed mean hold."""
    big = _set_array("features.w", lambda a: np.full_like(a, 1e6))
    strategy = make_strategy(aggregation=method, trim=0.2)
    result = strategy.start(ScriptedGrid(_tamper(big)), initial_arrays(), num_rounds=1)
    shared, _ = split_state(arrayrecord_to_numpy(result.arrays))
    assert np.all(np.abs(shared["features.w"]) <= 5.0)  # honest values are 1 .. 5
    mean = make_strategy().start(ScriptedGrid(_tamper(big)), initial_arrays(), num_rounds=1)
    assert np.all(split_state(arrayrecord_to_numpy(mean.arrays))[0]["features.w"] > 1e4)


def test_bad_profiles_are_logged_not_fatal() -> None:
    class BadProfiles(ScriptedGrid):
        def send_and_receive(self, messages: Iterable[Message], *,
                             timeout: float | None = None) -> Iterable[Message]:
            out = list(super().send_and_receive(messages, timeout=timeout))
            for m in out:
                if m.metadata.src_node_id == NODE_IDS[0] and PROFILE_KEY in m.content:
                    m.content[PROFILE_KEY]["capacity"] = -1
            return out

    strategy = make_strategy(min_train_nodes=1)
    strategy.start(BadProfiles(), initial_arrays(), num_rounds=1)
    assert "c0" not in strategy.history[1].sampled and len(strategy.history[1].sampled) == 4


# ------------------------------------------------------------ a user's two-layer model

USER = ExpertLayout(expert=r"^blocks\.\d+\.experts\.(\d+)\.", local=r"^blocks\.\d+\.gate\.")


def user_arrays() -> dict[str, np.ndarray]:
    state = {"embed.w": np.zeros(2, dtype=np.float32)}
    for b in range(2):
        state[f"blocks.{b}.gate.w"] = np.full(E, 7.0, dtype=np.float32)
        for e in range(E):
            state[f"blocks.{b}.experts.{e}.w"] = np.full(3, 100.0 * (b + 1) + e, dtype=np.float32)
    return state


def user_reply(i: int, rnd: int, msg: Message) -> Message:
    ins = decode_train_instruction(msg.content)
    model = {**user_arrays(), **ins.arrays}  # the node's full model, gates included
    for k in ins.arrays:
        role = USER.role(k)
        model[k] = ins.arrays[k] + (i + 1) if role == "shared" else np.full_like(
            ins.arrays[k], 10.0 * i + int(role) + 1000 * int(k.split(".")[1]))
    fb = Feedback(experts=list(ins.expert_ids), counts=[i + 1 for _ in ins.expert_ids])
    return Message(encode_train_reply(model, num_examples=10, feedback=fb, keys=ins.arrays),
                   reply_to=msg)


def test_two_layer_user_model_runs_under_its_layout(tmp_path: Path) -> None:
    grid = ScriptedGrid(user_reply)
    planner = Planner(num_experts=E, strategy="flex", tolerance=0.1, seed=0)
    strategy = FlexMoEStrategy(planner=planner, layout=USER, min_available_nodes=len(CAPACITY),
                               fraction_evaluate=0.0, settle_time=0.0,
                               results_path=tmp_path / "rounds.jsonl",
                               final_model_path=tmp_path / "model.npz")
    result = strategy.start(grid, numpy_to_arrayrecord(user_arrays()), num_rounds=2)
    sent = [decode_train_instruction(m.content) for m in grid.sent
            if m.metadata.message_type == MessageType.TRAIN]
    for ins in sent:
        assert not any("gate" in k for k in ins.arrays)  # gates never leave a client
        for e in ins.expert_ids:  # an expert travels with both of its layers
            assert {f"blocks.0.experts.{e}.w", f"blocks.1.experts.{e}.w"} <= set(ins.arrays)
        assert USER.expert_ids(ins.arrays) == list(ins.expert_ids)
    final = arrayrecord_to_numpy(result.arrays)
    assert not any("gate" in k for k in final)
    rec = strategy.history[2]
    assert rec.failed == []
    for e in range(E):
        tr = [c for c in rec.plan if e in rec.plan[c]]
        for b in range(2):
            want = (sum((int(c[1:]) + 1) * (10.0 * int(c[1:]) + e + 1000 * b) for c in tr)
                    / sum(int(c[1:]) + 1 for c in tr)) if tr else None
            if want is not None:
                np.testing.assert_allclose(final[f"blocks.{b}.experts.{e}.w"], want, rtol=1e-6)
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    import json

    assert [json.loads(x)["server_round"] for x in lines] == [1, 2]
    with np.load(tmp_path / "model.npz") as saved:
        assert sorted(saved.files) == sorted(final)
        np.testing.assert_array_equal(saved["embed.w"], final["embed.w"])


def test_model_without_experts_under_the_layout_is_a_clear_error() -> None:
    from flexassign.integrations.flower import LayoutError

    strategy = make_strategy()  # default layout: experts.<e>.*
    with pytest.raises(LayoutError, match="`layout` finds 0 experts"):
        strategy.start(ScriptedGrid(), numpy_to_arrayrecord(user_arrays()), num_rounds=1)


def test_wait_timeout_logs_progress_and_fails_clearly(caplog: Any) -> None:
    strategy = make_strategy(wait_timeout=1.0, progress_interval=0.3)
    strategy.min_available_nodes = len(CAPACITY) + 1
    with caplog.at_level("INFO", logger="flwr"), pytest.raises(TimeoutError,
                                                                match="`wait-timeout`"):
        strategy.start(ScriptedGrid(), initial_arrays(), num_rounds=1)
    waits = [r for r in caplog.records if "Waiting for nodes" in r.getMessage()]
    assert len(waits) >= 2 and "5 connected (minimum required: 6" in waits[0].getMessage()


def test_metrics_are_logged_rounded(caplog: Any) -> None:
    with caplog.at_level("INFO", logger="flwr"):
        make_strategy().start(ScriptedGrid(), initial_arrays(), num_rounds=1)
    line = next(r.getMessage() for r in caplog.records if "Train MetricRecord" in r.getMessage())
    assert "accuracy: 0.3667" in line  # 0.36666... rounded to 4 significant digits


# ------------------------------------------------------ the harness's own Flower app


def test_harness_server_app_writes_results_model_and_checkpoints(tmp_path: Path) -> None:
    """run_server: harness model, harness sampler, JSON-lines results, final model,
    checkpoint directory, and a `planner-options` fitness object as the harness reads it."""
    pytest.importorskip("torch")
    import json

    from flwr.app import Context

    from fl_harness.flower import run_server

    seen: dict[str, Any] = {}
    run_config = {
        "dataset": "synthetic", "num-samples": 200, "num-experts": E, "hidden": 8,
        "expert-hidden": 8, "capacity-choices": "1,2", "client-fraction": 0.6,
        "num-server-rounds": 2, "min-available-nodes": len(CAPACITY),
        "fraction-evaluate": 0.0, "checkpoint-dir": str(tmp_path / "ckpt"),
        "results-path": str(tmp_path / "out" / "results.jsonl"),
        "final-model-path": str(tmp_path / "out" / "model.npz"),
        "planner-options": '{"fitness": {"beta": 0.5}}', "wait-timeout": 30.0,
    }
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    result = run_server(ScriptedGrid(), context, run_config=run_config,
                        on_strategy=lambda s: seen.setdefault("strategy", s))
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    strategy = seen["strategy"]
    assert strategy.wait_timeout == 30.0 and strategy.planner.config.fitness.beta == 0.5
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [h["server_round"] for h in rows] == [1, 2]
    assert all(len(h["sampled"]) == 3 for h in rows)  # round(0.6 * 5)
    assert set(rows[0]["metrics"]) >= {"accuracy", "utilization-cv", "solve-time"}
    with np.load(tmp_path / "out" / "model.npz") as saved:
        assert sorted(saved.files) == sorted(arrayrecord_to_numpy(result.arrays))
    assert load_checkpoint(tmp_path / "ckpt").server_round == 2


def test_harness_server_rejects_full_strategy() -> None:
    pytest.importorskip("torch")
    from fl_harness.flower import build_strategy

    with pytest.raises(ValueError, match="no-planner reference"):
        build_strategy({"strategy": "full", "dataset": "synthetic", "num-samples": 100})


def test_unknown_run_config_key_is_an_error() -> None:
    pytest.importorskip("torch")
    from fl_harness.flower.harness import experiment_config

    with pytest.raises(ValueError, match="unknown run-config key `local-epoch`"):
        experiment_config({"local-epoch": 2}, num_clients=2)


def test_failed_server_app_logs_one_clear_line(caplog: Any) -> None:
    from flexassign.integrations.flower.app import run_logged

    def main() -> None:
        raise TimeoutError("only 1 of the required 2 nodes connected")

    with caplog.at_level("ERROR", logger="flwr"), pytest.raises(TimeoutError):
        run_logged(main)
    assert any("FLEX-MoE ServerApp failed: TimeoutError: only 1 of the required 2"
               in r.getMessage() for r in caplog.records)


def test_run_config_to_planner_and_strategy_options() -> None:
    from flexassign.errors import InvalidProblemError
    from flexassign.integrations.flower.app import make_planner, strategy_options

    planner = make_planner({"num-experts": 3, "strategy": "greedy", "seed": 4,
                            "planner-options": '{"fitness": {"beta": 0.5}, "usage_decay": 0.2}'})
    assert planner.num_experts == 3 and planner.config.strategy == "greedy"
    assert planner.config.fitness.beta == 0.5 and planner.config.usage_decay == 0.2
    assert strategy_options({"max-weight-ratio": 0, "min-available-nodes": 3,
                             "checkpoint-dir": ""}) == {"max_weight_ratio": None,
                                                        "min_available_nodes": 3}
    with pytest.raises(InvalidProblemError, match="`num-experts`"):
        make_planner({})
    with pytest.raises(InvalidProblemError, match="`planner-options`"):
        make_planner({"num-experts": 2, "planner-options": "{not json"})
    with pytest.raises(InvalidProblemError, match="`planner-options`"):
        make_planner({"num-experts": 2, "planner-options": '{"nope": 1}'})
    with pytest.raises(InvalidProblemError, match="`wait-timeout`"):
        strategy_options({"wait-timeout": "soon"})


def test_flower_error_reply_from_the_superlink_names_the_lost_node(caplog: Any) -> None:
    """Flower answers for an unreachable node itself (source: not that node); the reply is
    matched to the node through `reply_to_message_id` and the node is named."""

    class LosingGrid(ScriptedGrid):
        def send_and_receive(self, messages: Iterable[Message], *,
                             timeout: float | None = None) -> Iterable[Message]:
            messages = list(messages)
            for m in messages:  # as Flower's grids do when pushing
                m.metadata.__dict__["_message_id"] = m.object_id
            out = list(super().send_and_receive(messages, timeout=timeout))
            lost = next((m for m in messages if m.metadata.message_type == MessageType.TRAIN
                         and m.metadata.dst_node_id == NODE_IDS[LIAR]), None)
            if lost is None:
                return out
            out = [r for r in out if r.metadata.src_node_id != NODE_IDS[LIAR]]
            err = Message(Error(code=3, reason="node unavailable"), reply_to=lost)
            err.metadata.__dict__["_src_node_id"] = 1  # made by the SuperLink
            return [*out, err]

    strategy = make_strategy()
    with caplog.at_level("WARNING", logger="flwr"):
        result = strategy.start(LosingGrid(), initial_arrays(), num_rounds=1)
    record = strategy.history[1]
    assert record.failed == [f"c{LIAR}"]
    assert record.dropped[f"c{LIAR}"] == "Flower error 3: node unavailable"
    assert result.train_metrics_clientapp[1]["num-failures"] == 1
    assert any(f"node {NODE_IDS[LIAR]} (client c{LIAR}): Flower error 3: node unavailable"
               in r.getMessage() for r in caplog.records)
