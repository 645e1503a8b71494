"""MkDocs hook: repository files published as site pages, and the links between them.

A page listed in ``PUBLISHED`` (e.g. ``docs/examples/flower.md``) is the text of a
repository file outside ``docs/`` (``examples/flower/README.md``); the user guide links
to such files by their repository path. This hook fills those pages with their file's
text and rewrites each relative Markdown link whose target, resolved from the file it
was written in, is a site page or a published file, to point at that page.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

#: Repository files published as site pages (path in the repository -> page in docs/).
PUBLISHED = {"examples/flower/README.md": "examples/flower.md"}
#: Site pages that are a snippet of a repository file (page -> the file it includes).
ORIGIN = {page: repo for repo, page in PUBLISHED.items()}

_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, *, page: Any, config: Any, **kwargs: Any) -> str:
    page_src = page.file.src_uri
    origin = ORIGIN.get(page_src, f"docs/{page_src}")
    if page_src in ORIGIN:
        root = Path(config["config_file_path"]).resolve().parent
        markdown = (root / origin).read_text(encoding="utf-8")

    def fix(match: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(origin), match.group(1)))
        if target in PUBLISHED:
            target = f"docs/{PUBLISHED[target]}"
        if not target.startswith("docs/"):
            return match.group(0)
        rel = posixpath.relpath(target[len("docs/") :], posixpath.dirname(page_src) or ".")
        return f"]({rel}{match.group(2) or ''})"

    return _LINK.sub(fix, markdown)
