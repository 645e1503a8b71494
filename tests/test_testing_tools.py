"""flexassign.testing: the strategies generate what they promise, the assertions catch
what they claim to, and the example in docs/testing.md runs as a test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from flexassign import AssignmentProblem, Status, solve_assignment
from flexassign.errors import InvalidProblemError, ProblemTypeError
from flexassign.testing import (
    Reference,
    assert_optimal,
    assert_valid_assignment,
    feasible_problems,
    problems,
    random_problem,
    reference_solution,
)

ROOT = Path(__file__).resolve().parents[1]
FEW = settings(max_examples=25, deadline=None, derandomize=True, database=None)


@FEW
@given(feasible_problems())
def test_feasible_problems_are_feasible(p: AssignmentProblem) -> None:
    assert p.load_penalty is None
    ref = reference_solution(p)
    assert ref.feasible
    assert_valid_assignment(p, ref.x)


@FEW
@given(
    problems(
        clients=3,
        experts=(2, 4),
        weighted=True,
        knapsack=True,
        masks=True,
        fixed=True,
        soft=True,
        mixed_sign=True,
        tolerance=0.2,
    )
)
def test_problems_honour_every_feature_flag(p: AssignmentProblem) -> None:
    assert p.n_clients == 3 and 2 <= p.n_experts <= 4
    assert p.client_weight is not None and p.has_knapsack and p.is_soft
    assert p.allowed is not None and p.fixed is not None


@FEW
@given(
    problems(weighted=False, knapsack=False, masks=False, fixed=False, soft=False, tolerance=None)
)
def test_problems_feature_flags_off(p: AssignmentProblem) -> None:
    assert p.client_weight is None and not p.has_knapsack and not p.is_soft
    assert p.allowed is None and p.fixed is None
    assert np.isinf(p.expert_max_load).all()


def test_problems_can_be_infeasible() -> None:
    seen = {
        reference_solution(
            random_problem(np.random.default_rng(s), n=5, e=3, knapsack=True, tolerance=0.0)
        ).feasible
        for s in range(30)
    }
    assert seen == {True, False}


def test_bad_sizes_name_the_argument() -> None:
    for strategy, name in (
        (problems(clients=(3, 1)), "clients"),
        (feasible_problems(experts=0), "experts"),
    ):

        @FEW
        @given(strategy)
        def draw(p: AssignmentProblem) -> None:
            raise AssertionError("unreachable")

        with pytest.raises(InvalidProblemError, match=f"`{name}` must be a positive int"):
            draw()


def test_assert_valid_assignment_lists_each_violation() -> None:
    p = AssignmentProblem(
        np.ones((2, 3)),
        capacity=1,
        min_experts=1,
        expert_max_load=1,
        allowed=[[True, True, False], [True, True, True]],
        fixed=[[False, False, False], [False, True, False]],
    )
    assert_valid_assignment(p, [[1, 0, 0], [0, 1, 0]])
    with pytest.raises(AssertionError) as info:
        assert_valid_assignment(p, [[1, 0, 1], [0, 0, 0]])
    msg = str(info.value)
    assert msg.startswith("the assignment breaks 4 constraint(s):")
    assert "client 0 takes 2 experts > capacity 1" in msg
    assert "client 1 takes 0 experts < min_experts 1" in msg
    assert "pair (0, 2) is assigned but not allowed" in msg
    assert "pair (1, 1) is fixed but not assigned" in msg
    with pytest.raises(AssertionError, match=r"breaks 4 .*\n  - .*\n  - and 3 more"):
        assert_valid_assignment(p, [[1, 0, 1], [0, 0, 0]], max_listed=1)
    with pytest.raises(AssertionError, match=r"not an assignment .* `x` must have shape \(2, 3\)"):
        assert_valid_assignment(p, np.zeros((3, 2)))
    with pytest.raises(ProblemTypeError, match="`problem` must be an AssignmentProblem"):
        assert_valid_assignment(np.ones((2, 3)), np.zeros((2, 3)))  # type: ignore[arg-type]


def test_assert_optimal_references() -> None:
    p = AssignmentProblem([[3.0, 2.0], [2.0, 0.0]], capacity=1, expert_max_load=1)
    best, worse = [[0, 1], [1, 0]], [[1, 0], [0, 1]]
    for reference in (None, "highs", "flow", solve_assignment(p), 4.0, reference_solution(p)):
        assert_optimal(p, best, reference=reference)
        with pytest.raises(AssertionError, match=r"objective 3 is below the optimum 4 .* by 1"):
            assert_optimal(p, worse, reference=reference)
    with pytest.raises(AssertionError, match=r"beats the claimed optimum 3\.5"):
        assert_optimal(p, best, reference=3.5)
    with pytest.raises(AssertionError, match="the reference is wrong"):
        assert_optimal(p, best, reference=Reference(False, float("nan"), None))
    greedy = solve_assignment(p, method="greedy")
    assert greedy.status is not Status.OPTIMAL
    with pytest.raises(AssertionError, match="`reference` is not a proven optimum"):
        assert_optimal(p, best, reference=greedy)
    with pytest.raises(ProblemTypeError, match="`reference` must be None, a backend name"):
        assert_optimal(p, best, reference=[4.0])  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="breaks"):
        assert_optimal(p, [[1, 0], [1, 0]])


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_docs_testing_example_runs() -> None:
    blocks = _doc_blocks()
    assert blocks
    for i, code in enumerate(blocks):
        namespace: dict = {}
        exec(compile(code, f"docs/testing.md[python block {i}]", "exec"), namespace)
        tests = [f for name, f in namespace.items() if name.startswith("test_")]
        assert tests, "the example defines no test"
        for test in tests:
            test()
