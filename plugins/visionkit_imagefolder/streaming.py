"""Streaming shards with litdata: ``visionkit data convert ... --to litdata OUT`` and ``--data litdata:OUT``.

A converted dataset is a folder (local, or an object-store URL such as ``s3://bucket/x``)::

    OUT/visionkit.json       class names, multi-label or not, samples per split
    OUT/train/ OUT/val/ [OUT/test/]   litdata ``optimize`` output: index.json + chunk-*.bin

Each sample holds the image file's encoded bytes (decoded by the training workers exactly
as the ImageFolder path decodes files), its label (a class index, or space-separated
indices for multi-label data) and its original path. Converting checks every image first
and leaves unreadable ones out, naming them, so every shard decodes and every DDP rank
gets the same number of batches.

:class:`StreamingDataModule` reads the splits with litdata's ``StreamingDataset``, which
shards by node, rank and loader worker itself (created in ``setup()``, after the process
group exists) and shuffles by ``(seed, epoch)``; remote data is cached under ``cache_dir``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from visionkit_core import DataInfo, DataSpec, UsageError
from visionkit_imagefolder.datamodule import ImageFolderDataModule
from visionkit_imagefolder.dataset import (
    Item,
    collate_samples,
    decode_image_bytes,
    one_thread,
    train_transform,
    truth_of,
)

META_FILE = "visionkit.json"
META_FORMAT = "visionkit-litdata"
SPLITS = ("train", "val", "test")
#: Chunks of about this size: big enough for few files, small enough to stream.
CHUNK_BYTES = "64MB"


def is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _local(source: str) -> str:
    return source[len("file://") :] if source.startswith("file://") else os.path.expanduser(source)


def _join(source: str, *parts: str) -> str:
    return (
        "/".join([source.rstrip("/"), *parts]) if is_remote(source) else os.path.join(_local(source), *parts)
    )


def read_meta(source: str) -> dict[str, Any]:
    """The ``visionkit.json`` of converted data at ``source``; a UsageError naming what to do when absent."""
    hint = f"make it with `visionkit data convert DIR_OR_CSV --to litdata {source}`"
    try:
        if is_remote(source):
            from litdata.streaming.fs_provider import _get_fs_provider

            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, META_FILE)
                _get_fs_provider(source).download_file(_join(source, META_FILE), local)
                text = Path(local).read_text(encoding="utf-8")
        else:
            text = Path(_join(source, META_FILE)).read_text(encoding="utf-8")
        meta = json.loads(text)
    except FileNotFoundError:
        raise UsageError(
            f"--data litdata:{source}: no converted dataset there (no {META_FILE}); {hint}"
        ) from None
    except (OSError, ValueError) as err:
        raise UsageError(f"--data litdata:{source}: cannot read {META_FILE}: {err}; {hint}") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise UsageError(
            f"--data litdata:{source}: {META_FILE} is not a visionkit litdata description; {hint}"
        )
    return meta


def _write_meta(output: str, meta: dict[str, Any]) -> None:
    text = json.dumps(meta, indent=2) + "\n"
    if not is_remote(output):
        Path(_join(output, META_FILE)).write_text(text, encoding="utf-8")
        return
    from litdata.streaming.fs_provider import _get_fs_provider

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, META_FILE)
        Path(local).write_text(text, encoding="utf-8")
        _get_fs_provider(output).upload_file(local, _join(output, META_FILE))


# -- converting -------------------------------------------------------------------------------


def encode_sample(sample: tuple[str, Any]) -> dict[str, Any]:
    """One shard sample: the file's bytes, its label, its path (top level: optimize's workers pickle it)."""
    path, label = sample
    with open(path, "rb") as f:
        data = f.read()
    if isinstance(label, tuple):  # multi-hot -> "i j k"
        label = " ".join(str(i) for i, v in enumerate(label) if v)
    # the path as bytes: litdata reads a str naming an image file as that image (stored and decoded again)
    return {"image": data, "label": label, "path": path.encode("utf-8")}


def convert_to_litdata(
    splits: dict[str, list[tuple[str, Any]]],
    class_names: Sequence[str],
    output: str,
    *,
    multilabel: bool = False,
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write ``splits`` as litdata shards under ``output`` with its ``visionkit.json``; return the latter.

    Every image is decoded once first (Pillow, in ``workers`` processes); unreadable ones are
    left out and named. ``output`` must be new or empty: converting never overwrites data.
    """
    from litdata import optimize

    from visionkit_imagefolder.check import available_cpus, inspect_files

    if not is_remote(output):
        out = Path(_local(output))
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"output {output!r} already exists and is not empty; choose a new folder")
        out.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(4, available_cpus()))
    written: dict[str, int] = {}
    left_out: list[str] = []
    for split in SPLITS:
        samples = splits.get(split) or []
        if not samples:
            continue
        checks = inspect_files([p for p, _ in samples], workers)
        bad = {c.path: c.error for c in checks if c.error}
        for path, reason in bad.items():
            echo(f"visionkit: left out unreadable image {path!r}: {reason}")
            left_out.append(path)
        good = [s for s in samples if s[0] not in bad]
        if not good:
            raise UsageError(f"no readable images in the {split} split; nothing to convert")
        echo(f"visionkit: writing {len(good)} {split} images to {_join(output, split)}")
        optimize(
            fn=encode_sample,
            inputs=good,
            output_dir=_join(output, split),
            chunk_bytes=CHUNK_BYTES,
            num_workers=min(workers, len(good)),
            mode="overwrite",
            verbose=False,
            start_method="fork" if os.name == "posix" else None,
        )
        written[split] = len(good)
    counts = [0] * len(class_names)
    for _, label in [s for s in splits.get("train") or [] if s[0] not in set(left_out)]:
        if isinstance(label, tuple):
            counts = [c + int(v) for c, v in zip(counts, label, strict=True)]
        else:
            counts[label] += 1
    meta = {
        "format": META_FORMAT,
        "version": 1,
        "class_names": list(class_names),
        "multilabel": bool(multilabel),
        "splits": written,
        "class_counts": counts,
        "left_out": left_out,
    }
    _write_meta(output, meta)
    return meta


