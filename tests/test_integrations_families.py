"""One in-process FLEX-MoE round per Hugging Face MoE family (transformers 5.x, tiny, no download).

Each family is built from a config (randomly initialised), described by the layout
line docs/flower.md shows for it (at most 3 lines), and run for one round of
:class:`FlexMoEStrategy` on an in-process Grid with scripted nodes. Checked per family:
every node receives exactly the shared parameters plus its planned experts' parameters
or blocks (names and bytes), never a router; the aggregate equals a hand computation
to 1e-6; experts nobody trained keep their values.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _flower_grid import InProcessGrid, task_identity  # noqa: F401,E402 - an autouse fixture
from _moe_families import BUILDERS, LAYOUTS, E  # noqa: E402
from flwr.app import Message, MessageType, RecordDict  # noqa: E402

from flexassign.alignment import Feedback, FitnessConfig, Planner  # noqa: E402
from flexassign.integrations.flower import FlexMoEStrategy  # noqa: E402
from flexassign.integrations.flower.messages import (  # noqa: E402
    PROFILE_KEY,
    arrayrecord_to_numpy,
    decode_train_instruction,
    encode_profile,
    encode_train_reply,
    numpy_to_arrayrecord,
)
from flexassign.integrations.layout import ExpertLayout, nbytes  # noqa: E402

pytestmark = [pytest.mark.flower, pytest.mark.torch]

CAPACITY = {0: 2, 1: 1, 2: 1}  # the planner gives c0 (0, 1), c1 (0,), c2 (1,): 2 and 3 untrained
NODE_IDS = {i: 300 + 13 * i for i in CAPACITY}

def model_state(family: str) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(0)
    model = BUILDERS[family]()
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


class Grid(InProcessGrid):
    """Node i: shared <- shared + (i + 1); expert e <- 10 i + e; usage (i + 1)(e + 1)."""

    def __init__(self, layout: ExpertLayout) -> None:
        super().__init__(NODE_IDS.values())
        self.layout = layout

    def reply(self, msg: Message) -> Message | None:
        i = {n: i for i, n in NODE_IDS.items()}[msg.metadata.dst_node_id]
        if msg.metadata.message_type == MessageType.QUERY:
            prof = encode_profile({"client-id": f"c{i}", "capacity": CAPACITY[i]})
            return Message(RecordDict({PROFILE_KEY: prof}), reply_to=msg)
        ins = decode_train_instruction(msg.content)
        arrays = {}
        for k, v in ins.arrays.items():
            r = self.layout.role(k)
            arrays[k] = v + (i + 1) if r == "shared" else np.full_like(v, 10.0 * i + int(r))
        fb = Feedback(experts=list(ins.expert_ids),
                      counts=[(i + 1) * (e + 1) for e in ins.expert_ids],
                      loss=[2.0 for _ in ins.expert_ids])
        return Message(encode_train_reply(arrays, num_examples=10 * (i + 1), feedback=fb),
                       reply_to=msg)


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_one_round_per_family(family: str) -> None:
    layout = LAYOUTS[family]
    full = model_state(family)
    assert all(np.issubdtype(v.dtype, np.floating) for v in full.values())
    state = layout.public(full)
    assert len(state) < len(full)  # the routers stay on the nodes
    layout.check_model(state, num_experts=E)
    shared, experts = layout.split(state)
    planner = Planner(num_experts=E, strategy="flex", tolerance=0.1, seed=0,
                      fitness=FitnessConfig(signal="loss"))
    strategy = FlexMoEStrategy(planner=planner, layout=layout, min_available_nodes=3,
                               fraction_evaluate=0.0, settle_time=0.0)
    grid = Grid(layout)
    result = strategy.start(grid, numpy_to_arrayrecord(full), num_rounds=1)
    record = strategy.history[1]
    assert record.plan == {"c0": (0, 1), "c1": (0,), "c2": (1,)}

    # each node: exactly shared + its experts (names and bytes), never a router
    for msg in (m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN):
        ins = decode_train_instruction(msg.content)
        held = list(ins.expert_ids)
        want = dict(shared)
        for e in held:
            want.update(experts[e])
        assert set(ins.arrays) == set(want)
        assert nbytes(ins.arrays) == nbytes(shared) + sum(nbytes(experts[e]) for e in held)
        assert not any(layout.is_local(k) for k in ins.arrays)
        for k, v in ins.arrays.items():
            np.testing.assert_array_equal(v, want[k])

    # the aggregate, by hand
    got = arrayrecord_to_numpy(result.arrays)
    assert list(got) == list(state)
    got_shared, got_experts = layout.split(got)
    n = {0: 10, 1: 20, 2: 30}
    for k, v in shared.items():
        hand = sum(n[i] * (v.astype(np.float64) + i + 1) for i in n) / sum(n.values())
        np.testing.assert_allclose(got_shared[k], hand, rtol=1e-6, atol=1e-6, err_msg=k)
    trainers = {0: [0, 1], 1: [0, 2]}  # expert -> nodes, from the plan above
    for e in range(E):
        for k, v in experts[e].items():
            if e not in trainers:  # nobody trained it: unchanged
                np.testing.assert_array_equal(got_experts[e][k], v, err_msg=k)
                continue
            u = {i: (i + 1) * (e + 1) for i in trainers[e]}
            hand = sum(u[i] * (10.0 * i + e) for i in u) / sum(u.values())
            np.testing.assert_allclose(got_experts[e][k], hand, rtol=1e-6, err_msg=k)
    assert result.train_metrics_clientapp[1]["num-failures"] == 0
    assert result.train_metrics_clientapp[1]["num-feedback-rejected"] == 0


def test_every_family_layout_fits_in_three_lines_of_docs() -> None:
    """docs/flower.md's table shows each family's layout; the test's layouts are the same."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "flower.md").read_text("utf-8")
    for family, layout in LAYOUTS.items():
        for pattern in (layout.expert, layout.stacked, layout.local):
            if pattern is not None:
                assert f'r"{pattern}"' in doc.replace("\\|", "|"), (family, pattern)
