"""docs/flower.md's hand-written loop and the Flower modules' docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_hand_written_loop_in_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "flower.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if b.startswith("import numpy as np\nfrom flexassign.alignment import")]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "docs/flower.md", "exec"), {})
    assert (tmp_path / "planner.json").exists()


@pytest.mark.parametrize(
    "module",
    [
        "flexassign.integrations.aggregation",
        "flexassign.integrations.layout",
        "flexassign.integrations.flower.messages",
        "flexassign.integrations.flower.nodes",
        "flexassign.integrations.flower.records",
        "flexassign.integrations.flower.replies",
        "flexassign.integrations.flower.app",
    ],
)
def test_docstring_examples(module: str) -> None:
    if module != "flexassign.integrations.aggregation":
        pytest.importorskip("flwr")
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