# -- reading -----------------------------------------------------------------------------------


def resolve_litdata(name: str) -> type[StreamingDataModule]:
    """The ``litdata:`` namespace: ``litdata:OUT`` is a StreamingDataModule over ``OUT``."""
    return StreamingDataModule.bound(name)


def _decode_label(label: Any, num_classes: int, multilabel: bool) -> Any:
    if not multilabel:
        return int(label)
    hot = [0] * num_classes
    for i in str(label).split():
        hot[int(i)] = 1
    return tuple(hot)


def _streaming_dataset_class() -> type:
    from litdata import StreamingDataset

    class ImageShards(StreamingDataset):  # type: ignore[misc]
        """litdata samples decoded to ``(uint8 image, truth, skipped paths)`` like ImageFileDataset items."""

        def __init__(
            self, input_dir: str, transform: Any, num_classes: int, multilabel: bool, **kwargs: Any
        ) -> None:
            super().__init__(input_dir, **kwargs)
            self.image_transform = transform
            self.num_classes = num_classes
            self.multilabel = multilabel

        def __getitem__(self, index: Any) -> Item:
            sample = super().__getitem__(index)
            label = _decode_label(sample["label"], self.num_classes, self.multilabel)
            with one_thread():  # per-image work on one thread, as ImageFileDataset does (see there)
                try:
                    image = decode_image_bytes(sample["image"])
                except Exception:  # converting checked every image; keep the batch shape if one fails
                    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
                    skipped: tuple[str, ...] = (bytes(sample["path"]).decode("utf-8"),)
                else:
                    skipped = ()
                return self.image_transform(image), truth_of(label), skipped

    return ImageShards


