"""``flexassign backends / warmup / export`` and ``-v``; every example in a ``--help``
text runs as written."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import logging
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from flexassign import _logging
from flexassign._cli_tools import WIDTH, backends_table
from flexassign.backends.registry import list_backends
from flexassign.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = str(ROOT / "examples" / "problems" / "small.json")


@pytest.fixture(autouse=True)
def _reset_logging() -> object:
    """Each test starts with flexassign's logger unconfigured (``-v`` configures it)."""
    logger = logging.getLogger("flexassign")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
    _logging._handler = None


def _help_texts() -> dict[str, str]:
    parser = build_parser()
    texts = {"flexassign": parser.format_help()}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        texts[name] = p.format_help()
    return texts


def _help_examples() -> list[str]:
    found = []
    for text in _help_texts().values():
        found += [m.strip() for m in re.findall(r"^ {2}(flexassign .+)$", text, re.M)]
    return found


def test_backends_table_fits_100_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines == backends_table()
    assert max(len(line) for line in lines) <= WIDTH, max(lines, key=len)
    starts = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert starts == ["name", *(b.name for b in list_backends())]
    # every word of each description is still there, only wrapped
    for b in list_backends():
        assert " ".join(b.description.split()) in " ".join(out.split())


def test_backends_json_lists_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [b.name for b in list_backends()]


def test_every_help_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = _help_examples()
    assert len(examples) >= 8, examples  # solve's, warmup's and export's
    shutil.copytree(ROOT / "examples" / "problems", tmp_path / "examples" / "problems")
    np.savetxt(tmp_path / "fitness.csv", np.random.default_rng(0).random((10, 4)), delimiter=",")
    monkeypatch.chdir(tmp_path)
    has_numba = importlib.util.find_spec("numba") is not None
    for line in examples:
        if line.startswith("flexassign warmup") and not has_numba:
            continue  # the `compiled` extra's command (its error is tested below)
        argv = []
        for word in shlex.split(line)[1:]:
            argv += sorted(glob.glob(word)) if "*" in word else [word]
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, (line, out.err)
    assert (tmp_path / "model.mps").stat().st_size > 0
    assert (tmp_path / "model.lp").read_text().lstrip().startswith("\\")


def test_export_writes_what_solve_solves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    highspy = pytest.importorskip("highspy")
    assert main(["solve", SMALL, "--json"]) == 0
    objective = json.loads(capsys.readouterr().out)["objective"]
    target = tmp_path / "m.lp"
    assert main(["export", SMALL, "-o", str(target), "--tolerance", "0.5"]) == 0
    assert main(["export", SMALL, "-o", str(tmp_path / "m.mps")]) == 0
    assert "wrote" in capsys.readouterr().out
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.readModel(str(tmp_path / "m.mps"))
    h.run()
    assert h.getInfo().objective_function_value == pytest.approx(objective, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "m.txt"], "`-o` must end in .mps or .lp"),
        (["-o", "m.lp", "--format", "mps"], "`--format mps` needs `-o` ending in .mps"),
        (["-o", "m.mps", "--capacity", "2"], "`--capacity` applies to CSV input only"),
    ],
)
def test_export_bad_flags_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", SMALL, *(str(tmp_path / a) if a.startswith("m.") else a for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_warmup_reports_what_it_did(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("numba")
    assert main(["warmup", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["action"] in ("compiled", "loaded", "ready")
    from flexassign.backends.flow import kernel_state

    assert kernel_state.is_loaded()
    assert main(["warmup"]) == 0  # now in memory
    assert "already loaded" in capsys.readouterr().out


def test_warmup_without_numba_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flexassign.backends.flow import kernel_state

    monkeypatch.setattr(kernel_state, "_numba_installed", lambda: False)
    assert main(["warmup"]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[compiled]" -c constraints.txt' in err


@pytest.mark.parametrize(
    "argv", [["-v", "solve", SMALL], ["solve", SMALL, "-v"], ["solve", "-vv", SMALL]]
)
def test_v_logs_the_backend_choice(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "flexassign.solve: INFO: auto chose flow for AssignmentProblem(12 clients" in err


def test_quiet_without_v(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", SMALL]) == 0
    assert capsys.readouterr().err == ""
