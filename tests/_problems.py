"""Random problem generators, the independent reference MIP, and the one agreement check.

The generators and the reference live in :mod:`flexassign.testing` (users test their
own code with them); this module re-exports them under the names the tests have always
used and adds :func:`assert_agrees_with_reference`, the single check that a result
agrees with the reference (used by the conformance, soft-bound, property and
adversarial suites).
"""

from __future__ import annotations

import pytest

from flexassign import AssignmentProblem, AssignmentResult, Status, verify_assignment
from flexassign.testing import Reference, random_problem
from flexassign.testing import reference_solution as reference_solve

__all__ = ["Reference", "assert_agrees_with_reference", "random_problem", "reference_solve"]


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
