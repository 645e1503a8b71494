"""Adversarial inputs for the solver core: every claim the result makes must be true.

Each test reproduces a finding of the audit in issue 10 (large offsets, tiny and huge
scales, thread changes, option typos, settings out of range, writable results) and
fails on the code before the fix.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _problems import assert_agrees_with_reference, reference_solve, weighted_balanced

from flexassign import (
    AssignmentProblem,
    InvalidProblemError,
    ProblemTypeError,
    Status,
    available_backends,
    list_backends,
    solve_assignment,
    verify_assignment,
)
from flexassign.backends.registry import get_backend

EXACT = [b.name for b in list_backends() if b.exact and b.installed()]
MIP = [n for n in ("highs", "scipy", "cpsat", "pyomo") if n in available_backends()]
HIGHS_BASED = [n for n in ("highs", "scipy", "lp-round", "pyomo") if n in available_backends()]


def _offset_problem(offset: float) -> AssignmentProblem:
    rng = np.random.default_rng(0)
    fitness = offset + rng.random((30, 6))
    weight = rng.integers(1, 4, size=30).astype(float)
    return AssignmentProblem.balanced(
        fitness, capacity=2, tolerance=0.2, client_weight=weight, exact_capacity=True
    )


# ----------------------------------------------------------------------------- optimality
@pytest.mark.parametrize("method", MIP)
@pytest.mark.parametrize("offset", [1e5, 1e8])
def test_large_common_offset_does_not_fake_optimality(method: str, offset: float) -> None:
    # every client takes exactly 2 experts: the offset adds 60 * offset to every
    # assignment, so the optimum is the optimum of the offset-free problem
    p = _offset_problem(offset)
    res = solve_assignment(p, method=method, time_limit=60)
    shifted = p.replace(fitness=p.fitness - offset)
    ref = reference_solve(shifted)
    assert res.status is Status.OPTIMAL, res.message
    assert shifted.objective(res.x) == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
    # the bound is valid and tight on the part that can vary (up to the float64
    # rounding of the 6e9 offset, which the bound carries)
    assert res.bound is not None and res.bound >= res.objective
    assert res.bound - res.objective <= 1e-6 + 1e-13 * abs(res.objective)


@pytest.fixture(scope="module")
def tiny() -> tuple[AssignmentProblem, float]:
    """A 5 x 3 problem with fitness ~1e-9 and its brute-force optimum."""
    rng = np.random.default_rng(1)
    p = AssignmentProblem.balanced(rng.random((5, 3)) * 1e-9, capacity=2, tolerance=0.3)
    rows = [np.array(r, dtype=bool) for r in itertools.product([False, True], repeat=3)]
    rows = [r for r in rows if r.sum() <= 2]
    best = -np.inf
    for choice in itertools.product(rows, repeat=5):
        x = np.array(choice)
        loads = x.sum(axis=0)
        if np.all(loads >= p.expert_min_load) and np.all(loads <= p.expert_max_load):
            best = max(best, p.objective(x))
    return p, best


@pytest.mark.parametrize("method", EXACT)
def test_tiny_fitness_is_solved_exactly(method: str, tiny: tuple[AssignmentProblem, float]) -> None:
    p, best = tiny
    if get_backend(method).unsupported_reason(p) is not None:
        pytest.skip("structure not supported")
    res = solve_assignment(p, method=method)
    assert res.status is Status.OPTIMAL, res.message
    assert res.objective == pytest.approx(best, rel=1e-9, abs=0)


def _scale_cases() -> list:
    cases = []
    for scale in (1e-300, 1e-305, 1e290):
        for method in ("auto", *EXACT):
            cases.append(pytest.param(method, scale, id=f"{method}-{scale:g}"))
    return cases


@pytest.mark.parametrize(("method", "scale"), _scale_cases())
def test_extreme_scales_solve_or_match_the_unit_problem(method: str, scale: float) -> None:
    rng = np.random.default_rng(2)
    unit = AssignmentProblem.balanced(rng.random((12, 4)), capacity=2, tolerance=0.3)
    p = unit.replace(fitness=unit.fitness * scale)
    if method != "auto" and get_backend(method).unsupported_reason(p) is not None:
        pytest.skip("structure not supported")
    res = solve_assignment(p, method=method)  # flow used to raise OverflowError inside
    assert res.status is Status.OPTIMAL, res.message
    want = reference_solve(unit).objective
    assert unit.objective(res.x) == pytest.approx(want, rel=1e-9)
    assert np.isfinite(res.objective) and res.bound is not None and np.isfinite(res.bound)


@pytest.mark.parametrize("entry", [1.7e308, -1.7e308])
def test_overflowing_fitness_is_a_clear_error(entry: float) -> None:
    fitness = np.ones((5, 3))
    fitness[2, 1] = entry
    with pytest.raises(InvalidProblemError, match=r"^`fitness` is too large"):
        solve_assignment(fitness, capacity=2, tolerance=0.3)
    with pytest.raises(InvalidProblemError, match="`fitness`"):
        AssignmentProblem(np.full((5, 3), 1.7e308), capacity=2)
    # large but summable values are fine
    ok = solve_assignment(np.full((5, 3), 1e300), capacity=2, tolerance=0.3)
    assert ok.status is Status.OPTIMAL and np.isfinite(ok.objective)


def test_huge_load_penalty_is_a_clear_error() -> None:
    with pytest.raises(InvalidProblemError, match=r"^`load_penalty`"):
        AssignmentProblem(np.ones((3, 2)), capacity=1, expert_min_load=1, load_penalty=1e307)


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("method", HIGHS_BASED)
def test_changing_threads_never_breaks_later_solves(method: str) -> None:
    rng = np.random.default_rng(3)
    fitness = rng.random((20, 5))
    weight = rng.integers(1, 5, size=20).astype(float)
    results = [
        solve_assignment(
            fitness,
            capacity=2,
            tolerance=0.2,
            client_weight=weight,
            method=method,
            threads=threads,
        )
        for threads in (None, 2, 1, 3, None)
    ]
    for res in results:
        assert res.success, res.message
        assert res.objective == pytest.approx(results[0].objective, rel=1e-12)


def test_thread_changes_across_every_highs_backend_interleaved() -> None:
    p = weighted_balanced(4, (15, 4), capacity=2, tolerance=0.3, max_weight=4)
    want = solve_assignment(p, method="highs").objective
    for threads, method in zip(itertools.cycle([2, 1, 4]), HIGHS_BASED * 2, strict=False):
        res = solve_assignment(p, method=method, threads=threads)
        assert res.success, (method, threads, res.message)
        if get_backend(method).exact:
            assert res.objective == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- options
def test_unknown_options_list_the_valid_ones() -> None:
    f = np.random.default_rng(5).random((10, 3))
    w = np.arange(1.0, 11.0)
    with pytest.raises(
        InvalidProblemError,
        match=r"^unknown option `options\['warmstart'\]` for method 'highs'; "
        r"valid options: 'warm_start', 'highs_options'$",
    ):
        solve_assignment(
            f,
            capacity=1,
            tolerance=0.3,
            client_weight=w,
            method="highs",
            options={"warmstart": np.ones((10, 3))},
        )
    # auto checks one list at every size (issue 21 item 5): the error names 'auto'
    with pytest.raises(InvalidProblemError, match=r"`options\['bogus'\]` for method 'auto'"):
        solve_assignment(f, capacity=1, tolerance=0.3, options={"bogus": 1})
    # one name per concept: lp-round's candidate margin is prune_margin, as in flow
    with pytest.raises(InvalidProblemError, match=r"`options\['margin'\]`.*'prune_margin'"):
        solve_assignment(f, capacity=1, tolerance=0.3, method="lp-round", options={"margin": 2})
    with pytest.raises(InvalidProblemError, match="valid options: none"):
        solve_assignment(f, capacity=1, tolerance=0.3, method="scipy", options={"seed": 1})


@pytest.mark.parametrize(
    ("method", "options", "exc", "message"),
    [
        (
            "highs",
            {"highs_options": {"bogus": 1}},
            InvalidProblemError,
            r"^`options\['highs_options'\]\['bogus'\]` is not a HiGHS option$",
        ),
        (
            "highs",
            {"highs_options": {"mip_rel_gap": "x"}},
            InvalidProblemError,
            r"^`options\['highs_options'\]\['mip_rel_gap'\]`",
        ),
        (
            "highs",
            {"highs_options": ["threads"]},
            ProblemTypeError,
            r"^`options\['highs_options'\]` must be a mapping",
        ),
        (
            "highs",
            {"warm_start": np.ones((2, 2))},
            InvalidProblemError,
            r"^`options\['warm_start'\]` must be a 0/1 matrix of shape \(10, 3\)",
        ),
        (
            "highs",
            {"warm_start": np.full((10, 3), 2)},
            InvalidProblemError,
            r"^`options\['warm_start'\]` must hold only 0/1",
        ),
        (
            "cpsat",
            {"cpsat_parameters": {"nope": 1}},
            InvalidProblemError,
            r"^`options\['cpsat_parameters'\]\['nope'\]` is not a CP-SAT parameter",
        ),
        (
            "cpsat",
            {"cpsat_parameters": {"num_workers": "a"}},
            InvalidProblemError,
            r"^`options\['cpsat_parameters'\]\['num_workers'\]` has a bad value",
        ),
        (
            "lp-round",
            {"repair_time_limit": -1},
            InvalidProblemError,
            r"^`options\['repair_time_limit'\]` must be finite and > 0",
        ),
        (
            "lp-round",
            {"repair_extra": 1.5},
            ProblemTypeError,
            r"^`options\['repair_extra'\]` must be an integer; got float$",
        ),
        (
            "lp-round",
            {"repair_extra": -2},
            InvalidProblemError,
            r"^`options\['repair_extra'\]` must be >= -1; got -2$",
        ),
        (
            "lp-round",
            {"cost_shift": "no"},
            ProblemTypeError,
            r"^`options\['cost_shift'\]` must be True or False",
        ),
        (
            "lp-round",
            {"lp_presolve": "maybe"},
            InvalidProblemError,
            r"^`options\['lp_presolve'\]` must be 'off', 'on' or 'choose'",
        ),
        ("pyomo", {"solver": 3}, ProblemTypeError, r"^`options\['solver'\]`"),
        ("pyomo", {"customize": 1}, ProblemTypeError, r"^`options\['customize'\]`"),
    ],
)
def test_bad_option_values_name_the_option(
    method: str, options: dict, exc: type[Exception], message: str
) -> None:
    if method not in available_backends():
        pytest.skip(f"{method} not installed")
    f = np.random.default_rng(6).random((10, 3))
    with pytest.raises(exc, match=message):
        solve_assignment(
            f,
            capacity=1,
            tolerance=0.3,
            client_weight=np.arange(1.0, 11.0),
            method=method,
            options=options,
        )


def test_flow_option_values_name_the_option() -> None:
    f = np.random.default_rng(7).random((10, 3))
    with pytest.raises(
        InvalidProblemError, match=r"^`options\['prune_margin'\]` must be >= 1; got 0$"
    ):
        solve_assignment(f, capacity=1, method="flow", options={"prune_margin": 0})
    with pytest.raises(InvalidProblemError, match=r"^`options\['prices'\]` must be 3 finite"):
        solve_assignment(f, capacity=1, method="flow", options={"prices": [1.0, np.nan, 0.0]})


def test_every_builtin_backend_declares_its_options() -> None:
    for backend in list_backends():
        assert backend.options is not None, backend.name
        names = [o.name for o in backend.options]
        assert len(names) == len(set(names)), backend.name
        assert "margin" not in names  # one name per concept: prune_margin


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"verify_tol": float("nan")}, InvalidProblemError, r"^`verify_tol` must be in \[0, 0.5\]"),
        ({"verify_tol": -1}, InvalidProblemError, r"^`verify_tol` must be in \[0, 0.5\]"),
        ({"verify_tol": "1e-9"}, ProblemTypeError, r"^`verify_tol` must be a number"),
        ({"seed": 2**40}, InvalidProblemError, r"^`seed` must be in \[0, 2\*\*31 - 1\]"),
        ({"seed": -1}, InvalidProblemError, r"^`seed` must be in"),
        ({"threads": 10**6}, InvalidProblemError, r"^`threads` must be at most 1024"),
        ({"mip_gap": float("inf")}, InvalidProblemError, r"^`mip_gap` must be finite"),
        ({"time_limit": float("nan")}, InvalidProblemError, r"^`time_limit` must be finite"),
        ({"capacity": 2**63}, InvalidProblemError, r"^`capacity` must be <= 2\*\*53"),
        ({"min_experts": 2**60}, InvalidProblemError, r"^`min_experts` must be <= 2\*\*53"),
        ({"tolerance": 1e300}, InvalidProblemError, r"^`tolerance` must be <= 1e\+06"),
    ],
)
def test_settings_out_of_range_name_the_argument(
    kwargs: dict, exc: type[Exception], message: str
) -> None:
    args = {"capacity": 2, "tolerance": 0.2, **kwargs}
    with pytest.raises(exc, match=message):
        solve_assignment(np.random.default_rng(8).random((6, 3)), **args)


def test_nan_verify_tol_can_no_longer_hide_broken_bounds() -> None:
    # greedy top-k breaks the balance here; it must be reported whatever verify_tol
    f = np.tile([1.0, 0.0, 0.0], (6, 1))
    res = solve_assignment(f, capacity=1, tolerance=0.1, method="greedy", verify_tol=0.5)
    assert res.status is Status.VIOLATES_CONSTRAINTS and not res.success


# ----------------------------------------------------------------------------- results
def test_results_are_read_only() -> None:
    p = AssignmentProblem.balanced(
        np.random.default_rng(9).random((30, 5)), capacity=2, tolerance=0.3
    )
    res = solve_assignment(p, method="flow", options={"prune": True})
    for name in ("x", "loads"):
        arr = getattr(res, name)
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = arr[0]
    prices = res.stats.get("expert_prices")
    if prices is not None:
        with pytest.raises(ValueError, match="read-only"):
            prices[0] = 1.0
    # a caller's array handed to evaluate_assignment is copied, not frozen in place
    from flexassign import evaluate_assignment

    mine = res.x.copy()
    evaluate_assignment(p, mine)
    mine[0, 0] = not mine[0, 0]


def test_cpsat_has_a_default_time_limit_and_solves_the_offset_case() -> None:
    if "cpsat" not in available_backends():
        pytest.skip("ortools not installed")
    p = _offset_problem(1e8)  # ran past 150 s before the objective was normalised
    res = solve_assignment(p, method="cpsat")
    assert res.stats["time_limit"] == 60.0
    assert_agrees_with_reference(
        p.replace(fitness=p.fitness - 1e8),
        solve_assignment(p.replace(fitness=p.fitness - 1e8), method="cpsat"),
        exact=True,
    )
    assert res.status is Status.OPTIMAL
    assert res.x is not None and res.objective == pytest.approx(
        solve_assignment(p, method="highs").objective, rel=1e-15
    )


def test_backends_command_shows_each_backends_options(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from flexassign.cli import main

    assert main(["backends"]) == 0
    text = capsys.readouterr().out
    assert "prune_margin (int >= 1, default 4)" in text
    assert "warm_start (0/1 matrix (N, E))" in text
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert [o["name"] for o in rows["lp-round"]["options"]][:2] == ["prune", "prune_margin"]
    assert rows["scipy"]["options"] == []


def test_verifier_tolerances_are_checked_everywhere() -> None:
    from flexassign import evaluate_assignment

    p = AssignmentProblem(np.ones((2, 2)), capacity=1, expert_max_load=1)
    broken = [[1, 0], [1, 0]]
    with pytest.raises(InvalidProblemError, match=r"^`tol` must be a number in \[0, 0.5\]"):
        verify_assignment(p, broken, tol=float("nan"))
    with pytest.raises(InvalidProblemError, match=r"^`verify_tol` must be in \[0, 0.5\]"):
        evaluate_assignment(p, broken, verify_tol=float("nan"))
    assert evaluate_assignment(p, broken, verify_tol=0.4).status is Status.VIOLATES_CONSTRAINTS
