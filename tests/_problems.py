"""Random problem generators, the independent reference MIP, and the one agreement check.

The generators and the reference live in :mod:`flexassign.testing` (users test their
own code with them); this module re-exports them under the names the tests have always
used and adds :func:`assert_agrees_with_reference`, the single check that a result
agrees with the reference (used by the conformance, soft-bound, property and
adversarial suites), :func:`mixed_problems` (the loop over random problems of mixed
structure that the backend suites share) and :func:`weighted_balanced` (a balanced
problem with integer client weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from flexassign import AssignmentProblem, AssignmentResult, Status, verify_assignment
from flexassign.testing import Reference, random_problem
from flexassign.testing import reference_solution as reference_solve

__all__ = [
    "Reference",
    "Schedule",
    "assert_agrees_with_reference",
    "mixed_problems",
    "random_problem",
    "reference_solve",
    "weighted_balanced",
]

#: When a structure flag is on in trial ``t``: ``(period, phase)`` means
#: ``t % period == phase``; a callable decides for itself.
Schedule = tuple[int, int] | Callable[[int], bool]


def mixed_problems(
    rng: np.random.Generator,
    count: int,
    *,
    n: tuple[int, int],
    e: tuple[int, int],
    on: dict[str, Schedule] | None = None,
    cycle: dict[str, list[Any]] | None = None,
    **always: Any,
) -> Iterator[tuple[int, AssignmentProblem]]:
    """``count`` random problems of mixed structure, as ``(trial, problem)``.

    Trial ``t`` draws its size from ``rng`` (``n`` and ``e`` are ``integers`` ranges,
    clients first), then :func:`random_problem` with each flag of ``on`` set by its
    schedule, each argument of ``cycle`` taking its ``t``-th value (cyclically) and
    the ``always`` arguments as given. Lazy: draws the caller makes between trials
    come in between, as in a hand-written loop.
    """
    for trial in range(count):
        args = dict(always)
        for flag, when in (on or {}).items():
            args[flag] = when(trial) if callable(when) else trial % when[0] == when[1]
        for name, values in (cycle or {}).items():
            args[name] = values[trial % len(values)]
        n_ = int(rng.integers(*n))
        e_ = int(rng.integers(*e))
        yield trial, random_problem(rng, n=n_, e=e_, **args)


def weighted_balanced(
    seed: int,
    shape: tuple[int, int],
    *,
    capacity: int,
    tolerance: float,
    max_weight: int,
) -> AssignmentProblem:
    """A balanced problem with uniform fitness and integer client weights in
    ``[1, max_weight)`` (fitness drawn first, then the weights, from ``seed``)."""
    rng = np.random.default_rng(seed)
    return AssignmentProblem.balanced(
        rng.random(shape),
        capacity=capacity,
        tolerance=tolerance,
        client_weight=rng.integers(1, max_weight, size=shape[0]).astype(float),
    )


def assert_agrees_with_reference(
    p: AssignmentProblem,
    res: AssignmentResult,
    *,
    exact: bool,
    ref: Reference | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    label: object = None,
) -> Reference:
    """``res`` agrees with the reference MIP on ``p``.

    Infeasible: ``res`` says INFEASIBLE without an assignment. Feasible: an exact
    method (or any method claiming OPTIMAL) is OPTIMAL with the reference objective;
    any other is a verified success that does not beat the optimum, and its bound (if
    any) is not below it. Returns the reference for further checks.
    """
    ref = reference_solve(p) if ref is None else ref
    where = (label, res.method, res.status.value, res.message)
    if not ref.feasible:
        assert res.status is Status.INFEASIBLE, where
        assert res.x is None and not res.success, where
        return ref
    assert res.success, where
    assert res.x is not None and verify_assignment(p, res.x).ok, where
    assert res.objective == pytest.approx(p.objective(res.x)), where
    if exact or res.status is Status.OPTIMAL:
        assert res.status is Status.OPTIMAL, where
        assert res.objective == pytest.approx(ref.objective, rel=rtol, abs=atol), where
    else:
        slack = atol + rtol * max(1.0, abs(ref.objective))
        assert res.objective <= ref.objective + slack, where
    if res.bound is not None:
        assert res.bound >= ref.objective - 1e-7 * max(1.0, abs(ref.objective)), where
    return ref
