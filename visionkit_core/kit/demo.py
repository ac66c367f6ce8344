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
from collections.abc import Callable, Mapping, Sequence
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


def demo_options(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A demo datamodule's ``__init__`` arguments (its ``locals()``) to hand to its base class.

    ``self`` and ``cache_dir`` stay behind: the demo turns ``cache_dir`` into its ``root``.
    """
    return {k: v for k, v in arguments.items() if k not in ("self", "__class__", "cache_dir")}


class DemoTree:
    """A mixin, first among the bases of a datamodule whose data is a demo tree in the cache.

    Set :attr:`demo_classes` and ``materialise`` (``staticmethod(tree -> tree)``, usually a
    :func:`publish_tree` call). The tree is written in ``prepare_data`` (once per node), or
    when ``layout()`` is first asked for without it (outside a Trainer); the class names are
    known without touching the disk.
    """

    demo_classes: Sequence[str] = ()
    root: Path | None

    def materialise(self, tree: Path) -> Path:
        raise NotImplementedError

    def demo_tree(self) -> Path:
        """Where the tree lives (the datamodule's ``root``)."""
        assert self.root is not None
        return self.root

    def class_names(self) -> list[str]:
        """The demo's classes, known without touching the disk."""
        return list(self.demo_classes)

    def prepare_data(self) -> None:
        """Write the tree once (Lightning calls this on one process per node)."""
        self.materialise(self.demo_tree())

    def layout(self) -> Any:
        if not is_complete(self.demo_tree()):  # asked before prepare_data(), e.g. outside a Trainer
            self.materialise(self.demo_tree())
        return super().layout()  # type: ignore[misc]
