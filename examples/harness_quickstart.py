"""The fl_harness Python API in a few lines: one run per strategy on scikit-learn digits.

    python examples/harness_quickstart.py          # about 20 s on one core
"""

from __future__ import annotations

from fl_harness import ExperimentConfig, run_experiment

base = ExperimentConfig(dataset="digits", partition="dirichlet", alpha=0.8, rounds=10,
                        num_clients=40, num_experts=8, eval_every=5, seed=0)
for strategy in ("flex", "greedy"):
    res = run_experiment(base.replace(strategy=strategy))
    print(f"{strategy:7s} global {res.final_accuracy:.3f}  newcomer "
          f"{res.final('newcomer_accuracy'):.3f}  pool {res.final('pool_accuracy'):.3f}  "
          f"worst expert {res.final('expert_accuracy_min'):.3f}  utilization CV "
          f"{res.utilization_cv:.3f}  per-expert client-trainings {res.utilization}")
