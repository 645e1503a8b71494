"""docs/_math.py: the build-time TeX -> MathML conversion behind the offline site."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def math() -> ModuleType:
    pytest.importorskip("latex2mathml")
    spec = importlib.util.spec_from_file_location("docs_math", ROOT / "docs" / "_math.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inline_and_display(math: ModuleType) -> None:
    html = (
        '<p>a <span class="arithmatex">\\(x_{ce} &lt; 1\\)</span></p>'
        '<div class="arithmatex">\\[a &amp;= b \\\\ c &amp;= d\\]</div>'
    )
    out = math.on_post_page(html, page=None, config=None)
    assert '<span class="arithmatex"><math xmlns="http://www.w3.org/1998/Math/MathML" ' \
        'display="inline">' in out
    assert "&#x0003C;" in out  # the entity was decoded, then the "<" written as MathML
    assert "<mtable" in out and "\\[" not in out and "\\(" not in out  # aligned rows


def test_an_unconvertible_formula_names_its_page(math: ModuleType) -> None:
    class Page:
        class file:  # mimics mkdocs' page.file.src_uri
            src_uri = "problem.md"

    with pytest.raises(ValueError, match=r"problem\.md: cannot convert"):
        math.on_post_page('<span class="arithmatex">\\(x^\\)</span>', page=Page(), config=None)
    with pytest.raises(ValueError, match=r"does not know \['\\\\nosuchcommand'\]"):
        math.on_post_page('<span class="arithmatex">\\(\\nosuchcommand x\\)</span>',
                          page=Page(), config=None)
