"""The simulated study example runs, and the alignment docstring examples hold."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "simulated_alignment_study.py"
MODULES = [
    "flexassign.alignment.capacity",
    "flexassign.alignment.config",
    "flexassign.alignment.feedback",
    "flexassign.alignment.fitness",
    "flexassign.alignment.plan",
    "flexassign.alignment.planner",
    "flexassign.alignment.usage",
]


def test_example_runs_and_flex_beats_greedy(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("simulated_alignment_study", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "study.json"
    rc = module.main(["--rounds", "30", "--seeds", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "flex" in text and "greedy" in text
    data = json.loads(out.read_text())
    v = data["variants"]
    assert set(v) == {"flex", "flex (no deficit shift)", "greedy", "desirability", "random"}
    assert v["flex"]["final_cv_mean"] < v["greedy"]["final_cv_mean"] / 10
    assert v["flex"]["final_cv_mean"] < v["flex (no deficit shift)"]["final_cv_mean"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
