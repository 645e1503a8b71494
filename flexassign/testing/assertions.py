"""Assertions for tests: a valid assignment, an optimal objective."""

from __future__ import annotations

from numpy.typing import ArrayLike

from .._validation import is_real
from ..errors import InvalidProblemError, ProblemTypeError
from ..problem import AssignmentProblem
from ..result import AssignmentResult
from ..verify import DEFAULT_TOL, verify_assignment
from .reference import Reference, reference_solution

__all__ = ["assert_optimal", "assert_valid_assignment"]


def assert_valid_assignment(
    problem: AssignmentProblem, x: ArrayLike, *, tol: float = DEFAULT_TOL, max_listed: int = 10
) -> None:
    """Fail unless ``x`` satisfies every constraint of ``problem``.

    The message lists each broken constraint in the problem's terms (client or
    expert index, the recomputed value and the bound), up to ``max_listed``.

    Raises
    ------
    AssertionError
        ``x`` has the wrong shape, is not 0/1, or breaks a constraint.
    ProblemTypeError
        ``problem`` is not an :class:`~flexassign.AssignmentProblem`.

    Examples
    --------
    >>> import numpy as np
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem(np.ones((2, 2)), capacity=1, expert_max_load=1)
    >>> assert_valid_assignment(p, [[1, 0], [0, 1]])
    >>> assert_valid_assignment(p, [[1, 1], [1, 0]])
    Traceback (most recent call last):
    ...
    AssertionError: the assignment breaks 2 constraint(s):
      - client 0 takes 2 experts > capacity 1
      - expert 0 has load 2 > expert_max_load 1
    """
    if not isinstance(problem, AssignmentProblem):
        raise ProblemTypeError(
            f"`problem` must be an AssignmentProblem; got {type(problem).__name__}"
        )
    try:
        check = verify_assignment(problem, x, tol=tol)
    except InvalidProblemError as exc:
        raise AssertionError(f"not an assignment for this problem: {exc}") from None
    if check.violations:
        listed = [f"  - {v}" for v in check.violations[:max_listed]]
        more = len(check.violations) - max_listed
        if more > 0:
            listed.append(f"  - and {more} more")
        raise AssertionError(
            f"the assignment breaks {len(check.violations)} constraint(s):\n" + "\n".join(listed)
        )


def assert_optimal(
    problem: AssignmentProblem,
    x: ArrayLike,
    *,
    reference: str | AssignmentResult | Reference | float | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-6,
) -> None:
    """Fail unless ``x`` is valid and its objective matches the optimum.

    Parameters
    ----------
    problem : AssignmentProblem
    x : array_like of bool, shape (N, E)
    reference : None, str, AssignmentResult, Reference or float
        Where the optimum comes from: ``None`` solves the independent dense MIP
        (:func:`reference_solution`); a string names a backend for
        :func:`~flexassign.solve_assignment`; a result or :class:`Reference` gives
        its objective; a number is the optimal objective itself.
    rtol, atol : float
        Objectives match when ``|obj - opt| <= atol + rtol * max(1, |opt|)``. The
        default ``atol`` is HiGHS's default absolute MIP gap (1e-6): the reference
        model and the MIP backends stop within it, so a smaller one can flag an
        optimal answer whose objective differs from theirs in the seventh digit.

    Raises
    ------
    AssertionError
        ``x`` breaks a constraint, falls short of the optimum (the message gives both
        objectives and the gap), beats it (then the reference is wrong), or the
        reference finds the problem infeasible.
    ProblemTypeError
        ``reference`` is none of the accepted types.

    Examples
    --------
    >>> from flexassign import AssignmentProblem
    >>> p = AssignmentProblem([[3.0, 2.0], [2.0, 0.0]], capacity=1, expert_max_load=1)
    >>> assert_optimal(p, [[0, 1], [1, 0]])
    >>> assert_optimal(p, [[1, 0], [0, 1]], reference="highs")
    Traceback (most recent call last):
    ...
    AssertionError: objective 3 is below the optimum 4 (method 'highs') by 1 (25.000% relative)
    """
    assert_valid_assignment(problem, x)
    objective = problem.objective(x)
    optimum, source = _optimum(problem, reference)
    if optimum is None:
        raise AssertionError(
            f"{source} says the problem is infeasible, yet the assignment is valid "
            f"(objective {objective:.10g}): the reference is wrong"
        )
    slack = atol + rtol * max(1.0, abs(optimum))
    if objective < optimum - slack:
        gap = optimum - objective
        raise AssertionError(
            f"objective {objective:.10g} is below the optimum {optimum:.10g} ({source}) "
            f"by {gap:.6g} ({gap / max(1.0, abs(optimum)):.3%} relative)"
        )
    if objective > optimum + slack:
        raise AssertionError(
            f"objective {objective:.10g} beats the claimed optimum {optimum:.10g} "
            f"({source}): the reference is not optimal"
        )


def _optimum(
    problem: AssignmentProblem, reference: str | AssignmentResult | Reference | float | None
) -> tuple[float | None, str]:
    if reference is None:
        ref = reference_solution(problem)
        return (ref.objective if ref.feasible else None), "reference MIP"
    if isinstance(reference, Reference):
        return (reference.objective if reference.feasible else None), "given Reference"
    if isinstance(reference, str):
        from ..solve import solve_assignment

        res = solve_assignment(problem, method=reference)
        return _from_result(res, f"method {reference!r}")
    if isinstance(reference, AssignmentResult):
        return _from_result(reference, f"result of {reference.method!r}")
    if not is_real(reference):
        raise ProblemTypeError(
            "`reference` must be None, a backend name, an AssignmentResult, a Reference "
            f"or a number; got {type(reference).__name__}"
        )
    return float(reference), "given optimum"


def _from_result(res: AssignmentResult, source: str) -> tuple[float | None, str]:
    from ..result import Status

    if res.status is Status.INFEASIBLE:
        return None, source
    if res.status is not Status.OPTIMAL:
        raise AssertionError(
            f"`reference` is not a proven optimum: {source} returned {res.status.value} "
            f"({res.message})"
        )
    return res.objective, source
