"""mkdocs hooks for the visionkit site (``hooks:`` in mkdocs.yml).

docs/ pages link to files of the repository outside docs/ (``../examples/...``,
``../benchmarks/results/...``) so that they work when read on a forge or in an editor. On
the site such links cannot resolve: this hook rewrites each one whose target exists in the
repository into a link to ``repo_url`` (when mkdocs.yml sets one) or into the plain
repository path. A link whose target does not exist is left alone, so ``mkdocs build
--strict`` still fails on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>\.\./[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")
_FENCE = re.compile(r"^(```|~~~)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    page_dir = (Path(config["docs_dir"]) / page.file.src_path).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def rewrite(match: re.Match[str]) -> str:
        target = (page_dir / match["target"]).resolve()
        try:
            rel = target.relative_to(ROOT)
        except ValueError:
            return match[0]
        if not target.exists() or rel.parts[:1] == ("docs",):
            return match[0]
        text = match["text"]
        if repo_url:
            kind = "tree" if target.is_dir() else "blob"
            return f"[{text}]({repo_url}/{kind}/main/{rel.as_posix()}{match['anchor'] or ''})"
        path = f"`{rel.as_posix()}`"
        if text.strip("`") == rel.as_posix():
            return f"{path} (in the repository)"
        return f"{text} ({path} in the repository)"

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        out.append(line if fenced else _LINK.sub(rewrite, line))
    return "".join(out)