class StreamingDataModule(ImageFolderDataModule):
    """Classification data streamed from litdata shards (``--data litdata:DIR_OR_URL``).

    Takes the ImageFolder options but not ``val_split`` (the shards hold their splits) or
    ``sampler`` (litdata streams chunks in a seeded shuffle; it has no weighted draw).

    Args:
        root: the converted folder or URL (given by the ``litdata:`` name).
        cache_dir: where litdata caches chunks of remote data (default: litdata's).
        max_cache_size: the most that cache may hold, e.g. ``"50GB"``.
    """

    #: The folder or URL of a class bound by the ``litdata:`` namespace.
    source: ClassVar[str | None] = None

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        hflip: bool = True,
        crop_scale_min: float = 0.35,
        crop_pct: float = 0.875,
        pin_memory: bool | None = None,
        augment: str = "basic",
        cache_dir: str | None = None,
        max_cache_size: str = "50GB",
    ) -> None:
        source = os.fspath(root) if root is not None else self.source
        if source is None:
            raise UsageError("the litdata dataset needs shards: pass --data litdata:DIR_OR_URL")
        super().__init__(
            root=None,
            batch_size=batch_size,
            image_size=image_size,
            seed=seed,
            num_workers=num_workers,
            on_bad_image=on_bad_image,
            hflip=hflip,
            crop_scale_min=crop_scale_min,
            crop_pct=crop_pct,
            pin_memory=pin_memory,
            augment=augment,
        )
        self.hparams["root"] = source
        self.source_dir = source if is_remote(source) else str(Path(_local(source)).resolve())
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size
        self._meta: dict[str, Any] | None = None

    @classmethod
    def bound(cls, source: str) -> type[StreamingDataModule]:
        """A subclass reading ``source`` (what the ``litdata:`` namespace resolves a name to)."""
        return type(cls.__name__, (cls,), {"source": source, "__module__": cls.__module__})

    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = read_meta(self.source_dir)
        return self._meta

    # -- the visionkit data contract ----------------------------------------------------------
    def class_names(self) -> list[str]:
        return list(self.meta()["class_names"])

    def class_counts(self) -> list[int]:
        return [int(c) for c in self.meta().get("class_counts") or []]

    def data_info(self) -> DataInfo:
        extra: dict[str, Any] = {"class_counts": self.class_counts()}
        if self.meta().get("multilabel"):
            extra["multilabel"] = True
            extra["train_images"] = int(self.meta()["splits"].get("train", 0))
        train_size = int(self.meta()["splits"].get("train", 0)) or None
        return DataInfo(class_names=self.class_names(), extra=extra, train_size=train_size)

    def has_test_split(self) -> bool:
        return bool(self.meta()["splits"].get("test"))

    def data_spec(self) -> DataSpec:
        return DataSpec(splits=("train", "val", "test") if self.has_test_split() else ("train", "val"))

    # -- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        splits = self.meta()["splits"]
        if stage in ("fit", None):
            tf = train_transform(
                self.image_size, self.crop_scale_min, self.hflip, self.augment, self.crop_pct
            )
            self.train_dataset = self._shards("train", tf, shuffle=True)
        if stage in ("fit", "validate", None):
            self.val_dataset = self._shards("val", self._eval_transform(), shuffle=False)
        if stage == "test" or (stage is None and splits.get("test")):
            if not splits.get("test"):
                raise UsageError(f"litdata:{self.hparams['root']} has no test split; convert data with one")
            self.test_dataset = self._shards("test", self._eval_transform(), shuffle=False)

    def _shards(self, split: str, transform: Any, *, shuffle: bool) -> Any:
        if not self.meta()["splits"].get(split):
            raise UsageError(f"litdata:{self.hparams['root']} has no {split} split")
        kwargs: dict[str, Any] = {
            "shuffle": shuffle,
            "seed": self.seed,
            "max_cache_size": self.max_cache_size,
        }
        if self.cache_dir is not None:
            kwargs["cache_dir"] = self.cache_dir
        meta = self.meta()
        return _streaming_dataset_class()(
            _join(self.source_dir, split),
            transform,
            len(meta["class_names"]),
            bool(meta.get("multilabel")),
            **kwargs,
        )

    def train_dataloader(self) -> Any:
        return self._streaming_loader(self.dataset("train", "fit"))

    def val_dataloader(self) -> Any:
        return self._streaming_loader(self.dataset("val", "validate"))

    def test_dataloader(self) -> Any:
        return self._streaming_loader(self.dataset("test", "test"))

    def _streaming_loader(self, dataset: Any) -> Any:
        from litdata import StreamingDataLoader

        # litdata shards an IterableDataset by worker itself, so Lightning's length warning does not apply
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
        workers = self.resolve_num_workers(len(dataset))
        return StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_samples,
            persistent_workers=workers > 0,
        )

    def convert(
        self, to: str, output: str, workers: int | None = None, echo: Callable[[str], None] = print
    ) -> Any:
        raise UsageError(f"litdata:{self.hparams['root']} is already converted; train on it with --data")
