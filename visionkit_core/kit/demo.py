"""Demo datasets materialised once in the user cache, atomically: :func:`publish_tree`.

A demo (``digits``, ``scenes``, ``shapes``, a plugin's own) is written as a real tree of
files so training runs the real data path over it. The tree is built in a temporary folder
next to its final place and renamed into place, so a killed or concurrent first run never
leaves half a tree; a :data:`MARKER` file in it says it is complete. Torch-free.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: The file a complete tree holds (JSON: what the builder returned).
MARKER = ".complete"
#: Added to the seed of every scene of a split other than ``train``: val never repeats a train scene.
VAL_SEED_OFFSET = 1_000_000


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


def split_seeds(counts: Mapping[str, int]) -> dict[str, range]:
    """The scene seeds of each split: from 0 for ``train``, from :data:`VAL_SEED_OFFSET` for the others."""
    return {
        split: range(offset, offset + count)
        for split, count in counts.items()
        for offset in [0 if split == "train" else VAL_SEED_OFFSET]
    }


def coco_demo(
    tree: Path,
    render: Callable[[int, int], tuple[Any, list[dict[str, Any]]]],
    categories: Sequence[Mapping[str, Any]],
    counts: Mapping[str, int],
    size: int,
    source: str,
    prefix: str = "instances",
) -> Path:
    """Publish (:func:`publish_tree`) a COCO tree of rendered scenes at ``tree`` unless a complete
    one is there: ``<split>/NNNNN.png`` and ``annotations/<prefix>_<split>.json`` per split of
    ``counts``.

    ``render(seed, size)`` gives one scene: an ``(S, S, 3)`` uint8 image and its annotations
    (``category_id``, ``bbox``, ``area``, ``segmentation`` / ``keypoints``...; the ``id``,
    ``image_id`` and ``iscrowd`` 0 are added). Seeds follow :func:`split_seeds`; the marker
    records ``source``, ``size`` and ``counts``.
    """

    def build(tmp: Path) -> dict[str, Any]:
        from PIL import Image

        (tmp / "annotations").mkdir()
        for split, seeds in split_seeds(counts).items():
            (tmp / split).mkdir()
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            for i, seed in enumerate(seeds):
                image, found = render(seed, size)
                name = f"{i:05d}.png"
                Image.fromarray(image).save(tmp / split / name)
                images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
                for ann in found:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **ann})
            doc = {"images": images, "annotations": annotations, "categories": [dict(c) for c in categories]}
            (tmp / "annotations" / f"{prefix}_{split}.json").write_text(json.dumps(doc), encoding="utf-8")
        return {"source": source, "size": size, "counts": dict(counts)}

    return publish_tree(tree, build, f"{Path(tree).name} dataset")


class DemoTree:
    """A mixin, first among the bases of a datamodule whose data is a demo tree in the cache.

    Set :attr:`demo_classes` and ``materialise`` (``staticmethod(tree -> tree)``, usually a
    :func:`publish_tree` call). The tree is written in ``prepare_data`` (once per node), or
    when ``layout()`` is first asked for without it (outside a Trainer); the class names are
    known without touching the disk.

    A demo that only gives the datamodule other defaults sets :attr:`demo_dirname` (and
    :attr:`demo_defaults`) and writes no ``__init__``: it gets the datamodule's options (its
    ``__init__``'s signature, types and all) less ``root`` and :attr:`demo_drops`, with the demo's
    defaults and a ``cache_dir`` (``$VISIONKIT_CACHE_DIR`` when None); ``root`` becomes
    ``cache_root(cache_dir) / demo_dirname``.
    """

    demo_classes: Sequence[str] = ()
    root: Path | None
    #: the tree's folder in the cache; set it to get the generated ``__init__``.
    demo_dirname: str | None = None
    #: the demo's defaults of the datamodule's options.
    demo_defaults: Mapping[str, Any] = {}
    #: options of the datamodule a demo does not take (its splits are given).
    demo_drops: tuple[str, ...] = ("val_split",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("demo_dirname") and "__init__" not in cls.__dict__:
            cls.__init__ = _demo_init(cls)  # type: ignore[method-assign]

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


def _demo_init(cls: type) -> Callable[..., None]:
    """The ``__init__`` of a demo datamodule ``cls`` (see :class:`DemoTree`)."""
    base = next(b for b in cls.__mro__[1:] if not issubclass(b, DemoTree) and "__init__" in b.__dict__)
    base_init = base.__init__  # type: ignore[misc]
    hints = typing.get_type_hints(base_init)
    drops = {"root", *cls.demo_drops}  # type: ignore[attr-defined]
    params = [
        p.replace(default=cls.demo_defaults.get(name, p.default), annotation=hints.get(name, p.annotation))  # type: ignore[attr-defined]
        for name, p in inspect.signature(base_init).parameters.items()
        if name not in drops
    ]
    params.append(
        inspect.Parameter("cache_dir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None)
    )
    signature = inspect.Signature(params)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        options = {k: v for k, v in bound.arguments.items() if k != "self"}
        root = cache_root(options.pop("cache_dir")) / cls.demo_dirname  # type: ignore[attr-defined]
        base_init(self, root=root, **options)  # type: ignore[call-arg]

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__annotations__ = {p.name: p.annotation for p in params[1:]} | {"return": None}
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = (
        f"{cls.__name__}: the options of {base.__name__} with the demo's defaults, and ``cache_dir``."
    )
    return __init__
