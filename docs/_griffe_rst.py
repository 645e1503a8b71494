"""Griffe extension for the docs site: the Sphinx roles in our numpydoc docstrings as Markdown.

The docstrings follow numpydoc and use a few reStructuredText constructs that
Markdown does not know. This turns them into what the site renders:

- ``:math:`x``` becomes inline math ``\\(x\\)``, and a ``.. math::`` block (body
  indented below it or on the same line) a ``$$ ... $$`` block (``aligned`` when it
  has ``&`` or line breaks), for arithmatex and MathJax;
- ``:class:`~a.B```, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``,
  ``:exc:`` become optional cross-references: a link when the target is in the API
  reference, plain code otherwise;
- a paragraph ending in ``::`` (an RST literal block) ends in ``:``.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(
    r"^([ \t]*)\.\. math::[ \t]*(\S.*)?\n((?:[ \t]*\n|\1[ \t]+\S.*\n?)*)", re.M
)


def _math_block(match: re.Match[str]) -> str:
    indent = match.group(1)
    body = ((match.group(2) or "") + "\n" + textwrap.dedent(match.group(3))).strip("\n")
    if "&" in body or "\\\\" in body:
        body = "\\begin{aligned}\n" + body + "\n\\end{aligned}"
    lines = ["$$", *body.splitlines(), "$$"]
    return "\n".join(indent + line if line else line for line in lines) + "\n\n"


def _role(match: re.Match[str]) -> str:
    tilde, target = match.group(2), match.group(3)
    explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", target)  # :meth:`title <target>`
    if explicit:
        title, target = explicit.group(1), explicit.group(2)
    else:
        title = target.split(".")[-1] if tilde else target
    target = target.lstrip(".")
    return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'


def convert(text: str) -> str:
    """One docstring's reStructuredText constructs as Markdown."""
    text = _MATH_BLOCK.sub(_math_block, text)
    text = _MATH.sub(lambda m: "\\(" + m.group(1) + "\\)", text)
    text = _ROLE.sub(_role, text)
    return re.sub(r"(\S)::[ \t]*$", r"\1:", text, flags=re.M)


class RstRoles(griffe.Extension):
    """Convert every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
