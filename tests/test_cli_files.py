"""Problem files are read strictly and written honouring the umask; CSV fitness input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flexassign import AssignmentProblem, InvalidProblemError, ProblemTypeError
from flexassign.io import (
    load_problem,
    problem_from_dict,
    problem_to_dict,
    read_fitness_csv,
    save_problem,
)

FIT = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"fitness": None}, InvalidProblemError, "required key `fitness`"),
        ({"capacity": 1}, InvalidProblemError, "required key `fitness`"),
        ({"fitness": FIT, "exact_capacity": "false", "tolerance": 0.1}, ProblemTypeError,
         r"`exact_capacity` must be a boolean \(true or false\); got str"),
        ({"fitness": FIT, "exact_capacity": 0, "tolerance": 0.1}, ProblemTypeError,
         "`exact_capacity` must be a boolean"),
        ({"fitness": FIT, "format": "flexassign-result"}, InvalidProblemError,
         "`format` must be 'flexassign-problem'; got 'flexassign-result'"),
        ({"fitness": FIT, "version": 2}, InvalidProblemError, r"unsupported `version` 2"),
        ({"fitness": FIT, "version": "1"}, ProblemTypeError, "`version` must be an integer"),
        ({"fitness": FIT, "version": True}, ProblemTypeError, "`version` must be an integer"),
        ({"fitness": [[1, 2], [3]]}, InvalidProblemError, "`fitness` must be rectangular"),
        ({"fitness": [[1, True]]}, ProblemTypeError, "`fitness` must hold numbers; got a boolean"),
        ({"fitness": [[1, "2"]]}, ProblemTypeError, "`fitness` must hold numbers; got the string"),
        ({"fitness": [[1, None]]}, ProblemTypeError, "`fitness` must hold numbers; got null"),
        ({"fitness": [[[1]]]}, InvalidProblemError, "`fitness` is nested too deeply"),
        ({"fitness": [[1, {"a": 1}]]}, ProblemTypeError, "`fitness` must hold numbers; got dict"),
        ({"fitness": FIT, "capacity": True}, ProblemTypeError, "`capacity` must hold numbers"),
        ({"fitness": FIT, "capacity": [1, 2**70, 1]}, InvalidProblemError,
         "`capacity` must be rectangular numbers"),
        ({"fitness": FIT, "expert_min_load": "inf"}, ProblemTypeError,
         "`expert_min_load` must hold numbers; got the string 'inf'"),
        ({"fitness": FIT, "expert_max_load": "lots"}, ProblemTypeError,
         r"only \"inf\" is allowed"),
        ({"fitness": FIT, "tolerance": True}, ProblemTypeError, "`tolerance` must be a number"),
        ({"fitness": FIT, "tolerance": "0.1"}, ProblemTypeError, "`tolerance` must be a number"),
        ({"fitness": FIT, "load_penalty": [1]}, ProblemTypeError, "`load_penalty` must be a number"),
        ({"fitness": FIT, "exact_capacity": True}, InvalidProblemError,
         "only meaningful with `tolerance`"),
        ({"fitness": FIT, "Capacity": 1}, InvalidProblemError, r"unknown key\(s\) \['Capacity'\]"),
        ([FIT], ProblemTypeError, "must hold a mapping; got list"),
    ],
)
def test_strict_reader_names_the_key(data: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        problem_from_dict(data)


def test_valid_values_still_read() -> None:
    p = problem_from_dict(
        {"format": "flexassign-problem", "version": 1, "fitness": FIT, "capacity": [1, 1, 2],
         "expert_max_load": [2, "inf"], "allowed": [[True, 1], [1, 1], [0, True]],
         "client_budget": ["Infinity", 1, 2], "expert_size": [1, 1], "min_experts": None}
    )
    assert p.expert_max_load.tolist() == [2.0, np.inf]
    assert p.allowed is not None and p.allowed.tolist() == [[True, True], [True, True],
                                                             [False, True]]
    assert p.client_budget is not None and p.client_budget[0] == np.inf
    exact = problem_from_dict({"fitness": FIT, "capacity": 1, "tolerance": 0.0,
                               "exact_capacity": True})
    assert exact.min_experts.tolist() == [1, 1, 1]
    loose = problem_from_dict({"fitness": FIT, "capacity": 1, "tolerance": 0.0,
                               "exact_capacity": False})
    assert loose.min_experts.tolist() == [0, 0, 0]


def test_written_files_declare_format_and_version(tmp_path: Path) -> None:
    p = AssignmentProblem(np.array(FIT), capacity=1)
    d = problem_to_dict(p)
    assert d["format"] == "flexassign-problem" and d["version"] == 1
    save_problem(p, tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as npz:
        assert str(npz["format"]) == "flexassign-problem" and int(npz["version"]) == 1
    np.testing.assert_array_equal(load_problem(tmp_path / "p.npz").fitness, p.fitness)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidProblemError, match=r"`path` is not UTF-8 text \(byte 0xff at offset"):
        load_problem(_write(tmp_path / "a.json", b'{"fitness": [[1]], "x": "\xff"}'))
    with pytest.raises(InvalidProblemError, match=r"`path` is not valid JSON: .*line 1, column"):
        load_problem(_write(tmp_path / "b.json", b'{"fitness": [[1]'))
    with pytest.raises(InvalidProblemError, match=r"`path` is not valid JSON"):
        load_problem(_write(tmp_path / "c.json", b""))
    with pytest.raises(InvalidProblemError, match="`path` is nested too deeply"):
        load_problem(_write(tmp_path / "d.json", b"[" * 100_000 + b"]" * 100_000))
    for name, content in [("e.npz", b""), ("f.npz", b"not a zip at all"),
                          ("g.npz", b"PK\x03\x04 truncated")]:
        with pytest.raises(InvalidProblemError, match=r"`path` is not an \.npz archive"):
            load_problem(_write(tmp_path / name, content))
    with pytest.raises(ProblemTypeError, match=r"`path` must be a str or os\.PathLike; got int"):
        load_problem(3)  # type: ignore[arg-type]


def test_npz_contents_are_checked(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", fitness=np.array([[1.0, None]], dtype=object))
    with pytest.raises(ProblemTypeError, match="`fitness` is an object array"):
        load_problem(tmp_path / "obj.npz")
    np.savez(tmp_path / "s.npz", fitness=np.array([["a", "b"]]))
    with pytest.raises(ProblemTypeError, match="`fitness` must hold numbers; got dtype <U1"):
        load_problem(tmp_path / "s.npz")
    np.savez(tmp_path / "b.npz", fitness=np.ones((2, 2)), capacity=np.array([True, False]))
    with pytest.raises(ProblemTypeError, match="`capacity` must hold numbers; got dtype bool"):
        load_problem(tmp_path / "b.npz")
    np.savez(tmp_path / "v.npz", fitness=np.ones((2, 2)), version=np.array(7))
    with pytest.raises(InvalidProblemError, match="unsupported `version` 7"):
        load_problem(tmp_path / "v.npz")
    np.savez(tmp_path / "x.npz", fitness=np.ones((2, 2)), exact_capacity=np.array("yes"),
             tolerance=np.array(0.1))
    with pytest.raises(ProblemTypeError, match="`exact_capacity` must be a boolean"):
        load_problem(tmp_path / "x.npz")
    np.savez(tmp_path / "ok.npz", fitness=np.ones((2, 2)), exact_capacity=np.array(True),
             tolerance=np.array(0.0), capacity=np.array(1))
    assert load_problem(tmp_path / "ok.npz").min_experts.tolist() == [1, 1]


@pytest.mark.parametrize("suffix", [".json", ".npz"])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask(tmp_path: Path, suffix: str, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = tmp_path / f"p{suffix}"
        save_problem(AssignmentProblem(np.array(FIT)), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [f.name for f in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_save_problem_errors_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidProblemError, match=r"`path`: folder .* does not exist"):
        save_problem(AssignmentProblem(np.array(FIT)), tmp_path / "missing" / "p.json")
    with pytest.raises(ProblemTypeError, match="`problem` must be an AssignmentProblem"):
        save_problem(np.array(FIT), tmp_path / "p.json")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize(
    ("text", "clients", "experts"),
    [
        ("0.9,0.1\n0.2,0.8\n", None, None),
        ("e0,e1\n0.9,0.1\n0.2,0.8\n", None, ("e0", "e1")),
        (",e0,e1\n0,0.9,0.1\n1,0.2,0.8\n", ("0", "1"), ("e0", "e1")),  # pandas to_csv()
        ("client,e0,e1\nalice,0.9,0.1\nbob,0.2,0.8\n", ("alice", "bob"), ("e0", "e1")),
        ("alice,0.9,0.1\n\nbob, 0.2 ,0.8\n", ("alice", "bob"), None),
    ],
)
def test_csv_labels_are_detected(
    tmp_path: Path, text: str, clients: tuple[str, ...] | None, experts: tuple[str, ...] | None
) -> None:
    lf = read_fitness_csv(_write(tmp_path / "f.csv", text.encode()))
    np.testing.assert_array_equal(lf.fitness, [[0.9, 0.1], [0.2, 0.8]])
    assert lf.clients == clients and lf.experts == experts


def test_csv_header_and_index_can_be_forced(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.csv", b"10,20\n7,0.5\n8,0.25\n")
    assert read_fitness_csv(path).fitness.shape == (3, 2)
    lf = read_fitness_csv(path, header=True, index=True)
    assert lf.experts == ("20",) and lf.clients == ("7", "8")
    np.testing.assert_array_equal(lf.fitness, [[0.5], [0.25]])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "`path` holds no rows"),
        (b"a,b\n", "`path` has a header but no data rows"),
        (b"1,2\n3\n", r"`path` line 2: 1 cells where the first row has 2"),
        (b"1,2\n3,x\n", r"`fitness` at line 2, column 2: 'x' is not a number"),
        (b"e0,e1\n1,2\n3,\n", r"`fitness` at line 3, column 2: '' is not a number"),
        (b"c\nalice\n", "`path` has no expert columns"),
        (b"1,2\n\xff,3\n", "`path` is not UTF-8 text"),
        (b"a,1,2\nb,3,4\na,5,6\n", "`path`: the client label 'a' appears twice"),
        (b",x,x\na,1,2\n", "`path`: the expert label 'x' appears twice"),
    ],
)
def test_csv_errors_name_the_cell(tmp_path: Path, content: bytes, match: str) -> None:
    with pytest.raises(InvalidProblemError, match=match):
        read_fitness_csv(_write(tmp_path / "f.csv", content))


def test_docs_list_every_key_the_reader_accepts() -> None:
    from flexassign import io

    text = (Path(__file__).resolve().parents[1] / "docs" / "file-format.md").read_text()
    for key in io._KNOWN:
        assert f"`{key}`" in text, key
    json.dumps(problem_to_dict(AssignmentProblem(np.array(FIT))))  # strict JSON
