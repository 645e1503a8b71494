"""The README's Python snippets and the core docstring examples run as written."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks(ROOT / "README.md"))))
def test_readme_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _python_blocks(ROOT / "README.md")[index]
    exec(compile(code, f"README.md[python block {index}]", "exec"), {})


@pytest.mark.parametrize(
    "module",
    [
        "flexassign.problem",
        "flexassign.solve",
        "flexassign.verify",
    ],
)
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_readme_snippets_pass_mypy_strict(tmp_path: Path) -> None:
    """What users copy first type-checks under ``mypy --strict`` (issue 23: the quick
    start indexed an Optional)."""
    api = pytest.importorskip("mypy.api")
    files = []
    for i, code in enumerate(_python_blocks(ROOT / "README.md")):
        path = tmp_path / f"readme_{i}.py"
        path.write_text(code, encoding="utf-8")
        files.append(str(path))
    out, err, status = api.run(
        [
            "--strict",
            "--follow-imports=silent",  # report the snippets, not flexassign itself
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--python-version",
            "3.11",
            *files,
        ]
    )
    assert status == 0, out + err
