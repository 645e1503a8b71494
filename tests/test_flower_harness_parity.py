"""The harness and its Flower app aggregate a round identically (issue 11).

One round of the same configuration runs twice: through the harness
(:func:`fl_harness.experiment.run_experiment`) and through the harness's Flower
ServerApp on an in-process Grid whose nodes run the harness's own ClientApp handlers
(no Ray). With the default ``feedback="mixture"`` the feedback counts are top-1
counts while the harness weights each expert by its top-k usage, so the two paths
agree only if the Flower replies carry the usage as ``expert-weights``.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")

from _flower_grid import InProcessGrid, task_identity  # noqa: F401 - an autouse fixture
from flwr.app import Context, Message, MessageType, RecordDict

from fl_harness.flower.client import handle_evaluate, handle_query, handle_train
from fl_harness.flower.harness import experiment_config
from fl_harness.flower.server import run_server
from flexassign.integrations.flower import ExpertLayout
from flexassign.integrations.flower.messages import arrayrecord_to_numpy, decode_train_reply

pytestmark = pytest.mark.flower

NUM_NODES = 4
RUN_CONFIG: dict[str, Any] = {
    "dataset": "synthetic",
    "num-samples": 400,
    "partition": "iid",
    "capacity-choices": "2,3",
    "num-experts": 4,
    "top-k": 2,
    "hidden": 16,
    "expert-hidden": 16,
    "local-epochs": 1,
    "client-fraction": 1.0,
    "tolerance": 0.1,
    "seed": 3,
    "num-server-rounds": 1,
    "min-available-nodes": NUM_NODES,
    "fraction-evaluate": 0.0,
    "feedback": "mixture",
}


class HarnessNodes(InProcessGrid):
    """Nodes running the harness ClientApp's handlers, each with its own Context."""

    def __init__(self) -> None:
        super().__init__(range(101, 101 + NUM_NODES))
        self.contexts = {
            n: Context(run_id=1, node_id=n, state=RecordDict(), run_config={},
                       node_config={"partition-id": i, "num-partitions": NUM_NODES})
            for i, n in enumerate(self.node_ids)
        }
        self.replies: list[Message] = []

    def reply(self, msg: Message) -> Message | None:
        ctx = self.contexts[msg.metadata.dst_node_id]
        handler = {MessageType.QUERY: handle_query, MessageType.TRAIN: handle_train,
                   MessageType.EVALUATE: handle_evaluate}[msg.metadata.message_type]
        out = handler(msg, ctx, run_config=RUN_CONFIG)
        if msg.metadata.message_type == MessageType.TRAIN:
            self.replies.append(out)
        return out


def _flower_round() -> tuple[dict[str, np.ndarray], list[Message]]:
    grid = HarnessNodes()
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    result = run_server(grid, ctx, run_config=RUN_CONFIG)
    return arrayrecord_to_numpy(result.arrays), grid.replies


def _harness_round(monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """The harness's global model right after its round-1 aggregation."""
    import fl_harness.experiment as experiment

    captured: dict[str, np.ndarray] = {}
    original = experiment._aggregate

    def aggregate(model: Any, updates: Any) -> None:
        original(model, updates)
        captured.update({k: v.detach().cpu().numpy().copy()
                         for k, v in model.state_dict().items()})

    monkeypatch.setattr(experiment, "_aggregate", aggregate)
    cfg = experiment_config(RUN_CONFIG, num_clients=NUM_NODES).replace(rounds=1)
    assert cfg.local_training.feedback == "mixture"
    experiment.run_experiment(cfg)
    return captured


def test_flower_aggregates_the_round_exactly_as_the_harness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flower, replies = _flower_round()
    harness = _harness_round(monkeypatch)
    decoded = [decode_train_reply(m.content) for m in replies]
    assert len(decoded) == NUM_NODES
    # the case this test is about: top-1 feedback counts differ from top-k usage
    assert any(r.expert_weights != {e: float(c) for e, c in
                                    zip(r.feedback.experts, r.feedback.counts, strict=True)}
               for r in decoded)
    shared, experts = ExpertLayout().split(flower)
    assert experts, "no expert in the global model"
    for k in [*shared, *(name for p in experts.values() for name in p)]:
        np.testing.assert_allclose(flower[k], harness[k], rtol=1e-5, atol=1e-6, err_msg=k)
