"""Quick start: FLEX-MoE assignment vs the greedy top-k baseline on one round.

Run: python examples/quickstart.py
"""

import numpy as np

from flexassign import AssignmentProblem, solve_assignment

rng = np.random.default_rng(0)
n_clients, n_experts = 200, 8
# non-IID fitness: most clients like experts 0-2 best ("popular experts")
fitness = rng.random((n_clients, n_experts)) * 0.5
fitness[:, :3] += rng.random((n_clients, 3)) * 0.5
capacity = rng.choice([1, 2, 4], size=n_clients, p=[0.5, 0.3, 0.2])  # phones .. laptops

problem = AssignmentProblem.balanced(fitness, capacity, tolerance=0.1)
print(problem)
for method in ("greedy", "greedy-balanced", "auto"):
    res = solve_assignment(problem, method=method)
    cv = res.loads.std() / res.loads.mean()
    print(
        f"{method:>16}: {res.method:<16} status={res.status.value:<21} "
        f"fitness={res.objective:9.3f}  load min/max={res.loads.min():3.0f}/{res.loads.max():3.0f}"
        f"  CV={cv:.3f}  {res.runtime * 1e3:6.1f} ms"
    )
best = solve_assignment(problem)
print("client 0 trains experts", best.experts[0], "| bound", best.bound, "| gap", best.gap)
