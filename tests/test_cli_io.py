"""The CLI, the problem file format, and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flexassign import AssignmentProblem, InvalidProblemError, solve_assignment
from flexassign.cli import main
from flexassign.io import load_problem, save_problem

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "problems"


def test_solve_example_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", str(EXAMPLES / "small.json")]) == 0
    out = capsys.readouterr().out
    assert "status  : optimal (success=True)" in out
    assert "method  : flow" in out


def test_solve_json_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", str(EXAMPLES / "weighted_knapsack.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    res = solve_assignment(load_problem(EXAMPLES / "weighted_knapsack.json"))
    assert data["status"] == "optimal" and data["method"] == "highs"
    assert data["experts"] == [list(e) for e in res.experts]
    assert data["objective"] == pytest.approx(res.objective)


def test_greedy_exit_code_reports_violation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", str(EXAMPLES / "small.json"), "--method", "greedy"]) == 1
    assert "violates_constraints" in capsys.readouterr().out


def test_backends_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["flow"]["installed"] and not rows["flow"]["weighted"]
    assert rows["highs"]["knapsack"] and rows["highs"]["kind"] == "exact"


def test_bad_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"fitness": [[1, 2]], "capacity": -1}))
    assert main(["solve", str(bad)]) == 2
    assert "`capacity` must be >= 0 (client 0 is -1)" in capsys.readouterr().err
    bad.write_text(json.dumps({"fitnes": [[1]]}))
    with pytest.raises(InvalidProblemError, match="unknown key"):
        load_problem(bad)
    with pytest.raises(InvalidProblemError, match=r"`path` must end in \.json or \.npz"):
        load_problem(tmp_path / "p.csv")


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    p = AssignmentProblem.balanced(
        rng.normal(size=(6, 3)),
        capacity=[1, 2, 0, 3, 1, 2],
        tolerance=0.2,
        client_weight=rng.integers(1, 9, 6),
        expert_size=[1.0, 2.0, 3.0],
        client_budget=[1, 4, np.inf, 6, 3, 5],
        allowed=rng.random((6, 3)) > 0.2,
        load_penalty=0.7,
    )
    path = tmp_path / f"p{suffix}"
    save_problem(p, path)
    q = load_problem(path)
    for name in (
        "fitness",
        "capacity",
        "min_experts",
        "expert_min_load",
        "expert_max_load",
        "client_weight",
        "expert_size",
        "client_budget",
        "allowed",
    ):
        np.testing.assert_array_equal(getattr(p, name), getattr(q, name))
    assert q.load_penalty == p.load_penalty and q.fixed is None
    assert solve_assignment(p).objective == pytest.approx(solve_assignment(q).objective)


def test_import_is_light() -> None:
    code = (
        "import sys, flexassign; "
        "heavy = [m for m in ('ortools', 'highspy', 'torch', 'flwr', 'pyomo', 'pandas') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("order", [("ortools", "highspy"), ("highspy", "ortools")])
def test_ortools_and_highspy_load_together(order: tuple[str, str]) -> None:
    # highspy 1.15 and ortools' bundled HiGHS clash (or-tools#5246); pinned <1.15.
    imports = {
        "ortools": "from ortools.graph.python import min_cost_flow; from ortools.sat.python import cp_model",
        "highspy": "import highspy; highspy.Highs()",
    }
    code = "; ".join(imports[m] for m in order)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flexassign", "solve", str(EXAMPLES / "small.json"), "--show", "0"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "optimal" in out.stdout


def test_cli_tolerance_rebalances_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "weighted_knapsack.json"
    assert main(["solve", str(path), "--tolerance", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    base = load_problem(path)
    p = base.rebalanced(0.5)
    # every other argument survives; only the bounds are re-derived
    np.testing.assert_array_equal(p.client_weight, base.client_weight)
    np.testing.assert_array_equal(p.allowed, base.allowed)
    np.testing.assert_array_equal(p.client_budget, base.client_budget)
    assert p.expert_max_load[0] > base.expert_max_load[0]
    assert data["objective"] == pytest.approx(solve_assignment(p).objective)
    fresh = AssignmentProblem.balanced(
        base.fitness, base.capacity, tolerance=0.5, client_weight=base.client_weight,
        expert_size=base.expert_size, client_budget=base.client_budget, allowed=base.allowed,
    )
    np.testing.assert_array_equal(p.expert_min_load, fresh.expert_min_load)
    np.testing.assert_array_equal(p.expert_max_load, fresh.expert_max_load)
