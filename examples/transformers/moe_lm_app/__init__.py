"""FLEX-MoE in Flower for a tiny Mixtral causal LM built from a transformers config."""
