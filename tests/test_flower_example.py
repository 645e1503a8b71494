"""examples/flower's two-block model under FlexMoEStrategy, in process (no Ray).

A Grid hands each message to the example's own ClientApp handlers with one Context
per node, so the app's real query/train/evaluate code runs: experts spanning both
blocks travel together, gates stay in each node's state, the run completes.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _flower_grid import InProcessGrid, task_identity  # noqa: F401 - an autouse fixture
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict

from flexassign.integrations.flower import (
    LOCAL_STATE_KEY,
    FlexMoEStrategy,
    decode_train_instruction,
)
from flexassign.integrations.flower.app import make_planner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "flower"))

from flexmoe_app import client_app  # noqa: E402
from flexmoe_app.task import LAYOUT, make_model  # noqa: E402

pytestmark = pytest.mark.flower

RUN_CONFIG: dict[str, Any] = {
    "num-experts": 4, "top-k": 1, "dim": 16, "alpha": 0.5, "local-epochs": 1,
    "batch-size": 32, "lr": 0.05, "seed": 0, "capacity-choices": "1,2,2",
    "strategy": "flex", "tolerance": 0.2, "num-server-rounds": 2,
}
NODES = {101: 0, 202: 1, 303: 2}


class AppGrid(InProcessGrid):
    """Runs the example's handlers in process, one Context per node."""

    def __init__(self) -> None:
        super().__init__(NODES)
        self.contexts = {n: Context(run_id=1, node_id=n, state=RecordDict(),
                                    node_config={"partition-id": p, "num-partitions": 3},
                                    run_config=dict(RUN_CONFIG)) for n, p in NODES.items()}

    def reply(self, msg: Message) -> Message | None:
        handler = {MessageType.QUERY: client_app.query, MessageType.TRAIN:
                   client_app.train_handler, MessageType.EVALUATE: client_app.evaluate_handler}
        return handler[msg.metadata.message_type](msg, self.contexts[msg.metadata.dst_node_id])


def test_example_app_runs_under_its_layout() -> None:
    grid = AppGrid()
    model = make_model(4, 16, 1, 0)
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    strategy = FlexMoEStrategy(planner=make_planner(RUN_CONFIG), layout=LAYOUT,
                               min_available_nodes=3, settle_time=0.0)
    result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=2)
    assert sorted(strategy.history) == [1, 2]
    for rnd in (1, 2):
        rec = strategy.history[rnd]
        assert rec.failed == [] and len(rec.replied) == 3, rec.dropped
        m = result.train_metrics_clientapp[rnd]
        assert m["num-failures"] == 0 and np.isfinite(m["accuracy"])
        assert np.isfinite(result.evaluate_metrics_clientapp[rnd]["accuracy"])
    assert set(strategy.profiles) == {"client-0", "client-1", "client-2"}
    for msg in grid.sent:
        if msg.metadata.message_type != MessageType.TRAIN:
            continue
        ins = decode_train_instruction(msg.content)
        assert not any(".gate." in k for k in ins.arrays)
        assert {k for k in ins.arrays if ".experts." in k} == {
            f"blocks.{b}.experts.{e}.{p}" for b in (0, 1) for e in ins.expert_ids
            for p in ("0.weight", "0.bias")}
    # gates live only in the nodes' state, each trained locally
    final = {k: np.asarray(v.numpy()) for k, v in result.arrays.items()}
    assert not any(".gate." in k for k in final)
    gates = [grid.contexts[n].state.array_records[LOCAL_STATE_KEY] for n in NODES]
    g0 = [g["blocks.0.gate.weight"].numpy() for g in gates]
    # nodes 1 and 2 hold 2 experts (capacity-choices "1,2,2"), so their gates choose
    assert not np.allclose(g0[1], initial["blocks.0.gate.weight"])
    assert not np.allclose(g0[1], g0[2])
    # experts trained in round 2 moved; shared parameters moved
    assert not np.allclose(final["embed.weight"], initial["embed.weight"])
