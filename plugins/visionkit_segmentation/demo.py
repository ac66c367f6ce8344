"""The ``scenes`` dataset: the segmentation demo, rendered once as a real masks-layout tree.

``prepare_data()`` renders :mod:`visionkit_segmentation.scenes` into
``$VISIONKIT_CACHE_DIR/scenes-v1/{train,val}/{images,masks}/`` plus ``classes.txt``,
atomically: the tree is written in a temporary folder next to it and renamed into place,
so a killed or concurrent first run never leaves half a tree. Training then runs the real
:class:`SegmentationDataModule` path over those files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from visionkit_segmentation.datamodule import SegmentationDataModule
from visionkit_segmentation.scenes import CLASS_NAMES, render_scene

DIRNAME = "scenes-v1"
MARKER = ".complete"
SIZE = 64
COUNTS = {"train": 640, "val": 128}
VAL_SEED_OFFSET = 1_000_000  # val scenes never repeat a train scene


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$VISIONKIT_CACHE_DIR``, else ``~/.cache/visionkit``."""
    chosen = cache_dir or os.environ.get("VISIONKIT_CACHE_DIR") or Path.home() / ".cache" / "visionkit"
    return Path(chosen).expanduser()


def is_complete(tree: Path) -> bool:
    return (tree / MARKER).is_file()


def materialise_scenes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the scenes tree at ``tree`` unless a complete one is already there."""
    if is_complete(tree):
        return tree
    from PIL import Image

    counts = counts or COUNTS
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.tmp-", dir=tree.parent))
    try:
        for split, count in counts.items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            offset = VAL_SEED_OFFSET if split != "train" else 0
            for i in range(count):
                image, mask = render_scene(offset + i, size)
                Image.fromarray(image).save(tmp / split / "images" / f"{i:04d}.png")
                Image.fromarray(mask, mode="L").save(tmp / split / "masks" / f"{i:04d}.png")
        (tmp / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
        info = {"source": "visionkit_segmentation.scenes", "size": size, "counts": counts}
        (tmp / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")
        _publish(tmp, tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def _publish(tmp: Path, tree: Path) -> None:
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
        raise OSError(f"could not create the scenes dataset at {str(tree)!r}")


class ScenesDataModule(SegmentationDataModule):
    """The built-in demo: 640 train / 128 val 64 px scenes of circles, squares and triangles.

    Takes the ``segmasks`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE

    def __init__(
        self,
        batch_size: int = 16,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.6,
        hflip: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            root=cache_root(cache_dir) / DIRNAME,
            batch_size=batch_size,
            image_size=image_size,
            seed=seed,
            num_workers=num_workers,
            on_bad_image=on_bad_image,
            scale_min=scale_min,
            hflip=hflip,
        )

    def class_names(self) -> list[str]:
        """Known without touching the disk."""
        return list(CLASS_NAMES)

    def prepare_data(self) -> None:
        """Render the tree once (Lightning calls this on one process per node)."""
        assert self.root is not None
        materialise_scenes(self.root)

    def setup(self, stage: str | None = None) -> None:
        assert self.root is not None
        if not is_complete(self.root):  # setup() without prepare_data(), e.g. outside a Trainer
            materialise_scenes(self.root)
        super().setup(stage)
