"""Demo datasets materialised once in the user cache, atomically: :func:`publish_tree`.

A demo (``digits``, ``scenes``, ``shapes``, a plugin's own) is written as a real tree of
files so training runs the real data path over it. The tree is built in a temporary folder
next to its final place and renamed into place, so a killed or concurrent first run never
leaves half a tree; a :data:`MARKER` file in it says it is complete. Torch-free.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: The file a complete tree holds (JSON: what the builder returned).
MARKER = ".complete"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$VISIONKIT_CACHE_DIR``, else ``~/.cache/visionkit``."""
    chosen = cache_dir or os.environ.get("VISIONKIT_CACHE_DIR") or Path.home() / ".cache" / "visionkit"
    return Path(chosen).expanduser()


def is_complete(tree: Path) -> bool:
    """Whether ``tree`` was published whole (it holds :data:`MARKER`)."""
    return (Path(tree) / MARKER).is_file()


def publish_tree(tree: Path, build: Callable[[Path], Mapping[str, Any]], what: str = "dataset") -> Path:
    """Write ``tree`` with ``build`` unless a complete one is already there; return ``tree``.

    ``build(tmp)`` writes the files into the empty folder ``tmp`` and returns what the marker
    records (source, sizes, seeds). ``what`` names the tree in the error raised when it cannot
    be created. Safe against concurrent writers: the first rename wins, the others keep its tree.
    """
    tree = Path(tree)
    if is_complete(tree):
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.tmp-", dir=tree.parent))
    try:
        info = dict(build(tmp))
        (tmp / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")
        _publish(tmp, tree, what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def _publish(tmp: Path, tree: Path, what: str) -> None:
    """Rename ``tmp`` to ``tree``; if another process won the race, keep its (complete) tree."""
    for _ in range(3):
        try:
            os.replace(tmp, tree)
            return
        except OSError:
            if is_complete(tree):
                return
            if tree.exists():  # an incomplete tree not written by us: move it aside, retry
                stale = tree.with_name(f".{tree.name}.stale-{uuid.uuid4().hex}")
                try:
                    os.replace(tree, stale)
                except OSError:
                    continue
                shutil.rmtree(stale, ignore_errors=True)
    if not is_complete(tree):
        raise OSError(f"could not create the {what} at {str(tree)!r}")
