"""Crafted command-line inputs: each exits 2 with one line naming the input (issue 21, item 6).

Before the fix, ``--options`` nested 30,000 deep printed a traceback (exit 1), and a
non-UTF-8 ``--weights @FILE``, an ``.npz`` whose ``format`` is a 1-D array, a JSON
integer of more than 4,300 digits and an ``.npz`` with a non-``.npy`` member each ended
in ``internal error`` (exit 3).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flexassign.cli import main


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse errors exit through SystemExit
        return int(exc.code or 0)


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def problem_json(tmp_path: Path) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"fitness": [[1.0, 2.0], [0.5, 0.1]]}))
    return path


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        ('{"a": ' + "[" * 30_000 + "]" * 30_000 + "}", "nested too deeply"),
        ('{"a": ' + "9" * 5000 + "}", "4300 digits"),
    ],
    ids=["deep", "long-int"],
)
def test_crafted_options_exit_2(
    problem_json: Path, capsys: pytest.CaptureFixture[str], options: str, expect: str
) -> None:
    assert _run(["solve", str(problem_json), "--options", options]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--options" in line and expect in line


def test_weights_file_not_utf8_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "f.csv"
    csv.write_text("0.1,0.2\n0.3,0.4\n")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"\xff\xfe1,2")
    assert _run(["solve", str(csv), "--weights", f"@{weights}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "`--weights`" in line and "w.bin" in line and "not UTF-8" in line


def test_npz_with_an_array_format_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fmt.npz"
    np.savez(path, fitness=np.ones((2, 2)), format=np.array(["a", "b"]))
    assert _run(["solve", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "`format` must be" in line


def test_json_with_a_huge_integer_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"fitness": [[1, 2]], "capacity": ' + "9" * 5000 + "}")
    assert _run(["solve", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "`path`" in line


def test_npz_with_a_member_that_is_not_npy_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fitness.npy", _npy(np.ones((2, 2))))
        z.writestr("readme.txt", "hello")
    assert _run(["solve", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "'readme.txt'" in line
