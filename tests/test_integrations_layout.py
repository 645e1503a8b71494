"""`flexassign.integrations.layout`: stacked expert tensors, strict merge, reply checks.

Numpy only (torch where installed); no Flower. The strategy-level checks of the same
behaviour (what a node receives, what is written back) are in
``tests/test_integrations_stacked_round.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flexassign.integrations.aggregation import AggregationError
from flexassign.integrations.layout import ExpertLayout, LayoutError, block_name, nbytes

E = 4
MIXTRAL = ExpertLayout(expert=None, local=r"\.mlp\.gate\.",
                       stacked=r"\.mlp\.experts\.(gate_up|down)_proj$")
DBRX = ExpertLayout(expert=None, local=r"\.router\.", stacked=r"\.experts\.mlp\.(w1|v1|w2)$",
                    num_experts=E)


def mixtral_state(layers: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    state = {"model.embed_tokens.weight": rng.normal(size=(8, 3)).astype(np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}.mlp."
        state[p + "gate.weight"] = rng.normal(size=(E, 3)).astype(np.float32)
        state[p + "experts.gate_up_proj"] = rng.normal(size=(E, 4, 3)).astype(np.float32)
        state[p + "experts.down_proj"] = rng.normal(size=(E, 3, 2)).astype(np.float32)
    return state


def dbrx_state(ffn: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    state = {"transformer.wte.weight": rng.normal(size=(8, 3)).astype(np.float32),
             "transformer.blocks.0.ffn.router.layer.weight": rng.normal(size=(E, 3))}
    for w in ("w1", "v1", "w2"):
        state[f"transformer.blocks.0.ffn.experts.mlp.{w}"] = rng.normal(
            size=(E * ffn, 3)).astype(np.float32)
    return state


# ------------------------------------------------------------------ cutting


def test_stacked_blocks_are_contiguous_slices_along_the_expert_axis() -> None:
    state = mixtral_state()
    shared, experts = MIXTRAL.split(state)
    assert list(shared) == ["model.embed_tokens.weight"]
    assert sorted(experts) == list(range(E))
    name = "model.layers.1.mlp.experts.down_proj"
    for e in range(E):
        assert set(experts[e]) == {block_name(f"model.layers.{i}.mlp.experts.{p}", e)
                                   for i in range(2) for p in ("gate_up_proj", "down_proj")}
        np.testing.assert_array_equal(experts[e][block_name(name, e)], state[name][e:e + 1])


def test_flattened_stack_is_cut_into_num_experts_row_blocks() -> None:
    state = dbrx_state(ffn=3)
    _, experts = DBRX.split(state)
    name = "transformer.blocks.0.ffn.experts.mlp.w2"
    for e in range(E):
        np.testing.assert_array_equal(experts[e][block_name(name, e)],
                                      state[name][3 * e:3 * (e + 1)])
    assert DBRX.block_shapes(name, state[name]) == (E, (3, 3))


def test_expert_axis_other_than_the_first() -> None:
    layout = ExpertLayout(expert=None, local=None, stacked=r"^w$", expert_axis=-1)
    w = np.arange(12.0).reshape(3, E)
    sent = layout.select({"w": w, "b": np.ones(2)}, [2])
    np.testing.assert_array_equal(sent["w[2]"], w[:, 2:3])
    back = layout.merge({"w": w}, {"w[2]": np.zeros((3, 1))})
    np.testing.assert_array_equal(back["w"][:, 2], 0.0)
    np.testing.assert_array_equal(np.delete(back["w"], 2, axis=1), np.delete(w, 2, axis=1))


@pytest.mark.parametrize("call", ["split", "select", "check_model"])
def test_axis_not_divisible_names_the_parameter_and_its_shape(call: str) -> None:
    state = dbrx_state(ffn=2)
    name = "transformer.blocks.0.ffn.experts.mlp.v1"
    state[name] = np.zeros((E * 2 + 1, 3), dtype=np.float32)
    msg = re.escape(f"stacked parameter `{name}` of shape (9, 3)") + r".*not divisible into 4"
    with pytest.raises(LayoutError, match=msg):
        if call == "select":
            DBRX.select(state, [0])
        else:
            getattr(DBRX, call)(state)


def test_axis_out_of_range_names_the_parameter() -> None:
    layout = ExpertLayout(expert=None, stacked=r"^w$", expert_axis=2)
    with pytest.raises(LayoutError, match=r"`w` of shape \(4, 3\) has no axis 2"):
        layout.split({"w": np.zeros((4, 3))})


def test_check_model_wants_every_stack_to_hold_the_planned_experts() -> None:
    MIXTRAL.check_model(mixtral_state(), num_experts=E)
    with pytest.raises(LayoutError, match=r"holds 4 experts .* the planner plans 8"):
        MIXTRAL.check_model(mixtral_state(), num_experts=8)


def test_named_and_stacked_experts_mixed_in_one_model() -> None:
    layout = ExpertLayout(expert=r"^moe\.experts\.(\d+)\.", local=r"gate",
                          stacked=r"^stack\.w$")
    state = {"moe.experts.0.w": np.zeros(2), "moe.experts.1.w": np.ones(2),
             "stack.w": np.arange(4.0).reshape(2, 2), "moe.gate.w": np.zeros(2),
             "head": np.zeros(1)}
    layout.check_model(state, num_experts=2)
    sent = layout.select(state, [1])
    assert sorted(sent) == ["head", "moe.experts.1.w", "stack.w[1]"]


# --------------------------------------------------------------- selecting


@pytest.mark.parametrize("held", [[0], [1, 3], [0, 1, 2, 3]])
def test_a_node_receives_only_the_blocks_of_its_experts(held: list[int]) -> None:
    state = mixtral_state()
    sent = MIXTRAL.select(state, held)
    assert not any(MIXTRAL.is_local(k) for k in sent)
    assert MIXTRAL.expert_ids(sent) == held
    stacked = [k for k in state if MIXTRAL.role(k) == "stacked"]
    assert set(sent) == {"model.embed_tokens.weight"} | {block_name(k, e) for k in stacked
                                                         for e in held}
    # bytes: shared + exactly len(held) / E of every stack
    want = state["model.embed_tokens.weight"].nbytes + sum(
        state[k].nbytes * len(held) // E for k in stacked)
    assert nbytes(sent) == want


def test_selecting_an_expert_the_model_lacks_is_an_error() -> None:
    with pytest.raises(LayoutError, match=r"`expert_ids` names expert 7"):
        MIXTRAL.select(mixtral_state(), [7])


# ------------------------------------------------------------------ merging


def test_merge_writes_received_blocks_back_and_keeps_the_others() -> None:
    state = mixtral_state()
    name = "model.layers.0.mlp.experts.gate_up_proj"
    before = {k: v.copy() for k, v in state.items()}
    got = MIXTRAL.merge(state, {block_name(name, 2): np.full((1, 4, 3), 7.0, np.float32),
                                "model.embed_tokens.weight": np.zeros((8, 3), np.float32)})
    np.testing.assert_array_equal(got[name][2], 7.0)
    for e in (0, 1, 3):
        np.testing.assert_array_equal(got[name][e], before[name][e])
    np.testing.assert_array_equal(got["model.embed_tokens.weight"], 0.0)
    assert list(got) == list(state)
    for k in state:  # inputs untouched
        np.testing.assert_array_equal(state[k], before[k])


def test_merge_of_a_dbrx_block() -> None:
    state = dbrx_state(ffn=2)
    name = "transformer.blocks.0.ffn.experts.mlp.w1"
    got = DBRX.merge(state, {block_name(name, 3): np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(got[name][6:], 1.0)
    np.testing.assert_array_equal(got[name][:6], state[name][:6])


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"model.nope": np.zeros(1)}, r"received `model.nope`, which the model does not have"),
        ({"model.layers.0.mlp.experts.down_proj[4]": np.zeros((1, 3, 2), np.float32)},
         r"`model.layers.0.mlp.experts.down_proj\[4\]`.*holds experts 0..3"),
        ({"model.layers.0.mlp.experts.down_proj[1]": np.zeros((2, 3, 2), np.float32)},
         r"`model.layers.0.mlp.experts.down_proj\[1\]` of shape \(2, 3, 2\); the model's is "
         r"\(1, 3, 2\)"),
        ({"model.layers.0.mlp.experts.down_proj[1]": np.zeros((1, 3, 2), np.float64)},
         r"`model.layers.0.mlp.experts.down_proj\[1\]` of dtype float64; the model's is float32"),
        ({"model.embed_tokens.weight": np.zeros((8, 2), np.float32)},
         r"`model.embed_tokens.weight` of shape \(8, 2\)"),
        ({"model.layers.0.mlp.gate.weight[0]": np.zeros((1, 3), np.float32)},
         r"received `model.layers.0.mlp.gate.weight\[0\]`, which the model does not have"),
    ],
)
def test_merge_is_strict_and_names_the_entry(arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(LayoutError, match=match):
        MIXTRAL.merge(mixtral_state(), arrays)


def test_merge_keeps_torch_tensors_torch() -> None:
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v.copy()) for k, v in mixtral_state().items()}
    name = "model.layers.1.mlp.experts.down_proj"
    got = MIXTRAL.merge(state, {block_name(name, 0): np.zeros((1, 3, 2), np.float32)})
    assert all(isinstance(v, torch.Tensor) for v in got.values())
    assert torch.equal(got[name][0], torch.zeros(3, 2))
    assert torch.equal(got[name][1:], state[name][1:])
    assert not torch.equal(state[name][0], torch.zeros(3, 2))  # a copy was written
    sent = MIXTRAL.select(state, [1])
    assert nbytes(sent) == nbytes(MIXTRAL.select(mixtral_state(), [1]))


# ----------------------------------------------------------- reply checks


def _reply(held: list[int]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in MIXTRAL.select(mixtral_state(), held).items()}


def test_check_update_accepts_what_select_sends() -> None:
    assert MIXTRAL.check_update(_reply([1, 2]), mixtral_state(), [1, 2]) == [1, 2]
    # a node may return a subset of its experts (each complete) ...
    assert MIXTRAL.check_update(_reply([2]), mixtral_state(), [1, 2]) == [2]


@pytest.mark.parametrize(
    ("tamper", "error", "match"),
    [
        (lambda a: a.update(_reply([3])), LayoutError, r"experts \[3\] the node was not assigned"),
        (lambda a: a.pop("model.layers.1.mlp.experts.down_proj[1]"), AggregationError,
         r"missing.*down_proj\[1\]"),
        (lambda a: a.update({"model.layers.0.mlp.experts.down_proj[1]":
                             np.zeros((1, 2, 3), np.float32)}), AggregationError, r"shape"),
        (lambda a: a.update({"model.layers.0.mlp.experts.down_proj[1]":
                             np.zeros((1, 3, 2), np.float16)}), AggregationError, r"dtype"),
        (lambda a: a.update({"model.unknown.weight": np.zeros(1, np.float32)}),
         AggregationError, r"model.unknown.weight"),
        (lambda a: a.update({"model.layers.0.mlp.gate.weight": np.zeros((E, 3), np.float32)}),
         LayoutError, r"local parameter `model.layers.0.mlp.gate.weight`"),
    ],
)
def test_check_update_rejects(tamper: object, error: type[Exception], match: str) -> None:
    arrays = _reply([1, 2])
    tamper(arrays)  # type: ignore[operator]
    with pytest.raises(error, match=match):
        MIXTRAL.check_update(arrays, mixtral_state(), [1, 2])


# ----------------------------------------------------------------- imports


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})


def test_layout_imports_with_flwr_and_torch_blocked() -> None:
    out = _run("""
        import sys
        sys.modules["flwr"] = None
        sys.modules["torch"] = None
        from flexassign.integrations.layout import ExpertLayout
        import flexassign.integrations.aggregation
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("flwr", "torch")
                     and sys.modules[m] is not None)
        assert not bad, bad
        print("ok", ExpertLayout.__name__)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok ExpertLayout"


def test_flwr_block_is_effective() -> None:
    out = _run("import sys; sys.modules['flwr'] = None; import flwr")
    assert out.returncode != 0 and "import of flwr halted" in out.stderr
