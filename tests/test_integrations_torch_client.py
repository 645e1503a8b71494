"""`flexassign.integrations.torch_client`: strict loading, held-expert routing, feedback.

The routing tests run a tiny Mixtral built from a config (transformers, no download)
where transformers is installed, and a plain ``nn.Linear`` gate everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flexassign.integrations.layout import ExpertLayout, LayoutError, block_name  # noqa: E402
from flexassign.integrations.torch_client import (  # noqa: E402
    expert_feedback,
    load_received,
    restrict_routers,
    trained_arrays,
)

pytestmark = pytest.mark.torch

E = 4
MIXTRAL = ExpertLayout(expert=None, local=r"\.mlp\.gate\.",
                       stacked=r"\.mlp\.experts\.(gate_up|down)_proj$")


def tiny_mixtral(seed: int = 0) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.MixtralConfig(vocab_size=32, hidden_size=16, intermediate_size=8,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=2, num_local_experts=E,
                                     num_experts_per_tok=2)
    return transformers.MixtralForCausalLM(cfg).eval()


class Toy(torch.nn.Module):
    """A stacked-expert layer without transformers: shared, a gate, experts [E, 2, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(3, 3)
        self.mlp = torch.nn.Module()
        self.mlp.gate = torch.nn.Linear(3, E, bias=False)
        self.mlp.experts = torch.nn.Module()
        self.mlp.experts.down_proj = torch.nn.Parameter(torch.randn(E, 2, 3))


TOY = ExpertLayout(expert=None, local=r"^mlp\.gate\.", stacked=r"^mlp\.experts\.down_proj$")


# ------------------------------------------------------------------ loading


def test_load_received_writes_blocks_and_keeps_the_rest() -> None:
    model = Toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arrays = {"shared.weight": np.ones((3, 3), np.float32),
              "shared.bias": np.zeros(3, np.float32),
              block_name("mlp.experts.down_proj", 2): np.full((1, 2, 3), 5.0, np.float32)}
    gate = {"mlp.gate.weight": np.full((E, 3), 0.5, np.float32)}
    load_received(model, arrays, layout=TOY, local=gate)
    after = model.state_dict()
    assert torch.equal(after["shared.weight"], torch.ones(3, 3))
    assert torch.equal(after["mlp.gate.weight"], torch.full((E, 3), 0.5))
    assert torch.equal(after["mlp.experts.down_proj"][2], torch.full((2, 3), 5.0))
    for e in (0, 1, 3):
        assert torch.equal(after["mlp.experts.down_proj"][e], before["mlp.experts.down_proj"][e])
    back = trained_arrays(model, [2], layout=TOY)
    assert sorted(back) == ["mlp.experts.down_proj[2]", "shared.bias", "shared.weight"]
    np.testing.assert_array_equal(back["mlp.experts.down_proj[2]"], 5.0)
    assert all(isinstance(v, np.ndarray) for v in back.values())


@pytest.mark.parametrize(
    ("arrays", "local", "match"),
    [
        ({"shared.w": np.zeros(3, np.float32)}, None,
         r"received `shared.w`, which the model does not have"),
        ({"shared.bias": np.zeros(4, np.float32)}, None,
         r"received `shared.bias` of shape \(4,\); the model's is \(3,\)"),
        ({"mlp.experts.down_proj[1]": np.zeros((1, 3, 2), np.float32)}, None,
         r"`mlp.experts.down_proj\[1\]` of shape \(1, 3, 2\); the model's is \(1, 2, 3\)"),
        ({"mlp.experts.down_proj[9]": np.zeros((1, 2, 3), np.float32)}, None,
         r"`mlp.experts.down_proj\[9\]`.*holds experts 0..3"),
        ({"shared.bias": np.zeros(3, np.float64)}, None, r"`shared.bias` of dtype float64"),
        ({}, {"shared.bias": np.zeros(3, np.float32)},
         r"`local` holds `shared.bias`, which the layout does not mark local"),
    ],
)
def test_load_received_is_strict(arrays: dict[str, Any], local: dict[str, Any] | None,
                                 match: str) -> None:
    model = Toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LayoutError, match=match):
        load_received(model, arrays, layout=TOY, local=local)
    for k, v in model.state_dict().items():  # nothing half-loaded
        assert torch.equal(v, before[k])


def test_load_received_into_mixtral_round_trips_select() -> None:
    server = tiny_mixtral(seed=1)
    client = tiny_mixtral(seed=2)
    sent = {k: v.numpy() for k, v in MIXTRAL.select(server.state_dict(), [1, 3]).items()}
    load_received(client, sent, layout=MIXTRAL)
    back = trained_arrays(client, [1, 3], layout=MIXTRAL)
    assert sorted(back) == sorted(sent)
    for k in sent:
        np.testing.assert_array_equal(back[k], sent[k])
    name = "model.layers.0.mlp.experts.down_proj"
    # experts the node does not hold keep the client's values
    assert torch.equal(client.state_dict()[name][0], tiny_mixtral(seed=2).state_dict()[name][0])


