"""``flexassign`` as a user runs it: exit codes, one-line errors, several files, CSV
input, closed pipes, ``--version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flexassign
from flexassign import solve_assignment
from flexassign.cli import main
from flexassign.io import load_problem

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "problems").glob("*.json"))
SMALL = str(ROOT / "examples" / "problems" / "small.json")


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FLEXASSIGN_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "flexassign", *args], capture_output=True, text=True,
        env=env, cwd=kwargs.pop("cwd", None), timeout=120,  # type: ignore[arg-type]
    )


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "null.json": (b'{"fitness": null}', "required key `fitness`"),
    "latin1.json": (b'{"fitness": [[1]], "c": "caf\xe9"}', "`path` is not UTF-8 text"),
    "trunc.json": (b'{"fitness": [[1]', "`path` is not valid JSON"),
    "empty.npz": (b"", "`path` is not an .npz archive"),
    "text.npz": (b"fitness = [[1]]", "`path` is not an .npz archive"),
    "exact.json": (b'{"fitness": [[1, 2]], "tolerance": 0.1, "exact_capacity": "false"}',
                   "`exact_capacity` must be a boolean"),
    "format.json": (b'{"fitness": [[1]], "format": "csv"}', "`format` must be"),
    "version.json": (b'{"fitness": [[1]], "version": 99}', "unsupported `version` 99"),
    "cap.json": (b'{"fitness": [[1, 2]], "capacity": -1}', "`capacity` must be >= 0"),
    "nan.json": (b'{"fitness": [[1, NaN]]}', "`fitness` must be finite"),
    "list.json": (b"[[1, 2]]", "must hold a mapping"),
    "bad.csv": (b"1,2\n3,oops\n", "`fitness` at line 2, column 2: 'oops' is not a number"),
    "bad.txt": (b"{}", "`path` must end in .json or .npz"),
}


def _bad(tmp_path: Path, name: str) -> str:
    content, _ = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = _bad(tmp_path, name)
    assert main(["solve", path]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert line.startswith(f"flexassign: error: {path}: ")
    assert BAD_FILES[name][1] in line
    assert captured.out == ""


def test_object_array_npz_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, fitness=np.array([[1.0, None]], dtype=object))
    assert main(["solve", str(path)]) == 2
    assert "`fitness` is an object array" in _one_error_line(capsys.readouterr().err)


def test_every_bad_file_in_a_subprocess_no_traceback(tmp_path: Path) -> None:
    paths = [_bad(tmp_path, name) for name in sorted(BAD_FILES)]
    out = _cli("solve", *paths, SMALL)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    errors = out.stderr.strip().splitlines()
    assert len(errors) == len(paths)  # one line per bad file
    for path, line in zip(paths, errors, strict=True):
        assert line.startswith(f"flexassign: error: {path}: ")
    rows = [r for r in out.stdout.splitlines() if r.startswith(str(tmp_path))]
    assert len(rows) == len(paths) and all("bad input" in r for r in rows)
    assert f"{len(paths) + 1} files: 1 solved, 0 without a valid assignment, {len(paths)} bad input" in out.stdout


def test_missing_file_and_bad_flags_exit_2(tmp_path: Path) -> None:
    cases = [
        (["solve", str(tmp_path / "nope.json")], "No such file or directory"),
        (["solve", SMALL, "--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["solve", SMALL, "--method", "nosuch"], "unknown `--method` 'nosuch'"),
        (["solve", SMALL, "--time-limit", "-1"], "`--time-limit` must be finite and > 0"),
        (["solve", SMALL, "--mip-gap", "-1"], "`--mip-gap` must be"),
        (["solve", SMALL, "--threads", "0"], "`--threads` must be"),
        (["solve", SMALL, "--tolerance", "nan"], "`--tolerance` must be finite"),
        (["solve", SMALL, "--show", "-1"], "`--show` must be >= 0"),
        (["solve", SMALL, "--capacity", "2"], "`--capacity` applies to CSV input only"),
        (["solve", SMALL, "--options", "{bad"], "argument --options: not valid JSON"),
        (["solve", SMALL, "--options", "[1]"], "argument --options: must be a JSON object"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: command"),
    ]
    for argv, needle in cases:
        out = _cli(*argv)
        assert out.returncode == 2, (argv, out.stderr)
        assert needle in _one_error_line(out.stderr), (argv, out.stderr)


def test_no_valid_assignment_keeps_exit_1(tmp_path: Path) -> None:
    infeasible = tmp_path / "inf.json"
    infeasible.write_text(json.dumps({"fitness": [[1, 2], [3, 4]], "capacity": 1,
                                      "min_experts": 1, "expert_max_load": 0}))
    out = _cli("solve", str(infeasible))
    assert out.returncode == 1 and out.stderr == ""
    assert "status  : infeasible" in out.stdout


def test_several_files_summary_table_and_worst_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    infeasible = tmp_path / "inf.json"
    infeasible.write_text(json.dumps({"fitness": [[1, 2]], "min_experts": 1,
                                      "expert_max_load": 0}))
    paths = [str(p) for p in EXAMPLES]
    assert main(["solve", *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["file", "shape", "method"]
    for p in EXAMPLES:
        row = next(r for r in out if r.startswith(str(p)))
        objective = float(row.split()[4])
        assert objective == pytest.approx(solve_assignment(load_problem(p)).objective, rel=1e-7)
        assert "optimal" in row
    assert main(["solve", *paths, str(infeasible)]) == 1
    assert main(["solve", str(infeasible), _bad(tmp_path, "null.json"), *paths]) == 2


def test_several_files_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad(tmp_path, "cap.json")
    assert main(["solve", SMALL, bad, "--json"]) == 2
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert [d["file"] for d in data] == [SMALL, bad]
    assert data[0]["exit_code"] == 0 and data[0]["result"]["status"] == "optimal"
    assert data[1]["exit_code"] == 2 and data[1]["result"] is None
    assert "`capacity` must be >= 0" in data[1]["error"]


def test_csv_input_with_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    fit = rng.random((8, 4)).round(3)
    path = tmp_path / "fit.csv"
    lines = ["," + ",".join(f"exp{e}" for e in range(4))]
    lines += [f"c{c}," + ",".join(map(str, row)) for c, row in enumerate(fit)]
    path.write_text("\n".join(lines) + "\n")
    assert main(["solve", str(path), "--capacity", "2", "--tolerance", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ref = solve_assignment(fit, capacity=2, tolerance=0.0)
    assert data["objective"] == pytest.approx(ref.objective)
    assert data["labels"] == {"clients": [f"c{c}" for c in range(8)],
                              "experts": [f"exp{e}" for e in range(4)]}
    assert data["assignment"] == {f"c{c}": [f"exp{e}" for e in exp]
                                  for c, exp in enumerate(data["experts"])}
    assert data["loads"] == [4.0] * 4  # tolerance 0: 8 clients x 2 experts / 4
    assert main(["solve", str(path), "--capacity", "2", "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "client c0: experts ['exp" in out and "... 5 more clients" in out


def test_csv_flags_min_experts_weights_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit = np.array([[5.0, 0.0, 0.0], [4.0, 0.0, 0.0], [3.0, 0.0, 0.0], [-1.0, -2.0, -3.0]])
    path = tmp_path / "f.csv"
    np.savetxt(path, fit, delimiter=",")
    assert main(["solve", str(path), "--json"]) == 0  # capacity 1, no bounds
    d = json.loads(capsys.readouterr().out)
    assert d["experts"] == [[0], [0], [0], []] and "labels" not in d
    assert main(["solve", str(path), "--min-experts", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experts"][3] == [0]
    w = tmp_path / "w.txt"
    w.write_text("1\n2\n3\n4\n")
    for weights in ("1,2,3,4", f"@{w}"):
        assert main(["solve", str(path), "--weights", weights, "--tolerance", "0.5",
                     "--exact-capacity", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        ref = solve_assignment(fit, capacity=1, tolerance=0.5, client_weight=[1, 2, 3, 4],
                               exact_capacity=True)
        assert d["objective"] == pytest.approx(ref.objective)
        assert all(len(e) == 1 for e in d["experts"])
    assert main(["solve", str(path), "--weights", "1,2"]) == 2
    assert "`--weights` must give one number per client (4); got 2" in capsys.readouterr().err
    assert main(["solve", str(path), "--weights", "1,a,1,1"]) == 2
    assert "`--weights`: 'a' is not a number" in capsys.readouterr().err
    assert main(["solve", str(path), "--exact-capacity"]) == 2
    assert "`--exact-capacity` needs `--tolerance`" in capsys.readouterr().err
    assert main(["solve", str(path), "--capacity", "-1"]) == 2
    assert "`--capacity` must be >= 0" in capsys.readouterr().err
    # values that only the problem can judge are reported under their flags too
    assert main(["solve", str(path), "--capacity", "1", "--min-experts", "2"]) == 2
    assert "`--min-experts` (2 for client 0) exceeds `--capacity` (1)" in capsys.readouterr().err
    assert main(["solve", str(path), "--weights", "0,1,1,1"]) == 2
    assert "`--weights` must be > 0 (client 0 is 0)" in capsys.readouterr().err


@pytest.mark.parametrize("read_first_line", [True, False])
def test_closed_pipe_exits_quietly(tmp_path: Path, read_first_line: bool) -> None:
    big = tmp_path / "big.json"
    rng = np.random.default_rng(0)
    # ~280 kB of --json output: far more than a pipe buffer, so the writer meets the
    # closed pipe whatever the timing
    big.write_text(json.dumps({"fitness": rng.random((20000, 4)).round(3).tolist()}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexassign", "solve", str(big), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0,
    )
    assert proc.stdout is not None and proc.stderr is not None
    if read_first_line:  # like `| head -1`
        assert proc.stdout.read(2) == b"{\n"
    proc.stdout.close()  # like `| true`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == ""  # no BrokenPipeError, no "Exception ignored" at shutdown
    assert proc.returncode == 141


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"flexassign {flexassign.__version__}"
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"flexassign {flexassign.__version__}"


def test_help_shows_defaults() -> None:
    out = _cli("solve", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--method METHOD backend name or 'auto' (see `flexassign backends`) (default: auto)" in text
    assert "(default: 20)" in text and "(default: 0)" in text


def test_internal_error_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import flexassign.cli as cli

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.delenv("FLEXASSIGN_TRACEBACK", raising=False)
    monkeypatch.setattr(cli, "solve_assignment", boom)
    assert main(["solve", SMALL]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert line == ("flexassign: error: internal error: RuntimeError: kaboom second line "
                    "(set FLEXASSIGN_TRACEBACK=1 for the traceback)")
    monkeypatch.setenv("FLEXASSIGN_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="kaboom"):
        main(["solve", SMALL])


def test_example_csv_from_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "problems" / "fitness.csv"
    assert main(["solve", str(path), "--capacity", "2", "--tolerance", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "client hospital-a: experts ['neuro', 'onco']" in out  # as docs/file-format.md says
    assert "loads   : min 5  max 5" in out


def test_internal_error_in_one_of_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import flexassign.cli as cli

    real = cli.solve_assignment

    def flaky(problem: object, **kwargs: object) -> object:
        if getattr(problem, "n_clients", 0) == 2:
            raise RuntimeError("kaboom")
        return real(problem, **kwargs)  # type: ignore[arg-type]

    two = tmp_path / "two.json"
    two.write_text(json.dumps({"fitness": [[1, 2], [3, 4]]}))
    monkeypatch.delenv("FLEXASSIGN_TRACEBACK", raising=False)
    monkeypatch.setattr(cli, "solve_assignment", flaky)
    assert main(["solve", str(two), SMALL]) == 3  # the worst code; the other file still solved
    captured = capsys.readouterr()
    assert _one_error_line(captured.err) == (
        f"flexassign: error: {two}: internal error: RuntimeError: kaboom")
    assert "1 solved, 0 without a valid assignment, 0 bad input, 1 internal error" in captured.out


def test_json_output_is_strict_json(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    import flexassign.cli as cli

    real = cli.solve_assignment

    def infinite_bound(problem: object, **kwargs: object) -> object:
        return dataclasses.replace(real(problem, **kwargs), bound=float("inf"))  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "solve_assignment", infinite_bound)
    assert main(["solve", SMALL, "--json"]) == 0
    text = capsys.readouterr().out
    assert "Infinity" not in text and json.loads(text)["bound"] is None
