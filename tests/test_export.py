"""MPS and LP export: HiGHS reads the file back and finds the optimum ``solve_assignment`` finds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexassign import AssignmentProblem, solve_assignment
from flexassign.errors import InvalidProblemError
from flexassign.export import write_model

highspy = pytest.importorskip("highspy")


def _problem(kind: str, seed: int = 0) -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    n, e = 30, 6
    fitness = rng.normal(size=(n, e))
    if kind == "count":
        return AssignmentProblem.balanced(fitness, capacity=2, tolerance=0.1)
    if kind == "weighted":
        w = rng.integers(1, 4, n).astype(float)
        return AssignmentProblem.balanced(fitness, capacity=2, tolerance=0.1, client_weight=w)
    if kind == "knapsack":
        return AssignmentProblem.balanced(
            fitness,
            capacity=3,
            tolerance=0.5,
            expert_size=rng.integers(1, 4, e).astype(float),
            client_budget=rng.integers(3, 7, n).astype(float),
        )
    if kind == "soft":  # bounds no assignment meets: the penalty decides
        return AssignmentProblem(
            fitness,
            capacity=2,
            min_experts=2,
            expert_min_load=np.full(e, 12.0),
            expert_max_load=np.full(e, 12.0),
            load_penalty=0.4,
        )
    if kind == "masked":  # forbidden and fixed pairs, some clients with a minimum
        allowed = rng.random((n, e)) > 0.2
        fixed = np.zeros((n, e), dtype=bool)
        fixed[0, np.flatnonzero(allowed[0])[0]] = True
        return AssignmentProblem(
            fitness,
            capacity=2,
            min_experts=np.where(np.arange(n) % 3 == 0, 1, 0),
            expert_max_load=np.full(e, 12.0),
            allowed=allowed,
            fixed=fixed,
        )
    raise AssertionError(kind)


def _read_back(path: Path) -> tuple[float, dict[str, float]]:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    assert h.readModel(str(path)) == highspy.HighsStatus.kOk
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    values = h.getSolution().col_value
    names = [h.getColName(i)[1] for i in range(h.getNumCol())]
    return float(h.getInfo().objective_function_value), dict(zip(names, values, strict=True))


@pytest.mark.parametrize("fmt", ["mps", "lp"])
@pytest.mark.parametrize("kind", ["count", "weighted", "knapsack", "soft", "masked"])
def test_file_read_back_gives_the_same_optimum(kind: str, fmt: str, tmp_path: Path) -> None:
    problem = _problem(kind)
    res = solve_assignment(problem, method="highs")
    assert res.status.value == "optimal", res.message
    path = getattr(problem, f"to_{fmt}")(tmp_path / f"model.{fmt}")
    assert path == tmp_path / f"model.{fmt}"
    objective, values = _read_back(path)
    assert objective == pytest.approx(res.objective, rel=1e-9, abs=1e-9)
    # the file's solution, mapped back through the column names, is a valid assignment
    # with the same objective (penalty included)
    x = np.zeros(problem.shape, dtype=bool)
    for name, v in values.items():
        if name.startswith("x_") and v > 0.5:
            c, e = (int(part[1:]) for part in name[2:].split("_"))
            x[c, e] = True
    assert problem.objective(x) == pytest.approx(res.objective, rel=1e-9, abs=1e-9)


def test_model_names_and_sense(tmp_path: Path) -> None:
    problem = _problem("soft")
    text = problem.to_lp(tmp_path / "m.lp").read_text()
    assert text.split("\n", 2)[1].strip().lower().startswith("max")
    for name in ("x_c0_e0", "under_e0", "over_e5", "cap_c29", "load_e5"):
        assert name in text
    forbidden = _problem("masked")
    cols = {n for n in _read_back(forbidden.to_mps(tmp_path / "m.mps"))[1]}
    assert len(cols) == int(forbidden.allowed_mask.sum())
    c, e = np.argwhere(~forbidden.allowed_mask)[0]
    assert f"x_c{c}_e{e}" not in cols


def test_knapsack_rows_are_written_when_they_can_bind(tmp_path: Path) -> None:
    problem = _problem("knapsack")
    assert problem.knapsack_binding
    assert "mem_c0" in problem.to_lp(tmp_path / "m.lp").read_text()


@pytest.mark.parametrize(
    ("path", "fmt", "match"),
    [
        ("model.txt", None, "`path` must end in .mps or .lp"),
        ("model.lp", "mps", "`format` 'mps' needs a path ending in .mps"),
        ("model.mps", "xml", "`format` must be 'mps' or 'lp'"),
    ],
)
def test_bad_paths_and_formats_name_the_argument(
    path: str, fmt: str | None, match: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidProblemError, match=match):
        write_model(_problem("count"), tmp_path / path, format=fmt)


def test_missing_directory_and_wrong_problem_type(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        _problem("count").to_mps(tmp_path / "nope" / "m.mps")
    with pytest.raises(InvalidProblemError, match="`problem` must be an AssignmentProblem"):
        write_model(np.eye(2), tmp_path / "m.mps")  # type: ignore[arg-type]
