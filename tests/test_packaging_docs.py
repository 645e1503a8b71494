"""The documentation site builds in strict mode and its API reference is complete."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Every public namespace: each name in its ``__all__`` must be in the API reference.
PUBLIC = [
    "flexassign",
    "flexassign.labels",
    "flexassign.testing",
    "flexassign.alignment",
    "flexassign.backends.registry",
    "flexassign.backends.base",
    "flexassign.io",
    "flexassign.cli",
    "flexassign.metrics",
    "flexassign.errors",
    "flexassign.integrations.flower",
    "flexassign.integrations.aggregation",
    "fl_harness",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def _reference_ids(site: Path) -> set[str]:
    html = "".join(p.read_text(encoding="utf-8") for p in (site / "reference").rglob("*.html"))
    return set(re.findall(r'id="([^"]+)"', html))


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    ids = _reference_ids(site)
    modules = {name: importlib.import_module(name) for name in PUBLIC}
    missing = []
    for mod_name, mod in modules.items():
        for name in mod.__all__:
            obj = getattr(mod, name)
            places = {f"{mod_name}.{name}"}
            places |= {
                f"{other}.{name}"
                for other, m in modules.items()
                if name in getattr(m, "__all__", ()) and getattr(m, name) is obj
            }
            if hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
                places.add(f"{obj.__module__}.{obj.__qualname__}")
            if not places & ids:
                missing.append(f"{mod_name}.{name}")
    assert not missing, f"not in the API reference: {missing}"


def test_reference_renders_math_and_cross_references(site: Path) -> None:
    page = (site / "reference" / "flexassign" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in page
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in page
    assert "autorefs-internal" in page
    for path in (site / "reference").rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        for leftover in (":math:`", ":class:`", ":func:`", ":meth:`", ".. math::"):
            assert leftover not in text, f"{leftover} left in {path.relative_to(site)}"


def test_user_guide_pages_are_all_in_the_site(site: Path) -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.exists(), f"docs/{page.name} is not in the site nav"


def test_make_docs_target_is_strict() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^docs:.*\n(\t.*\n)*\t.*mkdocs build --strict", makefile, re.M)


def test_pages_render_offline(site: Path) -> None:
    """Math is MathML made at build time and fonts are the system's: no page loads a
    script, stylesheet or font from another host, and no TeX is left for a script."""
    external = re.compile(r"""(?:src|href)=["']((?:https?:)?//[^"']+\.(?:js|css|woff2?|ttf))""")
    for path in site.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(site)
        assert not external.findall(text), f"{rel} loads {external.findall(text)}"
        assert "fonts.googleapis" not in text and "mathjax" not in text.lower(), rel
        for leftover in re.findall(r'class="arithmatex">(.{0,40})', text):
            assert leftover.startswith("<math"), f"{rel}: TeX left unrendered: {leftover}"
