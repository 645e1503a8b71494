"""Dynamic client-expert alignment: fitness tracking, usage monitoring, capacity
profiling and per-round planning (FLEX-MoE and its companion system design).

::

    from flexassign.alignment import Planner, ClientProfile, Feedback, ProbeFeedback

    planner = Planner(num_experts=8, strategy="flex", tolerance=0.1, seed=0)
    planner.set_capacity("client-7", 2)       # or register(..., profile=ClientProfile(...))
    plan = planner.plan_round(["client-7", "client-9"])
    plan["client-7"]                          # tuple of expert ids; plan.result: AssignmentResult
    planner.report("client-7", Feedback(experts=plan["client-7"], counts=[120, 40],
                                        accuracy=[0.8, 0.6], loss=[0.5, 1.1]))
    planner.report_probe("client-7", ProbeFeedback(experts=range(8), loss=[...], count=64))
    planner.utilization_cv(); planner.churn()
    planner.save("state.json"); Planner.load("state.json")

See ``docs/alignment.md`` for the update rules and design choices.
"""

from __future__ import annotations

from .capacity import CapacityLimits, ClientProfile, ModelCost, capacity_limits
from .config import PlannerConfig, default_model_cost
from .feedback import Feedback, ProbeFeedback
from .fitness import FitnessConfig, FitnessTracker, ema_update, exploration_bonus
from .plan import Plan
from .planner import Planner
from .policies import POLICIES, STRATEGIES, Policy
from .presets import DEFAULT_DEADLINE, DEFAULT_MODEL_COST, DEVICE_PRESETS
from .simulate import SyntheticPopulation, simulate
from .state import load_state, save_state
from .usage import UsageMonitor, UtilizationStats, deficit_targets, utilization_stats

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MODEL_COST",
    "DEVICE_PRESETS",
    "POLICIES",
    "STRATEGIES",
    "CapacityLimits",
    "ClientProfile",
    "Feedback",
    "FitnessConfig",
    "FitnessTracker",
    "ModelCost",
    "Plan",
    "Planner",
    "PlannerConfig",
    "Policy",
    "ProbeFeedback",
    "SyntheticPopulation",
    "UsageMonitor",
    "UtilizationStats",
    "capacity_limits",
    "default_model_cost",
    "deficit_targets",
    "ema_update",
    "exploration_bonus",
    "load_state",
    "save_state",
    "simulate",
    "utilization_stats",
]
