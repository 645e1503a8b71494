"""Tiny Hugging Face MoE models (transformers 5.x, built from configs, no download).

Shared by the per-family round test and the router tests: ``BUILDERS`` builds each
family with ``E`` experts per layer, ``LAYOUTS`` is the layout line docs/flower.md
shows for it, ``ROUTERS`` the ``restrict_routers`` arguments tested for it. Importing
this module needs transformers (the test modules importorskip it first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import transformers

from flexassign.integrations.layout import ExpertLayout

E = 4
DIMS = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "intermediate_size": 8}

# The layout line of each family, as docs/flower.md shows it.
STACKED = r"\.mlp\.experts\.(gate_up|down)_proj$"
LAYOUTS: dict[str, ExpertLayout] = {
    "mixtral": ExpertLayout(expert=None, stacked=STACKED, local=r"\.mlp\.gate\."),
    "qwen2_moe": ExpertLayout(expert=None, stacked=STACKED, local=r"\.mlp\.gate\."),
    "qwen3_moe": ExpertLayout(expert=None, stacked=STACKED, local=r"\.mlp\.gate\."),
    "olmoe": ExpertLayout(expert=None, stacked=STACKED, local=r"\.mlp\.gate\."),
    "deepseek_v3": ExpertLayout(expert=None, stacked=STACKED, local=r"\.mlp\.gate\."),
    "phimoe": ExpertLayout(expert=None, stacked=STACKED, local=r"\.mlp\.router\."),
    "gpt_oss": ExpertLayout(expert=None, local=r"\.mlp\.router\.",
                            stacked=r"\.mlp\.experts\.(gate_up|down)_proj(_bias)?$"),
    "granitemoe": ExpertLayout(expert=None, local=r"\.block_sparse_moe\.router\.",
                               stacked=r"\.block_sparse_moe\.experts\.(gate_up|down)_proj$"),
    "jetmoe": ExpertLayout(expert=None, local=r"\.router\.",
                           stacked=r"\.(mlp|experts)\.(input|output)_linear\.weight$"),
    "dbrx": ExpertLayout(expert=None, local=r"\.ffn\.router\.", num_experts=E,
                         stacked=r"\.ffn\.experts\.mlp\.(w1|v1|w2)$"),
    "switch_transformers": ExpertLayout(expert=r"\.experts\.expert_(\d+)\.", local=r"\.router\."),
    "nllb_moe": ExpertLayout(expert=r"\.experts\.expert_(\d+)\.", local=r"\.router\."),
}


def _dbrx() -> Any:
    cfg = transformers.DbrxConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2,
                                  max_seq_len=32, attn_config={"kv_n_heads": 2},
                                  ffn_config={"moe_num_experts": E, "moe_top_k": 2,
                                              "ffn_hidden_size": 8})
    # transformers 5.25's DbrxAttention reads `attn_config.rope_theta`, which the
    # attention config no longer defines (its rope settings moved to `rope_parameters`)
    cfg.attn_config.clip_qkv = 8.0  # its forward clamps with it; None fails in 5.25
    if not hasattr(cfg.attn_config, "rope_theta"):
        cfg.attn_config.rope_theta = 10000.0
    return transformers.DbrxForCausalLM(cfg)


BUILDERS: dict[str, Callable[[], Any]] = {
    "mixtral": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        **DIMS, num_local_experts=E, num_experts_per_tok=2)),
    "qwen2_moe": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **DIMS, num_experts=E, num_experts_per_tok=2, moe_intermediate_size=8,
        shared_expert_intermediate_size=8)),
    "qwen3_moe": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **DIMS, num_experts=E, num_experts_per_tok=2, moe_intermediate_size=8, head_dim=8)),
    "olmoe": lambda: transformers.OlmoeForCausalLM(transformers.OlmoeConfig(
        **DIMS, num_experts=E, num_experts_per_tok=2, eos_token_id=None, pad_token_id=None)),
    "deepseek_v3": lambda: transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(
        **DIMS, n_routed_experts=E, num_experts_per_tok=2, moe_intermediate_size=8,
        first_k_dense_replace=0, n_group=1, topk_group=1, q_lora_rank=None, kv_lora_rank=8,
        qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, n_shared_experts=1)),
    "phimoe": lambda: transformers.PhimoeForCausalLM(transformers.PhimoeConfig(
        **DIMS, num_local_experts=E, num_experts_per_tok=2)),
    "gpt_oss": lambda: transformers.GptOssForCausalLM(transformers.GptOssConfig(
        **DIMS, num_local_experts=E, num_experts_per_tok=2, head_dim=8)),
    "granitemoe": lambda: transformers.GraniteMoeForCausalLM(transformers.GraniteMoeConfig(
        **DIMS, num_local_experts=E, num_experts_per_tok=2)),
    "jetmoe": lambda: transformers.JetMoeForCausalLM(transformers.JetMoeConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_key_value_heads=2,
        kv_channels=8, intermediate_size=8, num_local_experts=E, num_experts_per_tok=2)),
    "dbrx": _dbrx,
    "switch_transformers": lambda: transformers.SwitchTransformersForConditionalGeneration(
        transformers.SwitchTransformersConfig(
            vocab_size=64, d_model=16, d_kv=8, d_ff=8, num_layers=2, num_decoder_layers=2,
            num_heads=2, num_experts=E, num_sparse_encoder_layers=1,
            num_sparse_decoder_layers=1)),
    "nllb_moe": lambda: transformers.NllbMoeForConditionalGeneration(transformers.NllbMoeConfig(
        vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=8,
        decoder_ffn_dim=8, num_experts=E, encoder_sparse_step=1, decoder_sparse_step=1)),
}



#: family -> (routers pattern, top_k) for restrict_routers (top_k only for plain gates)
ROUTERS: dict[str, tuple[str, int | None]] = {
    "mixtral": (r"\.mlp\.gate$", None),
    "qwen2_moe": (r"\.mlp\.gate$", None),
    "qwen3_moe": (r"\.mlp\.gate$", None),
    "olmoe": (r"\.mlp\.gate$", None),
    "dbrx": (r"\.ffn\.router\.layer$", 2),
}