# ------------------------------------------------------------------ routing


def test_linear_gate_is_masked_and_counted() -> None:
    model = Toy()
    x = torch.randn(7, 3)
    with restrict_routers(model, [0, 2], num_experts=E, routers=r"^mlp\.gate$", top_k=1) as r:
        logits = model.mlp.gate(x)
        assert torch.isinf(logits[:, [1, 3]]).all() and torch.isfinite(logits[:, [0, 2]]).all()
        assert int(r.counts.sum()) == 7 and r.counts[1] == r.counts[3] == 0
        assert r.routing().shape == (7, E)
    assert torch.isfinite(model.mlp.gate(x)).all()  # hooks removed


ROUTED = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "dbrx"]


def family(name: str, *, train: bool = False) -> tuple[Any, ExpertLayout, str, int | None]:
    pytest.importorskip("transformers")
    from _moe_families import BUILDERS, LAYOUTS, ROUTERS

    torch.manual_seed(0)
    model = BUILDERS[name]()
    model.train(train)
    return model, LAYOUTS[name], *ROUTERS[name]


@pytest.mark.parametrize("name", ROUTED)
def test_all_experts_held_leaves_the_model_unchanged(name: str) -> None:
    model, _, routers, top_k = family(name)
    ids = torch.randint(0, 32, (2, 6))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with restrict_routers(model, range(E), num_experts=E, routers=routers,
                              top_k=top_k) as r:
            got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert len(r.modules) == 2
    assert int(r.counts.sum()) == 2 * 6 * 2 * 2  # tokens x layers x top-k


@pytest.mark.parametrize("held", [[1], [0, 3]])
@pytest.mark.parametrize("name", ROUTED)
def test_only_held_experts_route_and_train(name: str, held: list[int]) -> None:
    model, layout, routers, top_k = family(name, train=True)
    ids = torch.randint(0, 32, (3, 5))
    with restrict_routers(model, held, num_experts=E, routers=routers, top_k=top_k) as r:
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        routing = r.routing()
    tokens = 3 * 5
    assert routing.shape == (tokens, E)
    other = [e for e in range(E) if e not in held]
    assert int(routing[:, other].sum()) == 0 and r.counts[other].sum() == 0
    # each token reaches min(k, held) held experts in each of the 2 layers
    assert int(r.counts.sum()) == tokens * 2 * min(2, len(held))
    grads = {n: p.grad for n, p in model.named_parameters()}
    _, blocks = layout.split(grads)
    for e in range(E):
        for k, g in blocks[e].items():
            assert g is not None, k
            if e in other:
                assert float(g.abs().sum()) == 0.0, k
    assert any(float(g.abs().sum()) > 0 for e in held for g in blocks[e].values())
    assert math.isfinite(float(out.loss.detach()))


def test_routers_that_match_nothing_or_bad_arguments() -> None:
    model = Toy()
    with pytest.raises(LayoutError, match=r"`routers` pattern '\\\\.nope' matches no module"):
        restrict_routers(model, [0], num_experts=E, routers=r"\.nope")
    with pytest.raises(LayoutError, match=r"`held` must name experts in 0..3; got \[4\]"):
        restrict_routers(model, [4], num_experts=E, routers=r"gate")
    with pytest.raises(LayoutError, match=r"`num_experts` must be an int >= 1"):
        restrict_routers(model, [0], num_experts=0, routers=r"gate")
    with restrict_routers(model, [0], num_experts=E, routers=r"^mlp\.gate$") as r, \
            pytest.raises(LayoutError, match=r"pass `top_k`"):
        model.mlp.gate(torch.randn(2, 3))
    assert not r._handles


def test_a_router_of_another_width_is_an_error() -> None:
    model = Toy()
    with restrict_routers(model, [0], num_experts=3, routers=r"^mlp\.gate$", top_k=1), \
            pytest.raises(LayoutError, match=r"gives 4 logits per token; `num_experts` is 3"):
        model.mlp.gate(torch.randn(2, 3))


# ----------------------------------------------------------------- feedback


def test_expert_feedback_by_hand() -> None:
    routing = torch.tensor([[2, 0, 1], [1, 1, 0], [0, 2, 0], [1, 0, 0]])
    loss = torch.tensor([1.0, 2.0, 3.0, float("nan")])
    correct = torch.tensor([1, 0, 1, 1])
    counts, losses, acc = expert_feedback(routing, loss, [0, 1, 2], token_correct=correct)
    assert counts == [2, 2, 1]
    assert losses == pytest.approx([(2 * 1 + 2) / 3, (2 + 2 * 3) / 3, 1.0])
    assert acc == pytest.approx([2 / 3, 2 / 3, 1.0])
    counts, losses, acc = expert_feedback(torch.zeros(2, 2), torch.ones(2), [1])
    assert counts == [0] and math.isnan(losses[0]) and acc is None
    with pytest.raises(LayoutError, match=r"`routing` has shape \(2, 2\) but `token_loss` has 3"):
        expert_feedback(torch.zeros(2, 2), torch.ones(3), [0])
