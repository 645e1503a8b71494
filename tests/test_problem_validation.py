"""Exact-message tests for every input check, and the problem's derived views."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flexassign import (
    AssignmentProblem,
    BackendNotInstalledError,
    FlexAssignError,
    InvalidProblemError,
    ProblemTypeError,
    UnknownMethodError,
    UnsupportedProblemError,
    solve_assignment,
)
from flexassign.backends.registry import Backend, register_backend

F = np.ones((3, 2))


def raises(exc: type[Exception], message: str):  # type: ignore[no-untyped-def]
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (
            {"fitness": np.ones(3)},
            InvalidProblemError,
            "`fitness` must be a 2-D array of shape (n_clients, n_experts); got 1-D with shape (3,)",
        ),
        (
            {"fitness": np.ones((0, 2))},
            InvalidProblemError,
            "`fitness` must have at least one client and one expert; got shape (0, 2)",
        ),
        (
            {"fitness": [[1.0, np.nan], [0, 0]]},
            InvalidProblemError,
            "`fitness` must be finite; entry (client 0, expert 1) is nan",
        ),
        (
            {"fitness": [[1.0, 2.0], [np.inf, 0]]},
            InvalidProblemError,
            "`fitness` must be finite; entry (client 1, expert 0) is inf",
        ),
        ({"fitness": "abc"}, ProblemTypeError, "`fitness` must be numeric; got a string"),
        ({"fitness": [["a", "b"]]}, ProblemTypeError, "`fitness` must be numeric; got dtype <U1"),
        (
            {"fitness": F, "capacity": -1},
            InvalidProblemError,
            "`capacity` must be >= 0 (client 0 is -1)",
        ),
        (
            {"fitness": F, "capacity": 1.5},
            InvalidProblemError,
            "`capacity` must hold integers (client 0 is 1.5)",
        ),
        (
            {"fitness": F, "capacity": [1, 2]},
            InvalidProblemError,
            "`capacity` must be a scalar or have shape (3,) (one value per client); got shape (2,)",
        ),
        (
            {"fitness": F, "capacity": [1, np.nan, 1]},
            InvalidProblemError,
            "`capacity` must not contain NaN (client 1)",
        ),
        (
            {"fitness": F, "capacity": 1, "min_experts": 2},
            InvalidProblemError,
            "`min_experts` (2 for client 0) exceeds `capacity` (1)",
        ),
        (
            {"fitness": F, "min_experts": -1},
            InvalidProblemError,
            "`min_experts` must be >= 0 (client 0 is -1)",
        ),
        (
            {"fitness": F, "expert_min_load": [1, -2]},
            InvalidProblemError,
            "`expert_min_load` must be >= 0 (expert 1 is -2)",
        ),
        (
            {"fitness": F, "expert_min_load": np.inf},
            InvalidProblemError,
            "`expert_min_load` must be finite (expert 0 is inf)",
        ),
        (
            {"fitness": F, "expert_min_load": 3, "expert_max_load": [4, 2]},
            InvalidProblemError,
            "`expert_min_load` (3 for expert 1) exceeds `expert_max_load` (2)",
        ),
        (
            {"fitness": F, "expert_max_load": [1, 2, 3]},
            InvalidProblemError,
            "`expert_max_load` must be a scalar or have shape (2,) (one value per expert); got shape (3,)",
        ),
        (
            {"fitness": F, "client_weight": [1, 0, 1]},
            InvalidProblemError,
            "`client_weight` must be > 0 (client 1 is 0)",
        ),
        (
            {"fitness": F, "expert_size": [1, 1]},
            InvalidProblemError,
            "`expert_size` and `client_budget` define the memory knapsack together; give both or neither",
        ),
        (
            {"fitness": F, "expert_size": [1, -1], "client_budget": 3},
            InvalidProblemError,
            "`expert_size` must be >= 0 (expert 1 is -1)",
        ),
        (
            {"fitness": F, "expert_size": [1, 1], "client_budget": [1, np.nan, 1]},
            InvalidProblemError,
            "`client_budget` must not contain NaN (client 1)",
        ),
        (
            {"fitness": F, "allowed": np.ones((2, 3), dtype=bool)},
            InvalidProblemError,
            "`allowed` must have shape (3, 2); got shape (2, 3)",
        ),
        (
            {"fitness": F, "allowed": np.full((3, 2), 2)},
            InvalidProblemError,
            "`allowed` must be boolean (or 0/1)",
        ),
        (
            {"fitness": F, "allowed": [[1, 0], [1, 1], [1, 1]], "fixed": [[0, 1], [0, 0], [0, 0]]},
            InvalidProblemError,
            "`fixed` forces the pair (client 0, expert 1) that `allowed` forbids",
        ),
        (
            {"fitness": F, "load_penalty": -1.0},
            InvalidProblemError,
            "`load_penalty` must be finite and > 0; got -1.0",
        ),
        (
            {"fitness": F, "load_penalty": "high"},
            ProblemTypeError,
            "`load_penalty` must be a number or None; got str",
        ),
    ],
)
def test_input_checks(kwargs: dict, exc: type[Exception], message: str) -> None:
    with raises(exc, message):
        AssignmentProblem(**kwargs)


def test_errors_are_builtin_subclasses() -> None:
    assert issubclass(InvalidProblemError, ValueError)
    assert issubclass(ProblemTypeError, TypeError)
    assert issubclass(UnknownMethodError, ValueError)
    assert issubclass(BackendNotInstalledError, FlexAssignError)


def test_balanced_checks() -> None:
    with raises(InvalidProblemError, "`tolerance` must be finite and >= 0; got -0.1"):
        AssignmentProblem.balanced(F, 1, tolerance=-0.1)
    with raises(ProblemTypeError, "`tolerance` must be a number; got str"):
        AssignmentProblem.balanced(F, 1, tolerance="0.1")  # type: ignore[arg-type]
    with raises(
        InvalidProblemError,
        "`expert_max_load` cannot be combined with `tolerance`: balanced() derives it",
    ):
        AssignmentProblem.balanced(F, 1, tolerance=0.1, expert_max_load=3)


def test_balanced_bounds_follow_formula() -> None:
    # 7 clients x capacity 2 over 3 experts: avg 14/3 = 4.667
    p = AssignmentProblem.balanced(np.ones((7, 3)), 2, tolerance=0.1)
    assert p.expert_min_load.tolist() == [4.0] * 3  # floor(0.9 * 4.667) = floor(4.2)
    assert p.expert_max_load.tolist() == [6.0] * 3  # ceil(1.1 * 4.667) = ceil(5.13)
    w = np.array([1.0, 2.0, 3.0])
    p = AssignmentProblem.balanced(np.ones((3, 2)), 1, tolerance=0.5, client_weight=w)
    assert p.expert_min_load.tolist() == [1.0, 1.0]  # avg 3: floor(1.5)
    assert p.expert_max_load.tolist() == [5.0, 5.0]  # ceil(4.5)
    # effective capacity counts allowed experts only
    allowed = np.array([[True, False, False]] * 3)
    p = AssignmentProblem.balanced(np.ones((3, 3)), 3, tolerance=0.0, allowed=allowed)
    assert p.average_load() == pytest.approx(1.0)
    p = AssignmentProblem.balanced(np.ones((4, 2)), 1, tolerance=0.0, exact_capacity=True)
    assert p.min_experts.tolist() == [1] * 4


def test_solve_option_checks() -> None:
    with raises(
        UnknownMethodError,
        "unknown `method` 'simplex'; valid methods: "
        + ", ".join(
            repr(n) for n in ["auto", *[b.name for b in __import__("flexassign").list_backends()]]
        ),
    ):
        solve_assignment(F, capacity=1, method="simplex")
    with raises(InvalidProblemError, "`time_limit` must be finite and > 0; got 0"):
        solve_assignment(F, capacity=1, time_limit=0)
    with raises(ProblemTypeError, "`time_limit` must be a number of seconds or None; got '5'"):
        solve_assignment(F, capacity=1, time_limit="5")  # type: ignore[arg-type]
    with raises(InvalidProblemError, "`mip_gap` must be finite and >= 0; got -1"):
        solve_assignment(F, capacity=1, mip_gap=-1)
    with raises(ProblemTypeError, "`seed` must be an integer; got 1.5"):
        solve_assignment(F, capacity=1, seed=1.5)  # type: ignore[arg-type]
    with raises(InvalidProblemError, "`threads` must be a positive integer or None; got 0"):
        solve_assignment(F, capacity=1, threads=0)
    p = AssignmentProblem(F, capacity=1)
    with raises(
        ProblemTypeError,
        "problem arguments (`capacity`) cannot be combined with an AssignmentProblem; "
        "use problem.replace(...)",
    ):
        solve_assignment(p, capacity=2)


def test_flow_rejects_weighted_problem_with_alternatives() -> None:
    with pytest.raises(UnsupportedProblemError, match=r"^method 'flow' needs equal client weights"):
        solve_assignment(F, capacity=1, client_weight=[1, 2, 3], method="flow")


def test_missing_backend_names_install_command() -> None:
    register_backend(
        Backend(
            name="test-missing",
            module="flexassign.backends.nonexistent",
            requires=("surely_not_installed_pkg_xyz",),
            extra="missing-extra",
            kind="exact",
            weighted=True,
            knapsack=True,
            soft=True,
            time_limit=True,
            description="test only",
        ),
        replace=True,
    )
    try:
        with raises(
            BackendNotInstalledError,
            "method 'test-missing' needs surely_not_installed_pkg_xyz, which is not installed; "
            'install it with: pip install -e ".[missing-extra]" -c constraints.txt (from a clone)',
        ):
            solve_assignment(F, capacity=1, method="test-missing")
    finally:
        from flexassign.backends import registry

        registry._REGISTRY.pop("test-missing")


def test_problem_is_immutable_and_replace_revalidates() -> None:
    p = AssignmentProblem(F, capacity=1)
    with pytest.raises(ValueError):
        p.fitness[0, 0] = 5.0
    with pytest.raises(AttributeError):
        p.capacity = np.array([2, 2, 2])  # type: ignore[misc]
    q = p.replace(capacity=2)
    assert q.capacity.tolist() == [2, 2, 2] and p.capacity.tolist() == [1, 1, 1]
    with raises(InvalidProblemError, "`min_experts` (3 for client 0) exceeds `capacity` (2)"):
        q.replace(min_experts=3)


def test_structure_detection() -> None:
    assert AssignmentProblem(F, capacity=1).is_unimodular
    assert AssignmentProblem(F, capacity=1, client_weight=[2, 2, 2]).is_unimodular
    assert not AssignmentProblem(F, capacity=1, client_weight=[1, 2, 2]).is_unimodular
    # a knapsack that can never bind keeps the problem a flow
    slack = AssignmentProblem(F, capacity=1, expert_size=[1, 2], client_budget=2)
    assert slack.is_unimodular and not slack.knapsack_binding
    tight = AssignmentProblem(F, capacity=2, expert_size=[1, 2], client_budget=2)
    assert tight.knapsack_binding and not tight.is_unimodular


def test_infeasibility_messages() -> None:
    from flexassign import diagnose_infeasibility

    cases = [
        (
            AssignmentProblem(F, capacity=1, fixed=[[1, 1], [0, 0], [0, 0]]),
            "client 0 has 2 fixed experts but capacity 1",
        ),
        (
            AssignmentProblem(F, capacity=2, min_experts=2, allowed=[[1, 0], [1, 1], [1, 1]]),
            "client 0 needs at least 2 experts (min_experts) but only 1 are allowed",
        ),
        (
            AssignmentProblem(
                np.ones((5, 4)),
                capacity=1,
                expert_min_load=[4, 0, 0, 0],
                allowed=np.array([[1, 1, 1, 1]] * 2 + [[0, 1, 1, 1]] * 3, dtype=bool),
            ),
            "expert 0 needs at least 4 clients but only 2 may take it",
        ),
        (
            AssignmentProblem(F, capacity=2, expert_max_load=1, fixed=[[1, 0], [1, 0], [0, 0]]),
            "expert 0 has fixed load 2 > expert_max_load 1",
        ),
        (
            AssignmentProblem(F, capacity=2, min_experts=2, expert_max_load=2),
            "total minimum demand 6 (min_experts) > total maximum expert load 4",
        ),
        (
            AssignmentProblem(F, capacity=1, expert_min_load=1.2, expert_max_load=1.8),
            "expert 0 must take between 1.2 and 1.8 clients, and no whole number of clients lies in that range",
        ),
        (
            AssignmentProblem(
                F, capacity=1, min_experts=1, expert_size=[3, 4], client_budget=[2, 5, 5]
            ),
            "client 0 needs at least 1 experts but the smallest allowed ones need memory 3 > client_budget 2",
        ),
    ]
    for p, msg in cases:
        assert diagnose_infeasibility(p) == msg
        assert solve_assignment(p, method="highs").message == msg


def test_fields_to_kwargs_and_take() -> None:
    from flexassign.problem import FIELDS

    assert AssignmentProblem.fields() == FIELDS
    assert FIELDS[:3] == ("fitness", "capacity", "min_experts") and "load_penalty" in FIELDS
    f = np.arange(12.0).reshape(4, 3)
    p = AssignmentProblem(
        f,
        capacity=[1, 2, 1, 2],
        min_experts=[0, 1, 0, 1],
        client_weight=[1.0, 2.0, 3.0, 4.0],
        expert_size=[1.0, 1.0, 2.0],
        client_budget=[5.0, 5.0, 5.0, 1.0],
        allowed=np.ones((4, 3), dtype=bool),
        fixed=np.eye(4, 3, dtype=bool),
        expert_max_load=[9.0, 9.0, 9.0],
    )
    assert set(p.to_kwargs()) == set(FIELDS)
    sub = p.take([3, 1])
    np.testing.assert_array_equal(sub.fitness, f[[3, 1]])
    assert sub.capacity.tolist() == [2, 2] and sub.min_experts.tolist() == [1, 1]
    assert sub.client_weight.tolist() == [4.0, 2.0] and sub.client_budget.tolist() == [1.0, 5.0]
    np.testing.assert_array_equal(sub.fixed, np.eye(4, 3, dtype=bool)[[3, 1]])
    assert sub.expert_max_load.tolist() == [9.0, 9.0, 9.0]  # per-expert fields kept
    assert p.take([0, 1], expert_max_load=2.0).expert_max_load.tolist() == [2.0] * 3
    with raises(ProblemTypeError, "`rows` must be a 1-D array of client indices or a mask"):
        p.take([[0]])
    with pytest.raises(ProblemTypeError, match=r"^take\(\) got unknown argument"):
        p.take([0], bogus=1)
