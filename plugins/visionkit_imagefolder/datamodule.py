"""The ``imagefolder`` dataset: a LightningDataModule over a folder of class folders.

``root`` holds ``train/`` and ``val/`` (optionally ``test/``) with one folder per class, or
is itself a folder of class folders, split per class by ``val_split`` and ``seed``.
Loaders yield ``(images, truth, skipped_paths)``; :meth:`on_before_batch_transfer` (run
by Lightning in the main process) records and warns about unreadable files and hands the
model ``(images, truth)``: uint8 ``(B, 3, S, S)`` images and the batched Sample
``{"label": (B,) int64}`` (``{"multi_hot": (B, C) float32}`` for multi-label data).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

from visionkit_core import DataInfo, DataSpec, UsageError
from visionkit_core.kit.data import SAMPLERS, SeededDataModule, available_cpus
from visionkit_imagefolder.dataset import (
    AUGMENTATIONS,
    ImageFileDataset,
    collate_samples,
    eval_transform,
    train_transform,
)
from visionkit_imagefolder.folders import LabelledFile, Layout, find_samples, scan_layout, stratified_split

#: Below this many samples a loader decodes in the main process: it takes well under a
#: second there, less than starting workers and shipping their batches back.
SMALL_DATASET = 512


def default_num_workers(
    num_samples: int,
    *,
    on_gpu: bool,
    cpu_count: int | None = None,
    torch_threads: int | None = None,
    processes: int = 1,
) -> int:
    """Loader workers when the user did not choose.

    Training on the CPU, the step already runs ``torch.get_num_threads()`` threads, so
    workers only get the cores left over. On 2 cores (resnet18, 2 epochs) workers 0/1/2
    took 8.1/10.0/9.4 s on digits at 32 px and 20.7/24.8/23.6 s on 256 px JPEGs at 224 px,
    although loading alone is faster with 2 workers. On a GPU the main process mostly
    waits, so workers get every core but one (at most 8). ``processes`` is the number of
    training processes sharing the machine (DDP).
    """
    if num_samples < SMALL_DATASET:
        return 0
    cpus = (cpu_count if cpu_count is not None else available_cpus()) // max(1, processes)
    if on_gpu:
        return max(0, min(8, cpus - 1))
    threads = torch_threads if torch_threads is not None else torch.get_num_threads()
    return max(0, min(4, cpus - threads))


class ImageFolderDataModule(SeededDataModule):
    """Images in class folders, decoded with torchvision.io and augmented as uint8 tensors.

    Args:
        root: the data folder (``--data``).
        batch_size: samples per batch.
        image_size: output side length; ``None`` uses :attr:`default_image_size`.
        val_split: fraction of each class held out for validation when ``root`` has no ``val/``.
        seed: seeds the split and the training shuffle (reproducible runs).
        num_workers: loader processes; ``None`` chooses with :func:`default_num_workers`.
        on_bad_image: ``"skip"`` unreadable files (warned once each), or ``"error"``: decode
            every train/val file before fitting and raise a UsageError listing the bad ones.
        hflip: random horizontal flips while training.
        crop_scale_min: smallest area fraction of the training RandomResizedCrop.
        crop_pct: evaluation images are resized to ``image_size / crop_pct`` then centre-cropped.
        pin_memory: pin batches for faster GPU copies; ``None`` pins only when CUDA is available.
        augment: training augmentation (``--augment``): ``none``, ``basic`` (crop + flip),
            ``randaugment``, ``trivialaugment`` or ``autoaugment`` (basic, then that policy).
        sampler: training order (``--sampler``): ``default`` (a shuffle) or ``balanced``
            (drawn with replacement so every class comes up equally often).
    """

    default_image_size = 224
    collate = staticmethod(collate_samples)
    skip_warning = (
        "skipped unreadable image {path!r} (replaced by another sample); "
        "pass --on-bad-image error to stop instead"
    )
    skip_reason = "unreadable image (skipped)"

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
        super().__init__()
        _check_options(batch_size, image_size, val_split, num_workers, on_bad_image, crop_scale_min, crop_pct)
        _check_recipe(augment, sampler)
        # plain values only, so a checkpoint's datamodule_hyper_parameters load with weights_only
        self.save_hyperparameters(ignore=["root"])
        self.hparams["root"] = os.fspath(root) if root is not None else None
        self.root = Path(root).expanduser() if root is not None else None
        self.batch_size = batch_size
        self.image_size = int(image_size) if image_size is not None else self.default_image_size
        self.val_split = val_split
        self.seed = seed
        self.num_workers = num_workers
        self.on_bad_image = on_bad_image
        self.hflip = hflip
        self.crop_scale_min = crop_scale_min
        self.crop_pct = crop_pct
        self._pin_memory = pin_memory
        self.augment = augment
        self.sampler = sampler
        self._layout: Layout | None = None
        self._split: tuple[list[tuple[str, int]], list[tuple[str, int]]] | None = None
        self._checked = False  # on_bad_image="error": every train/val file decoded once up front

    # -- what the model is built from (cheap: folder names only) -------------------------
    def layout(self) -> Layout:
        """The scanned folder layout (cached); raises a UsageError for an unusable folder."""
        if self._layout is None:
            self._layout = scan_layout(self.root)
        return self._layout

    def class_names(self) -> list[str]:
        """Class names in label order (natural sort of the class folder names)."""
        return list(self.layout().classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    # -- the visionkit data contract ---------------------------------------------------------
    def data_info(self) -> DataInfo:
        """The class names, in label order, the training images per class (``class_counts``) and in all."""
        extra, train = {"class_counts": self.class_counts()}, self.train_val_samples()[0]
        return DataInfo(class_names=self.class_names(), extra=extra, train_size=len(train))

    def class_counts(self) -> list[int]:
        """Training samples per class, in label order (file names only: nothing is decoded)."""
        train, _ = self.train_val_samples()
        counts = [0] * len(self.class_names())
        for _, label in train:
            if isinstance(label, tuple):  # multi-hot: images carrying each label
                counts = [c + int(v) for c, v in zip(counts, label, strict=True)]
            else:
                counts[label] += 1
        return counts

    def data_spec(self) -> DataSpec:
        """train and val, and test when the folder has ``test/``; ``(images, truth)`` batches."""
        splits = ("train", "val", "test") if self.has_test_split() else ("train", "val")
        return DataSpec(splits=splits, batch="tuple", image_key=0)

    def has_test_split(self) -> bool:
        return self.layout().test_dir is not None

    def preprocessing(self) -> dict[str, Any]:
        """What predict/export repeat: resize the shorter side to ``image_size / crop_pct``, centre crop."""
        return {"image_size": self.image_size, "crop_pct": self.crop_pct}

    @property
    def skipped_images(self) -> set[str]:
        """Paths of the unreadable files met while loading."""
        return self.skipped.paths

    # the splits' datasets, by name (the kit's loaders read them from ``datasets``)
    train_dataset = property(lambda self: self.datasets.get("train"), lambda self, v: self._put("train", v))
    val_dataset = property(lambda self: self.datasets.get("val"), lambda self, v: self._put("val", v))
    test_dataset = property(lambda self: self.datasets.get("test"), lambda self, v: self._put("test", v))

    def _put(self, split: str, dataset: Any) -> None:
        self.datasets[split] = dataset

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> Any:
        """Files decoded and centre-cropped as in validation (see :meth:`preprocessing`)."""
        from visionkit_imagefolder.dataset import PredictFiles

        return PredictFiles(
            files, int(preprocessing["image_size"]), float(preprocessing.get("crop_pct", 0.875))
        )

    @property
    def pin_memory(self) -> bool:
        """Whether loaders pin batches: as given, else only when training on a CUDA device."""
        if self._pin_memory is not None:
            return self._pin_memory
        if self.trainer is not None:
            return isinstance(self.trainer.accelerator, CUDAAccelerator)
        return torch.cuda.is_available()

    def default_num_workers(self, num_samples: int) -> int:
        """Workers for a loader over ``num_samples`` when none were given: :func:`default_num_workers`."""
        trainer = self.trainer
        if trainer is not None:
            on_gpu = not isinstance(trainer.accelerator, CPUAccelerator)
            processes = max(1, trainer.num_devices)
        else:
            on_gpu, processes = torch.cuda.is_available(), 1
        return default_num_workers(num_samples, on_gpu=on_gpu, processes=processes)

    # -- Lightning hooks -------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Nothing to download: the images are already in their folders."""

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs ("fit": train+val, "validate": val, "test": test)."""
        if stage in ("fit", "validate", None):
            train, val = self.train_val_samples()
            if self.on_bad_image == "error" and stage in ("fit", None):
                self._refuse_bad_images([p for p, _ in train + val], self.data_root())
            if stage in ("fit", None):
                tf = train_transform(
                    self.image_size, self.crop_scale_min, self.hflip, self.augment, self.crop_pct
                )
                self.train_dataset = ImageFileDataset(train, tf, self.on_bad_image)
            self.val_dataset = ImageFileDataset(val, self._eval_transform(), self.on_bad_image)
        if stage == "test" or (stage is None and self.has_test_split()):
            self.test_dataset = ImageFileDataset(
                self.test_samples(), self._eval_transform(), self.on_bad_image
            )

    def convert(
        self, to: str, output: str, workers: int | None = None, echo: Callable[[str], None] = print
    ) -> list[str]:
        """Write this data's splits in another format (``visionkit data convert``): ``litdata`` shards.

        The splits are the ones training would use (``val_split`` and ``seed`` included).
        """
        if to != "litdata":
            raise UsageError(f"--to {to!r}: this dataset converts to: litdata")
        self.prepare_data()
        train, val = self.train_val_samples()
        splits = {"train": train, "val": val}
        if self.has_test_split():
            splits["test"] = self.test_samples()
        for bad in self.bad_samples():
            echo(f"visionkit: left out {bad.describe()}")
        from visionkit_imagefolder.streaming import convert_to_litdata

        info = self.data_info()
        meta = convert_to_litdata(
            splits,
            info.class_names,
            output,
            multilabel=bool(info.extra.get("multilabel")),
            workers=workers,
            echo=echo,
        )
        counts = ", ".join(f"{n} {split}" for split, n in meta["splits"].items())
        return [
            f"Converted {counts} images of {len(info.class_names)} classes to litdata shards in {output}",
            f"Train on them with: visionkit train --data litdata:{output}",
        ]

    # -- samples per split (a manifest overrides these) ------------------------------------
    def data_root(self) -> Path:
        """The folder sample paths are shown relative to in messages."""
        return self.layout().root

    def train_val_samples(self) -> tuple[list[LabelledFile], list[LabelledFile]]:
        """``(path, label)`` of the training and validation images (split once, then cached)."""
        return self._train_val_samples(self.layout())

    def test_samples(self) -> list[LabelledFile]:
        """``(path, label)`` of the test images; a UsageError when the data has no test split."""
        layout = self.layout()
        if layout.test_dir is None:
            raise UsageError(
                f"data folder {str(layout.root)!r} has no test/ folder; add test/ with one folder "
                "per class to run test"
            )
        return find_samples(layout.test_dir, layout.classes, require_all=False)

    def _refuse_bad_images(self, paths: list[str], root: Path) -> None:
        """Decode every file before training starts and raise one error listing the unreadable ones.

        Runs once per datamodule, in ``cpus / processes`` worker processes (each DDP process
        checks, so each gets its share of the CPUs).
        """
        if self._checked:
            return
        from visionkit_imagefolder.check import available_cpus, describe_bad_files, inspect_files

        processes = max(1, self.trainer.num_devices) if self.trainer is not None else 1
        bad = [f for f in inspect_files(paths, max(1, available_cpus() // processes)) if f.error]
        if bad:
            raise UsageError(
                f"{len(bad)} of {len(paths)} training and validation images in {str(root)!r} cannot be "
                f"read (--on-bad-image error):\n{describe_bad_files(bad, root)}\n"
                "Fix or remove them, or pass --on-bad-image skip to train without them "
                "(visionkit data check DIR lists every problem)"
            )
        self._checked = True

    def _eval_transform(self) -> Any:
        return eval_transform(self.image_size, self.crop_pct)

    def _train_val_samples(self, layout: Layout) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        if self._split is None:
            train = find_samples(layout.train_dir, layout.classes, require_all=True)
            if layout.val_dir is not None:
                val = find_samples(layout.val_dir, layout.classes, require_all=False)
            else:
                train, val = stratified_split(train, self.val_split, self.seed)
                if not val:
                    raise UsageError(
                        f"no validation images left after splitting {str(layout.train_dir)!r} by "
                        f"--val-split {self.val_split}; add images (two or more per class) or a val/ folder"
                    )
            self._split = (train, val)
        return self._split


def _check_recipe(augment: str, sampler: str) -> None:
    if augment not in AUGMENTATIONS:
        raise UsageError(f"--augment {augment!r} is not one of: {', '.join(AUGMENTATIONS)}")
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler!r} is not one of: {', '.join(SAMPLERS)}")


def _check_options(
    batch_size: int,
    image_size: int | None,
    val_split: float,
    num_workers: int | None,
    on_bad_image: str,
    crop_scale_min: float,
    crop_pct: float,
) -> None:
    problems = []
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if image_size is not None and image_size < 1:
        problems.append(f"image_size must be positive, got {image_size}")
    if not 0.0 < val_split < 1.0:
        problems.append(f"val_split must be between 0 and 1, got {val_split}")
    if num_workers is not None and num_workers < 0:
        problems.append(f"num_workers must be >= 0, got {num_workers}")
    if on_bad_image not in ("skip", "error"):
        problems.append(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    if not 0.0 < crop_scale_min <= 1.0:
        problems.append(f"data.crop_scale_min must be in (0, 1], got {crop_scale_min}")
    if not 0.0 < crop_pct <= 1.0:
        problems.append(f"data.crop_pct must be in (0, 1], got {crop_pct}")
    if problems:
        raise UsageError("; ".join(problems))
