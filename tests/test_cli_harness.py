"""``fl-harness`` as a user runs it: one-line errors naming the flag (exit 2), checks
before any data is built, ``--version``, defaults in ``--help``, plots from ``run``,
and one line when the torch extra is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import flexassign
from fl_harness import cli

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--num-samples", "300", "--rounds", "2", "--clients", "6",
        "--fraction", "0.5", "--epochs", "1", "--quiet"]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as building data or running."""
    import fl_harness.comparison
    import fl_harness.experiment

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command ran although its flags are invalid")

    monkeypatch.setattr(fl_harness.experiment, "run_experiment", forbidden)
    monkeypatch.setattr(fl_harness.comparison, "compare", forbidden)
    monkeypatch.setattr(fl_harness.experiment, "load_dataset", forbidden)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--rounds", "0"], "`--rounds`"),
        (["run", "--clients", "0"], "`--clients`"),
        (["compare", "--experts", "0"], "`--experts`"),
        (["run", "--dropout", "1.0"], "`--dropout` must be in [0, 1); got 1.0"),
        (["run", "--fraction", "0"], "`--fraction`"),
        (["run", "--device-mix", "foo:1"], "argument --device-mix: unknown device class 'foo'"),
        (["run", "--device-mix", "tablet:x"], "argument --device-mix: share 'x' of 'tablet'"),
        (["run", "--device-mix", "tablet:-1"], "argument --device-mix: share of 'tablet' must be > 0"),
        (["run", "--dataset", "npz"], "`--dataset npz` needs `--path FILE.npz`"),
        (["run", "--dataset", "npz", "--path", "/nonexistent/x.npz"], "`--path`: no such file"),
        (["run", "--path", "x.npz"], "`--path` is only used with `--dataset npz`"),
        (["run", "--top-k", "9"], "`--top-k` must be in [1, --experts=8]; got 9"),
        (["run", "--experts", "4", "--top-k", "5"], "`--top-k` must be in [1, --experts=4]"),
        (["run", "--top-k", "0"], "`--top-k` must be in [1, --experts=8]; got 0"),
        (["run", "--planner-options", '{"bogus": 1}'],
         "`--planner-options` has unknown key(s) ['bogus']; valid: ['fitness',"),
        (["run", "--planner-options", '{"usage_decay": 5}'], "`--planner-options`: `usage_decay`"),
        (["run", "--planner-options", '{"fitness": {"nope": 1}}'], "`--planner-options`:"),
        (["run", "--planner-options", "{oops"], "argument --planner-options: not valid JSON"),
        (["run", "--planner-options", "[1]"], "argument --planner-options: must be a JSON object"),
        (["run", "--rounds", "x"], "argument --rounds: invalid int value: 'x'"),
        (["run", "--strategy", "best"], "argument --strategy: invalid choice: 'best'"),
        (["run", "--config", "/nonexistent/config.json"], "No such file or directory"),
        (["walk"], "invalid choice: 'walk'"),
    ],
)
def test_bad_value_exits_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    assert _exit_code(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert needle in line, line
    assert line.startswith("fl-harness")


def _exit_code(argv: list[str]) -> int | str | None:
    """``main``'s return value, or the code argparse exits with."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--rounds", "x"])
    assert exc.value.code == 2
    assert _one_error_line(capsys.readouterr().err).endswith("(see --help)")


def test_bad_config_file_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        no_run: None) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"rounds": 3, "typo": 1}))
    assert cli.main(["run", "--config", str(bad)]) == 2
    assert "`--config`" in _one_error_line(capsys.readouterr().err)
    bad.write_text("{not json")
    assert cli.main(["run", "--config", str(bad)]) == 2
    assert "`--config`" in _one_error_line(capsys.readouterr().err)


def test_subprocess_no_traceback() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv, needle in [(["run", "--dropout", "1.0"], "`--dropout`"),
                         (["compare", "--top-k", "9"], "`--top-k`")]:
        out = subprocess.run([sys.executable, "-m", "fl_harness", *argv], capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 2
        assert needle in _one_error_line(out.stderr)
        assert out.stdout == ""


def test_missing_torch_extra_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['torch'] = None  # as if the torch extra were not installed\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "fl_harness", "run", "--rounds", "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert line == ("fl-harness: error: needs the torch extra (module 'torch' is missing): "
                    'pip install -e ".[torch]" -c constraints.txt (from a clone)')
    # flexassign itself still works in that environment
    out = subprocess.run([sys.executable, "-m", "flexassign", "--version"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0


def test_extra_module_missing_at_run_time(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import fl_harness.experiment

    def needs_mnist1d(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'mnist1d'", name="mnist1d")

    monkeypatch.setattr(fl_harness.experiment, "run_experiment", needs_mnist1d)
    assert cli.main(["run", "--rounds", "2"]) == 2
    assert "(module 'mnist1d' is missing): pip install -e \".[torch]\" -c constraints.txt" in \
        _one_error_line(capsys.readouterr().err)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fl-harness {flexassign.__version__}"


@pytest.mark.parametrize("command", ["run", "compare"])
def test_help_shows_config_defaults(command: str, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fl_harness.config import DEFAULT_LR
    from fl_harness.experiment import ExperimentConfig

    monkeypatch.setenv("COLUMNS", "400")  # no line wrapping inside the values

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = ExperimentConfig()
    for flag, value in [("--rounds ROUNDS", d.rounds), ("--clients CLIENTS", d.num_clients),
                        ("--top-k TOP_K", d.top_k), ("--dataset {", d.dataset)]:
        start = text.index(flag, text.index("options:"))
        assert f"(default: {value})" in text[start:text.index(" --", start + 3)], flag
    assert "(default: low-end-phone:0.4,high-end-phone:0.4,tablet:0.2)" in text
    lr_help = "(default: per dataset: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items())
    assert lr_help in text
    for chunk in text.split(" --"):  # one option's help each: a default is said once
        assert chunk.lower().count("(default") <= 1, chunk
    if command == "compare":
        assert "strategies to compare (default: ['flex', 'greedy', 'random'])" in text


def test_help_defaults_do_not_override_config(tmp_path: Path) -> None:
    from fl_harness.experiment import ExperimentConfig

    saved = tmp_path / "config.json"
    ExperimentConfig(rounds=7, num_clients=12).save(saved)
    args = cli.build_parser().parse_args(["run", "--config", str(saved), "--top-k", "3"])
    cfg = cli.config_from_args(args)
    assert (cfg.rounds, cfg.num_clients, cfg.top_k) == (7, 12, 3)


def test_run_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli.main(["run", *TINY, "--out", str(out)]) == 0
    for name in ("result.json", "rounds.csv", "accuracy.png", "utilization_cv.png",
                 "expert_utilization.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy.png" in capsys.readouterr().out
    bare = tmp_path / "bare"
    assert cli.main(["run", *TINY, "--out", str(bare), "--no-plots"]) == 0
    assert (bare / "result.json").exists() and not list(bare.glob("*.png"))


def test_bad_npz_dataset_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      no_run: None) -> None:
    import numpy as np

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((4, 2)))
    for path, needle in [(empty, "`--path`"), (partial, "lacks arrays")]:
        assert cli.main(["run", "--dataset", "npz", "--path", str(path)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"fl-harness: error: `--path` {str(path)!r}:") and needle in line
