"""Progress bars: tqdm on a terminal, plain rate-limited lines otherwise."""

from __future__ import annotations

import io
import sys

import pytest

from flexassign._cli import Progress, progress


def _run(bar: Progress, steps: int) -> None:
    with bar:
        for _ in range(steps):
            bar.update()


def test_plain_lines_when_not_a_tty() -> None:
    buf = io.StringIO()  # isatty() is False
    _run(Progress(4, "rounds", stream=buf, interval=0.0), 4)
    lines = buf.getvalue().splitlines()
    # a line per step while running (interval 0), then the final one; never the 4/4 twice
    assert [ln.split(" (")[0] for ln in lines] == [
        "rounds: 1/4", "rounds: 2/4", "rounds: 3/4", "rounds: 4/4"]
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()


def test_plain_lines_are_rate_limited() -> None:
    buf = io.StringIO()
    _run(Progress(1000, "runs", stream=buf, interval=3600.0), 1000)
    assert [ln.split(" (")[0] for ln in buf.getvalue().splitlines()] == ["runs: 1000/1000"]
    inner = io.StringIO()
    _run(Progress(1000, "flex s0", stream=inner, interval=3600.0, leave=False), 1000)
    assert inner.getvalue() == ""  # an inner bar that is not kept adds nothing to a log


def test_postfix_in_plain_lines() -> None:
    buf = io.StringIO()
    with Progress(2, "flex s0", stream=buf, interval=3600.0) as bar:
        bar.update()
        bar.set_postfix(acc="0.500", cv="0.100")
        bar.update()
    assert buf.getvalue().rstrip().endswith("acc=0.500, cv=0.100")


def test_tqdm_on_a_tty() -> None:
    pytest.importorskip("tqdm")
    buf = io.StringIO()
    bar = Progress(3, "rounds", stream=buf, tty=True)
    _run(bar, 3)
    assert bar._bar is not None and "\r" in buf.getvalue() and "3/3" in buf.getvalue()


def test_tty_without_tqdm_falls_back_to_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    buf = io.StringIO()
    bar = Progress(2, "rounds", stream=buf, tty=True, interval=3600.0)
    _run(bar, 2)
    assert bar._bar is None and buf.getvalue().startswith("rounds: 2/2")


def test_disabled_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress(5, "x", enabled=False)
    _run(bar, 5)
    assert bar.n == 5
    assert capsys.readouterr() == ("", "")


@pytest.mark.torch
def test_compare_progress_in_a_log_has_no_escape_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("torch")
    from fl_harness import ExperimentConfig, compare

    cfg = ExperimentConfig(dataset="synthetic", num_samples=300, rounds=2, num_clients=6,
                           client_fraction=0.5, local_epochs=1)
    compare(cfg, strategies=["flex", "random"], seeds=[0], progress=True)
    err = capsys.readouterr().err  # captured: not a TTY, as in CI logs
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines()[-1].startswith("runs: 2/2 (")
