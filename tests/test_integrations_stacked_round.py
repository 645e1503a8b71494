"""FlexMoEStrategy on a model whose experts are stacked tensors (Mixtral's naming).

An in-process Grid (no Ray) with scripted nodes: every node receives exactly the
shared parameters plus the blocks of its planned experts (names and bytes), the
aggregate is written back into the stacked tensors as hand-computed, blocks of
experts nobody trained stay as they were, and bad replies (a block of the wrong
shape or dtype, a block of an expert the node was not sent, a name the layout does
not know) are dropped, logged with node, client and reason, and counted in
``num-failures`` while the round goes on.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from _flower_grid import InProcessGrid, task_identity  # noqa: F401 - an autouse fixture
from flwr.app import Message, MessageType, RecordDict

from flexassign.alignment import Feedback, FitnessConfig, Planner
from flexassign.integrations.flower import FlexMoEStrategy
from flexassign.integrations.flower.messages import (
    PROFILE_KEY,
    arrayrecord_to_numpy,
    decode_train_instruction,
    encode_profile,
    encode_train_reply,
    numpy_to_arrayrecord,
)
from flexassign.integrations.layout import ExpertLayout, block_name, nbytes

pytestmark = pytest.mark.flower

E = 6
CAPACITY = {0: 2, 1: 1, 2: 2}  # 5 slots for 6 experts: one expert is not trained
NODE_IDS = {i: 500 + 11 * i for i in CAPACITY}
LAYOUT = ExpertLayout(expert=None, local=r"\.mlp\.gate\.",
                      stacked=r"\.mlp\.experts\.(gate_up|down)_proj$")
STACKS = [f"model.layers.{i}.mlp.experts.{p}" for i in range(2)
          for p in ("gate_up_proj", "down_proj")]


def initial_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    state = {"model.embed_tokens.weight": rng.normal(size=(5, 3)).astype(np.float32),
             "model.norm.weight": np.ones(3, dtype=np.float32)}
    for i in range(2):
        p = f"model.layers.{i}.mlp."
        state[p + "gate.weight"] = rng.normal(size=(E, 3)).astype(np.float32)
        state[p + "experts.gate_up_proj"] = rng.normal(size=(E, 4, 3)).astype(np.float32)
        state[p + "experts.down_proj"] = rng.normal(size=(E, 3, 2)).astype(np.float32)
    return state


def honest(i: int, msg: Message) -> Message:
    """Node i: shared <- shared + (i + 1); block of expert e <- 10 i + e; usage (i+1)(e+1)."""
    ins = decode_train_instruction(msg.content)
    arrays = {}
    for k, v in ins.arrays.items():
        r = LAYOUT.role(k)
        arrays[k] = v + (i + 1) if r == "shared" else np.full_like(v, 10.0 * i + int(r))
    fb = Feedback(experts=list(ins.expert_ids),
                  counts=[(i + 1) * (e + 1) for e in ins.expert_ids],
                  loss=[1.0 + 0.1 * i for _ in ins.expert_ids])
    return Message(encode_train_reply(arrays, num_examples=10 * (i + 1), feedback=fb,
                                      metrics={"loss": 1.0}), reply_to=msg)


class Grid(InProcessGrid):
    def __init__(self, behaviour: Callable[[int, Message], Message | None] = honest) -> None:
        super().__init__(NODE_IDS.values())
        self.behaviour = behaviour

    def reply(self, msg: Message) -> Message | None:
        i = {n: i for i, n in NODE_IDS.items()}[msg.metadata.dst_node_id]
        if msg.metadata.message_type == MessageType.QUERY:
            prof = encode_profile({"client-id": f"c{i}", "capacity": CAPACITY[i]})
            return Message(RecordDict({PROFILE_KEY: prof}), reply_to=msg)
        return self.behaviour(i, msg)


def run(grid: Grid, caplog: Any = None) -> tuple[FlexMoEStrategy, Any]:
    planner = Planner(num_experts=E, strategy="flex", tolerance=0.1, seed=0,
                      fitness=FitnessConfig(signal="loss"))
    strategy = FlexMoEStrategy(planner=planner, layout=LAYOUT, min_available_nodes=3,
                               fraction_evaluate=0.0, settle_time=0.0)
    result = strategy.start(grid, numpy_to_arrayrecord(initial_state()), num_rounds=1)
    return strategy, result


def test_each_node_receives_exactly_shared_plus_its_blocks() -> None:
    grid = Grid()
    strategy, _ = run(grid)
    record = strategy.history[1]
    state = LAYOUT.public(initial_state())
    shared_bytes = state["model.embed_tokens.weight"].nbytes + state["model.norm.weight"].nbytes
    block_bytes = sum(state[k].nbytes for k in STACKS) // E  # one expert across the stacks
    train = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(train) == len(CAPACITY)
    for msg in train:
        ins = decode_train_instruction(msg.content)
        c = f"c{next(i for i, n in NODE_IDS.items() if n == msg.metadata.dst_node_id)}"
        held = list(record.plan[c])
        assert list(ins.expert_ids) == held and len(held) == CAPACITY[int(c[1:])]
        assert set(ins.arrays) == {"model.embed_tokens.weight", "model.norm.weight"} | {
            block_name(k, e) for k in STACKS for e in held}
        assert nbytes(ins.arrays) == shared_bytes + len(held) * block_bytes
        for k in STACKS:
            for e in held:
                np.testing.assert_array_equal(ins.arrays[block_name(k, e)], state[k][e:e + 1])


def _expected(plan: dict[str, tuple[int, ...]], replied: list[str]) -> dict[str, np.ndarray]:
    """The round's aggregate by hand, from the scripted nodes' updates."""
    state = LAYOUT.public(initial_state())
    n = {c: 10 * (int(c[1:]) + 1) for c in replied}
    want = {k: v.copy() for k, v in state.items()}
    for k in ("model.embed_tokens.weight", "model.norm.weight"):
        want[k] = sum(n[c] * (state[k] + int(c[1:]) + 1) for c in replied) / sum(n.values())
    for e in range(E):
        trainers = [c for c in replied if e in plan[c]]
        if not trainers:
            continue
        u = {c: (int(c[1:]) + 1) * (e + 1) for c in trainers}
        value = sum(u[c] * (10.0 * int(c[1:]) + e) for c in trainers) / sum(u.values())
        for k in STACKS:
            want[k][e] = value
    return want


def test_aggregated_blocks_are_written_back_and_untrained_blocks_kept() -> None:
    strategy, result = run(Grid())
    record = strategy.history[1]
    got = arrayrecord_to_numpy(result.arrays)
    state = LAYOUT.public(initial_state())
    assert list(got) == list(state)
    untrained = [e for e in range(E) if not any(e in p for p in record.plan.values())]
    assert len(untrained) == 1
    for k in STACKS:
        assert got[k].shape == state[k].shape and got[k].dtype == state[k].dtype
        np.testing.assert_array_equal(got[k][untrained[0]], state[k][untrained[0]])
    want = _expected(record.plan, record.replied)
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)
    assert result.train_metrics_clientapp[1]["num-failures"] == 0
    assert "utilization-cv" in result.train_metrics_clientapp[1]


def _tampered(tamper: Callable[[dict[str, Any], list[int]], None]) -> Grid:
    def behaviour(i: int, msg: Message) -> Message | None:
        reply = honest(i, msg)
        if i != 2:
            return reply
        arrays = arrayrecord_to_numpy(reply.content["arrays"])
        tamper(arrays, list(decode_train_instruction(msg.content).expert_ids))
        reply.content["arrays"] = numpy_to_arrayrecord(arrays)
        return reply

    return Grid(behaviour)


def _not_sent(arrays: dict[str, Any], held: list[int]) -> None:
    other = next(e for e in range(E) if e not in held)
    arrays.update({block_name(k, other): initial_state()[k][other:other + 1] for k in STACKS})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda a, h: a.update({block_name(STACKS[1], h[0]): np.zeros((1, 2, 3), np.float32)}),
         "shape"),
        (lambda a, h: a.update({block_name(STACKS[0], h[0]): np.zeros((1, 4, 3), np.float64)}),
         "dtype"),
        (_not_sent, "not assigned"),
        (lambda a, h: a.update({"model.layers.0.mlp.experts.bias": np.zeros(1, np.float32)}),
         "model.layers.0.mlp.experts.bias"),
        (lambda a, h: a.update({block_name(STACKS[0], E): np.zeros((1, 4, 3), np.float32)}),
         "model.layers.0.mlp.experts.gate_up_proj[6]"),
    ],
    ids=["shape", "dtype", "expert-not-sent", "unknown-name", "block-out-of-range"],
)
def test_bad_replies_are_dropped_logged_and_counted(
    tamper: Callable[[dict[str, Any], list[int]], None], reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="flwr"):
        strategy, result = run(_tampered(tamper))
    record = strategy.history[1]
    assert record.failed == ["c2"] and reason in record.dropped["c2"]
    assert record.replied == ["c0", "c1"]
    assert result.train_metrics_clientapp[1]["num-failures"] == 1
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"node {NODE_IDS[2]} (client c2)" in m and reason in m for m in logged)
    got = arrayrecord_to_numpy(result.arrays)
    want = _expected(record.plan, record.replied)  # the round went on without c2
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_rejected_feedback_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Loss-only feedback under the default accuracy signal: arrays aggregated, feedback
    rejected, counted in ``num-feedback-rejected`` and logged with node and client."""
    planner = Planner(num_experts=E, strategy="flex", tolerance=0.1, seed=0)  # accuracy signal
    strategy = FlexMoEStrategy(planner=planner, layout=LAYOUT, min_available_nodes=3,
                               fraction_evaluate=0.0, settle_time=0.0)
    with caplog.at_level("WARNING", logger="flwr"):
        result = strategy.start(Grid(), numpy_to_arrayrecord(initial_state()), num_rounds=1)
    record = strategy.history[1]
    metrics = result.train_metrics_clientapp[1]
    assert metrics["num-feedback-rejected"] == 3 and metrics["num-failures"] == 0
    assert record.replied == ["c0", "c1", "c2"] and not record.feedback
    assert all("`accuracy` is required" in r for r in record.feedback_rejected.values())
    assert record.to_json()["feedback_rejected"][0][0] == "c0"
    logged = [r.getMessage() for r in caplog.records]
    for i in CAPACITY:
        assert any(f"feedback of node {NODE_IDS[i]} (client c{i})" in m
                   and "`accuracy` is required" in m for m in logged)
    # under the loss signal the same replies are taken
    strategy, result = run(Grid())
    assert result.train_metrics_clientapp[1]["num-feedback-rejected"] == 0
    assert sorted(strategy.history[1].feedback) == ["c0", "c1", "c2"]
