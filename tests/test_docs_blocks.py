"""Every code block in the README and docs/ is shown because it works.

* ``python`` blocks run as written, each in a fresh folder holding the repository's
  ``examples/problems``. A block that is a fragment of a larger program (it uses names
  from its surroundings) is listed in ``FRAGMENTS`` with the reason, and must still
  compile and import only names that exist. Blocks that run for minutes are in the
  slow suite (``SLOW``).
* ``bash`` blocks: ``flexassign`` commands run (cheap); ``fl-harness`` commands parse;
  ``make`` targets exist; ``pip install`` names real extras and files; scripts and
  modules exist and know the flags shown. Tools outside the repository (``flwr``,
  ``flower-superlink``) only have their paths checked.
"""

from __future__ import annotations

import ast
import glob
import importlib
import importlib.util
import logging
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")
EXTRAS = set(
    tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
)

#: (page, a line only that block has) -> why the block cannot run on its own; keyed by
#: content, not position, so adding a block to a page does not shift the list.
FRAGMENTS = {
    ("docs/flower.md", "strategy.start(grid=grid,"):
        "the body of a ServerApp's main: grid, cfg and model come from it",
    ("docs/flower.md", "strategy.start(grid, initial_arrays=arrays"):
        "inside a ServerApp: grid and arrays come from Flower",
}


def _is_fragment(page: str, code: str) -> bool:
    return any(p == page and marker in code for p, marker in FRAGMENTS)
#: (page, python block index) that take minutes (a 40-round experiment).
SLOW = {("docs/harness.md", 0)}
#: Packages an extra brings: a block importing one is skipped when it is missing.
OPTIONAL = ("flwr", "torch", "fl_harness", "pandas", "hypothesis", "pyomo")


def _blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


PYTHON = [(_rel(p), i, code) for p in PAGES for i, code in enumerate(_blocks(p, "python"))]
BASH = [(_rel(p), i, code) for p in PAGES for i, code in enumerate(_blocks(p, "bash"))]


def _imports(code: str) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
    return found


def _skip_missing_extras(code: str) -> None:
    for module, _ in _imports(code):
        top = module.split(".")[0]
        if top in OPTIONAL or module.startswith("flexassign.integrations.flower"):
            pytest.importorskip("flwr" if "flower" in module else top)


@pytest.fixture(autouse=True)
def _keep_logging() -> object:
    """A block may configure logging (docs/install.md does): undo it afterwards."""
    from flexassign import _logging

    root, ours = logging.getLogger(), logging.getLogger("flexassign")
    saved = root.handlers[:], root.level, ours.handlers[:], ours.level, ours.propagate
    yield
    root.handlers[:], ours.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    ours.setLevel(saved[3])
    ours.propagate = saved[4]
    _logging._handler = None  # `flexassign -v` in a shell block configured it


def _id(item: tuple[str, int, str]) -> str:
    return f"{item[0]}[{item[1]}]"


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(x, marks=pytest.mark.slow) if (x[0], x[1]) in SLOW else x
        for x in PYTHON
    ],
    ids=_id,
)
def test_python_block_runs(
    item: tuple[str, int, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, index, code = item
    _skip_missing_extras(code)
    compiled = compile(code, f"{page}[python block {index}]", "exec")
    if _is_fragment(page, code):
        for module, names in _imports(code):
            mod = importlib.import_module(module)
            missing = [n for n in names if not hasattr(mod, n)]
            assert not missing, f"{page}[{index}]: {module} has no {missing}"
        return
    shutil.copytree(ROOT / "examples" / "problems", tmp_path / "examples" / "problems")
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": "__docs__"})


def test_fragments_are_still_in_the_docs() -> None:
    for page, marker in FRAGMENTS:
        assert any(p == page and marker in code for p, _, code in PYTHON), (page, marker)
    assert SLOW <= {(page, index) for page, index, _ in PYTHON}


# ------------------------------------------------------------------ shell blocks
def _commands(code: str) -> list[list[str]]:
    text = code.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):", makefile, re.M))


def _check_pip(words: list[str]) -> None:
    for i, word in enumerate(words):
        if word == "-c":
            assert (ROOT / words[i + 1]).exists(), words
        match = re.fullmatch(r"\.\[([\w,-]+)\]", word)
        if match:
            unknown = set(match.group(1).split(",")) - EXTRAS
            assert not unknown, f"unknown extra(s) {sorted(unknown)} in {' '.join(words)}"


def _flags_known(source: Path, words: list[str]) -> None:
    text = source.read_text(encoding="utf-8")
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert f'"{flag}"' in text, f"{source.name} has no flag {flag}"


def _run_flexassign(words: list[str], tmp: Path) -> None:
    from flexassign.cli import main

    argv = []
    for word in words:
        argv += sorted(glob.glob(str(word))) if "*" in word else [word]
    assert main(argv) == 0, words


def _check(words: list[str], tmp: Path) -> None:
    head = Path(words[0]).name
    if head == "make":
        assert set(words[1:]) <= _make_targets(), words
    elif head == "pip" or words[1:3] == ["-m", "pip"]:
        _check_pip(words)
    elif head == "flexassign":
        _run_flexassign(words[1:], tmp)
    elif head == "fl-harness" or words[:3] == ["python", "-m", "fl_harness"]:
        rest = words[1:] if head == "fl-harness" else words[3:]
        if rest == ["..."]:
            return
        pytest.importorskip("torch")
        from fl_harness.cli import build_parser

        build_parser().parse_args(rest)
    elif head in ("python", "python3") and words[1] == "-m":
        if words[2] in ("venv", "pip"):
            return
        spec = importlib.util.find_spec(words[2])
        assert spec is not None and spec.origin, words
        _flags_known(Path(spec.origin), words[3:])
    elif head in ("python", "python3"):
        script = ROOT / words[1]
        assert script.exists(), words
        _flags_known(script, words[2:])
    elif head == "flwr":
        assert (ROOT / words[2]).is_dir(), words
    elif head in ("export", "du", "flower-superlink", "flower-supernode"):
        return  # outside the repository
    else:
        raise AssertionError(f"no check for the command {words}")


@pytest.mark.parametrize("item", BASH, ids=_id)
def test_shell_block_commands_are_valid(
    item: tuple[str, int, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, index, code = item
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    commands = _commands(code)
    assert commands, f"{page}[{index}] is empty"
    for words in commands:
        _check(words, tmp_path)
