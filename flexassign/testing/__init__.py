"""Tools for testing assignment code: Hypothesis strategies, an oracle, assertions.

For teams that write their own assignment policy (a heuristic, a wrapper around
:func:`~flexassign.solve_assignment`, a scheduler that edits plans) and want to test
it the way flexassign tests its own backends:

- :func:`problems` and :func:`feasible_problems` are Hypothesis strategies that
  generate :class:`~flexassign.AssignmentProblem` instances with any mix of features
  (count or weighted loads, a memory knapsack, allowed/fixed masks, soft bounds,
  mixed-sign fitness). :func:`feasible_problems` builds each problem around a hidden
  assignment, so it is feasible by construction; :func:`problems` may be infeasible.
- :func:`assert_valid_assignment` fails with every broken constraint spelled out.
- :func:`assert_optimal` compares an assignment's objective with an independent
  reference: a dense ``scipy.optimize.milp`` model that shares no code with the
  backends (:func:`reference_solution`), a backend name, a result, or a number.
- :func:`random_problem` is the same generator without Hypothesis, from a
  ``numpy.random.Generator``.

This module imports Hypothesis (``pip install -e ".[testing]" -c constraints.txt`` from
a clone); the rest of flexassign never does.

Examples
--------
Testing a user's own heuristic in a few lines (each client takes its best experts,
then the test checks the claims the heuristic makes):

>>> import numpy as np
>>> from hypothesis import given, settings
>>> from flexassign import verify_assignment
>>> from flexassign.testing import assert_valid_assignment, problems
>>> def top_k(problem):
...     order = np.argsort(-problem.fitness, axis=1, kind="stable")
...     x = np.zeros(problem.shape, dtype=bool)
...     for c, k in enumerate(problem.capacity):
...         x[c, order[c, :k]] = True
...     return x
>>> @settings(max_examples=20, derandomize=True, database=None)
... @given(problems(knapsack=False, masks=False, fixed=False, tolerance=None))
... def test_top_k_respects_capacity(problem):
...     x = top_k(problem)
...     assert (x.sum(axis=1) <= problem.capacity).all()
...     if problem.min_experts.max() == 0:  # no minimum and no load bounds: always valid
...         assert_valid_assignment(problem, x)
>>> test_top_k_respects_capacity()
"""

from __future__ import annotations

from .assertions import assert_optimal, assert_valid_assignment
from .reference import Reference, reference_solution
from .strategies import feasible_problems, problems, random_problem

__all__ = [
    "Reference",
    "assert_optimal",
    "assert_valid_assignment",
    "feasible_problems",
    "problems",
    "random_problem",
    "reference_solution",
]
