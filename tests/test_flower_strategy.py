"""FlexMoEStrategy against an in-process scripted Grid (no Ray, no training).

Each scripted node answers ``query`` with a capacity profile and ``train`` with
deterministic parameter updates and feedback, so every aggregated value can be
computed by hand. Covers planned-expert dispatch, load bounds, failed / missing /
malformed replies, metrics, and checkpoint-resume equivalence.
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
pytest.importorskip("torch")

from flwr.app import Error, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flexassign.alignment import Feedback, Planner
from flexassign.integrations.flower import FlexMoEStrategy
from flexassign.integrations.flower.checkpoint import load_checkpoint
from flexassign.integrations.flower.messages import (
    PROFILE_KEY,
    arrayrecord_to_numpy,
    decode_train_instruction,
    encode_profile,
    encode_train_reply,
    join_state,
    numpy_to_arrayrecord,
    split_state,
)

pytestmark = pytest.mark.flower


@pytest.fixture(autouse=True)
def task_identity() -> Any:
    """Flower's runtime sets the ServerApp's identity before messages are built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved

E = 4
CAPACITY = {0: 1, 1: 2, 2: 2, 3: 3, 4: 1}
NODE_IDS = {i: 1000 + 7 * i for i in CAPACITY}  # Flower node ids are arbitrary ints


def initial_arrays() -> Any:
    state = {"features.w": np.zeros(2, dtype=np.float32)}
    for e in range(E):
        state[f"experts.{e}.0.w"] = np.full(3, 100.0 + e, dtype=np.float32)
    return numpy_to_arrayrecord(state)


def node_reply(i: int, msg: Message) -> Message:
    """Node i: shared <- shared + (i + 1); expert e <- 10 i + e; usage (i + 1)(e + 1)."""
    ins = decode_train_instruction(msg.content)
    shared = {k: v + (i + 1) for k, v in ins.shared.items()}
    experts = {e: {k: np.full_like(v, 10.0 * i + e) for k, v in p.items()}
               for e, p in ins.experts.items()}
    fb = Feedback(experts=list(ins.expert_ids),
                  counts=[(i + 1) * (e + 1) for e in ins.expert_ids],
                  accuracy=[0.1 * (i + 1) for _ in ins.expert_ids],
                  loss=[1.0 for _ in ins.expert_ids])
    content = encode_train_reply(shared=shared, experts=experts, num_examples=10 * (i + 1),
                                 feedback=fb, metrics={"accuracy": 0.1 * (i + 1)})
    return Message(content, reply_to=msg)


class ScriptedGrid(Grid):
    """Delivers messages to Python callables; a handler returning None loses the reply."""

    def __init__(self, behaviour: Callable[[int, int, Message], Message | None] | None = None):
        self.behaviour = behaviour
        self.sent: list[Message] = []

    def set_run(self, run: Any) -> None:  # pragma: no cover - unused
        pass

    @property
    def run(self) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id)  # pragma: no cover - unused

    def get_node_ids(self) -> Iterable[int]:
        return list(NODE_IDS.values())

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError  # pragma: no cover

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError  # pragma: no cover

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        index = {n: i for i, n in NODE_IDS.items()}
        out = []
        for msg in messages:
            self.sent.append(msg)
            i = index[msg.metadata.dst_node_id]
            if msg.metadata.message_type == MessageType.QUERY:
                prof = encode_profile({"client-id": f"c{i}", "capacity": CAPACITY[i]})
                out.append(Message(RecordDict({PROFILE_KEY: prof}), reply_to=msg))
                continue
            if msg.metadata.message_type == MessageType.EVALUATE:
                continue  # no federated evaluation here
            rnd = int(msg.content.config_records["config"]["server-round"])
            try:
                reply = (self.behaviour or (lambda i, r, m: node_reply(i, m)))(i, rnd, msg)
            except Exception as exc:  # what Flower does with a crashing ClientApp
                reply = Message(Error(code=1, reason=str(exc)), reply_to=msg)
            if reply is not None:
                out.append(reply)
        return out


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
        assert sorted(ins.experts) == list(record.plan[client])
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
            reply.content[f"expert.{extra}"] = reply.content[f"expert.{ins.expert_ids[0]}"]
            return reply
        return node_reply(i, msg)

    strategy = make_strategy()
    grid = ScriptedGrid(behaviour)
    result = strategy.start(grid, initial_arrays(), num_rounds=2)
    r2 = strategy.history[2]
    assert r2.failed == ["c1", "c2", "c3"]
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


def test_state_round_trip_through_join() -> None:
    shared, experts = split_state(arrayrecord_to_numpy(initial_arrays()))
    assert set(join_state(shared, experts)) == set(arrayrecord_to_numpy(initial_arrays()))


def test_server_app_wiring_writes_results_and_checkpoints(tmp_path: Path) -> None:
    """run_server: harness model, harness sampler, results JSON, checkpoint directory."""
    import json

    from flwr.app import Context

    from flexassign.integrations.flower import run_server

    run_config = {
        "dataset": "synthetic", "num-samples": 200, "num-experts": E, "hidden": 8,
        "expert-hidden": 8, "capacity-choices": "1,2", "client-fraction": 0.6,
        "num-server-rounds": 2, "min-available-nodes": len(CAPACITY),
        "fraction-evaluate": 0.0, "checkpoint-dir": str(tmp_path / "ckpt"),
        "results-path": str(tmp_path / "out" / "results.json"),
    }
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    result = run_server(ScriptedGrid(), context, run_config=run_config)
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [h["server_round"] for h in data["history"]] == [1, 2]
    assert all(len(h["sampled"]) == 3 for h in data["history"])  # round(0.6 * 5)
    assert set(data["train_metrics"]["1"]) >= {"accuracy", "utilization-cv", "solve-time"}
    assert load_checkpoint(tmp_path / "ckpt").server_round == 2


def test_server_rejects_full_strategy() -> None:
    from flexassign.integrations.flower import build_strategy

    with pytest.raises(ValueError, match="no-planner reference"):
        build_strategy({"strategy": "full", "dataset": "synthetic", "num-samples": 100})


def test_unknown_run_config_key_is_an_error() -> None:
    from flexassign.integrations.flower.harness import experiment_config

    with pytest.raises(ValueError, match="unknown run-config key `local-epoch`"):
        experiment_config({"local-epoch": 2}, num_clients=2)
