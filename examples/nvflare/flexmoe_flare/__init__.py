"""FLEX-MoE driving an NVIDIA FLARE job: a ModelController around the Planner."""
