"""flexassign's logging: quiet by default, one logger tree, and the events it promises
(backend choice, fallbacks, time-limit overruns, dropouts)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flexassign.solve as solve_module
from flexassign import AssignmentProblem, solve_assignment
from flexassign import _logging as flog
from flexassign.alignment import Planner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore() -> object:
    logger = logging.getLogger("flexassign")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
    flog._handler = None


def test_importing_configures_nothing_and_prints_nothing() -> None:
    code = (
        "import logging, numpy as np, flexassign; "
        "lg = logging.getLogger('flexassign'); "
        "print(lg.handlers, lg.level, logging.getLogger().handlers); "
        "flexassign.solve_assignment(np.eye(3), capacity=1)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[] 0 []"
    assert out.stderr == ""  # INFO records (auto's choice) stay quiet


def test_get_logger_puts_every_name_under_flexassign() -> None:
    assert flog.get_logger("flexassign.solve").name == "flexassign.solve"
    assert flog.get_logger("fl_harness.cli").name == "flexassign.fl_harness.cli"
    with pytest.raises(TypeError, match="`name` must be a non-empty module name"):
        flog.get_logger("")
    with pytest.raises(ValueError, match="`verbosity` must be an int >= 0"):
        flog.verbosity_level(-1)


def test_configure_sets_level_and_replaces_its_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    flog.configure(1, stream=first)
    logger = flog.configure(2, stream=second)
    assert logger.level == logging.DEBUG
    assert len(logger.handlers) == 1
    logging.getLogger("flexassign.test").debug("hello %d", 7)
    assert first.getvalue() == ""
    assert second.getvalue() == "flexassign.test: DEBUG: hello 7\n"


def test_auto_logs_its_choice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flexassign")
    weighted = AssignmentProblem.balanced(
        np.random.default_rng(0).random((20, 4)), capacity=2, tolerance=0.2,
        client_weight=np.arange(1, 21, dtype=float),
    )
    res = solve_assignment(weighted)
    records = [r for r in caplog.records if r.name == "flexassign.solve"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert records[0].getMessage() == f"auto chose {res.method} for {weighted!r}"


def test_a_time_limit_overrun_is_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("highspy")
    monkeypatch.setattr(solve_module, "overrun_slack", lambda limit: -1e9)  # any time is over
    p = AssignmentProblem.balanced(np.random.default_rng(1).random((30, 4)), capacity=1,
                                   tolerance=0.2)
    res = solve_assignment(p, method="highs", time_limit=30.0)
    assert "time_limit_exceeded" in res.stats
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "flexassign.solve"
    assert warnings[0].getMessage() == f"highs: {res.message}"


def test_dropouts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flexassign.alignment")
    planner = Planner(num_experts=4, seed=0)
    for cid in ("a", "b"):
        planner.set_capacity(cid, 1)
    planner.plan_round(["a", "b"])
    planner.end_round()  # neither reported
    messages = [r.getMessage() for r in caplog.records if r.name == "flexassign.alignment.registry"]
    assert messages == [
        "client 'a' sent no feedback this round (dropout 1)",
        "client 'b' sent no feedback this round (dropout 1)",
    ]


def test_a_planner_fallback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from flexassign.alignment import PlannerConfig
    from flexassign.alignment.policies import solve as policy_solve

    caplog.set_level(logging.INFO, logger="flexassign")
    weighted = AssignmentProblem(np.eye(3), capacity=1, client_weight=[1.0, 2.0, 3.0])
    config = PlannerConfig(num_experts=3, method="flow")  # flow cannot weigh clients
    res = policy_solve(weighted, config)
    assert res.success
    assert any(
        r.name == "flexassign.alignment.policies"
        and r.getMessage() == "method 'flow' cannot model this round's problem: solving with 'auto'"
        for r in caplog.records
    )
