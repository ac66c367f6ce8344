"""The ``csv`` dataset: images listed in a CSV manifest (``--data FILE.csv``), single- or multi-label.

The ImageFolder data path with the samples taken from :func:`read_manifest`: same decoding,
augmentation, sampler and skipping of unreadable files. A ``label`` column gives class
indices (``(images, labels)`` batches for ``classification``); a ``labels`` column gives
multi-hot float targets ``(B, C)`` and tells the task ``multilabel=True`` through
:class:`DataInfo`. Bad rows are skipped and reported (``bad_samples()``, with line numbers),
or, with ``--on-bad-image error``, refused before training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from visionkit_core import BadSample, DataInfo, UsageError
from visionkit_imagefolder.datamodule import ImageFolderDataModule
from visionkit_imagefolder.manifest import Manifest, Row, describe_problems, read_manifest


class ManifestDataModule(ImageFolderDataModule):
    """Images named by a CSV manifest: ``path``, ``label`` or ``labels``, optional ``split``.

    Takes the ImageFolder options; ``root`` is the CSV file. Paths are relative to the CSV's
    folder, or absolute. Without a ``split`` column, each class is split by ``val_split``
    and ``seed`` (multi-label rows by their rarest label).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        image_size: int | None = None,
        val_split: float = 0.2,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        hflip: bool = True,
        crop_scale_min: float = 0.35,
        crop_pct: float = 0.875,
        pin_memory: bool | None = None,
        augment: str = "basic",
        sampler: str = "default",
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            image_size=image_size,
            val_split=val_split,
            seed=seed,
            num_workers=num_workers,
            on_bad_image=on_bad_image,
            hflip=hflip,
            crop_scale_min=crop_scale_min,
            crop_pct=crop_pct,
            pin_memory=pin_memory,
            augment=augment,
            sampler=sampler,
        )
        self._manifest: Manifest | None = None
        self._rows: dict[str, list[Row]] | None = None

    def manifest(self) -> Manifest:
        """The parsed manifest (cached); a UsageError for a file that cannot be used."""
        if self._manifest is None:
            if self.root is None:
                raise UsageError("the csv dataset needs a manifest: pass --data FILE.csv")
            self._manifest = read_manifest(self.root)
        return self._manifest

    @property
    def multilabel(self) -> bool:
        return self.manifest().multilabel

    # -- what the task is built from ----------------------------------------------------------
    def class_names(self) -> list[str]:
        return self.manifest().classes

    def data_info(self) -> DataInfo:
        """Class names and training counts; ``multilabel=True`` for a ``labels`` manifest."""
        extra: dict[str, Any] = {"class_counts": self.class_counts()}
        if self.multilabel:
            extra["multilabel"] = True
            extra["train_images"] = len(self.train_val_samples()[0])
        train_size = len(self.train_val_samples()[0])
        return DataInfo(class_names=self.class_names(), extra=extra, train_size=train_size)

    def has_test_split(self) -> bool:
        return bool(self._split_rows()["test"])

    def bad_samples(self) -> list[BadSample]:
        """The manifest's bad rows (file and line) and the images found unreadable so far."""
        return [*self.manifest().bad_samples(), *super().bad_samples()]

    # -- samples -------------------------------------------------------------------------------
    def data_root(self) -> Path:
        return self.manifest().file.parent

    def _split_rows(self) -> dict[str, list[Row]]:
        if self._rows is None:
            manifest = self.manifest()
            if manifest.problems and self.on_bad_image == "error":
                raise UsageError(
                    f"{len(manifest.problems)} rows of {str(manifest.file)!r} cannot be used "
                    f"(--on-bad-image error):\n{describe_problems(manifest.problems, manifest.file)}\n"
                    "Fix or remove them, or pass --on-bad-image skip to train without them "
                    "(visionkit data check FILE.csv lists every problem)"
                )
            rows = manifest.split_rows(self.val_split, self.seed)
            if not rows["val"]:
                how = (
                    "add rows with split=val"
                    if manifest.has_split
                    else "add rows (two or more per class) or a split column"
                )
                raise UsageError(f"manifest {str(manifest.file)!r} leaves no validation rows; {how}")
            self._rows = rows
        return self._rows

    def _samples(self, rows: list[Row]) -> list[tuple[str, Any]]:
        index = {name: i for i, name in enumerate(self.class_names())}
        if not self.multilabel:
            return [(r.path, index[r.labels[0]]) for r in rows]
        n = len(index)
        samples: list[tuple[str, Any]] = []
        for r in rows:
            hot = [0] * n
            for name in r.labels:
                hot[index[name]] = 1
            samples.append((r.path, tuple(hot)))
        return samples

    def train_val_samples(self) -> tuple[list[Any], list[Any]]:
        if self._split is None:
            rows = self._split_rows()
            self._split = (self._samples(rows["train"]), self._samples(rows["val"]))
        return self._split

    def test_samples(self) -> list[Any]:
        rows = self._split_rows()["test"]
        if not rows:
            raise UsageError(
                f"manifest {str(self.manifest().file)!r} has no test rows; add rows with split=test "
                "to run test"
            )
        return self._samples(rows)
