"""MkDocs hook: the site's math as MathML, rendered at build time (no script, no CDN).

``pymdownx.arithmatex`` (generic mode) leaves each formula as TeX in
``<span class="arithmatex">\\(...\\)</span>`` (inline) or
``<div class="arithmatex">\\[...\\]</div>`` (display). This hook converts each one to
MathML with ``latex2mathml`` (the ``docs`` extra, 0.4 MB), which browsers render
natively: the pages need neither MathJax nor web fonts, so they read the same offline.
Display math with line breaks or ``&`` alignment points outside an environment is set
as ``align*``. A formula that does not convert fails the build, naming the page.
"""

from __future__ import annotations

import html
import re
from typing import Any

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
#: A bare ``&`` in the MathML: an alignment point latex2mathml did not place.
_BARE_AMP = re.compile(r"&(?!#x?[0-9A-Fa-f]+;|[A-Za-z]+;)")


def _aligned(tex: str) -> str:
    """Wrap multi-line display math that is not already in an environment."""
    if "\\begin{" in tex or not ("\\\\" in tex or "&" in tex):
        return tex
    return f"\\begin{{align*}}{tex}\\end{{align*}}"


def to_mathml(tex: str, *, display: bool, where: str = "") -> str:
    """MathML for the TeX of one formula (HTML entities in ``tex`` are decoded first)."""
    from latex2mathml.converter import convert

    source = html.unescape(tex).strip()
    if display:
        source = _aligned(source)
    try:
        out = convert(source, display="block" if display else "inline")
    except Exception as exc:  # the converter's own errors vary: name the formula
        raise ValueError(f"{where}: cannot convert {source!r} to MathML: {exc}") from exc
    if _BARE_AMP.search(out):
        raise ValueError(f"{where}: {source!r} left an unplaced '&' in the MathML")
    unknown = re.findall(r"\\[A-Za-z]+", out)
    if unknown:  # latex2mathml writes a command it does not know as text
        raise ValueError(f"{where}: {source!r}: latex2mathml does not know {unknown}")
    return out


def on_post_page(output: str, *, page: Any, config: Any, **kwargs: Any) -> str:
    where = getattr(getattr(page, "file", None), "src_uri", "?")

    def display(match: re.Match[str]) -> str:
        mathml = to_mathml(match.group(1), display=True, where=where)
        return f'<div class="arithmatex">{mathml}</div>'

    def inline(match: re.Match[str]) -> str:
        return (
            f'<span class="arithmatex">{to_mathml(match.group(1), display=False, where=where)}'
            "</span>"
        )

    return _INLINE.sub(inline, _DISPLAY.sub(display, output))
