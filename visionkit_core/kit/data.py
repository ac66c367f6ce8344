"""The data base: decoding, seeded datasets that skip bad samples, loaders, bad-sample records.

- :func:`decode_image`: an image file as a ``(3, H, W)`` uint8 tensor (torchvision.io for
  JPEGs, Pillow for the rest; PNGs never go to torchvision, whose decoder crashes the process
  on some truncated files).
- :class:`SeededDataset`: ``dataset[(index, seed)]`` draws the random transform from ``seed``
  (what :class:`~visionkit_core.kit.sampler.EpochSeededSampler` yields), and a sample that
  raises :class:`UnusableSample` is replaced by the next good one and travels with the item,
  so bad samples found inside DataLoader workers reach the main process.
  (:mod:`~visionkit_core.kit.skips` records them in the main process, every reason kept.)
- :class:`SeededDataModule`: the loader plumbing of a LightningDataModule: the seeded (or
  ``balanced``) training sampler sharded by rank, workers, collate, recording bad samples in
  ``on_before_batch_transfer`` (the main process), evaluation that counts each image once
  over all ranks (:class:`ShardedEval`, ``shard_eval``), and the one error that lists every
  bad sample under ``--on-bad-image error`` (:meth:`~SeededDataModule.refuse_bad_samples`).
- :class:`PredictImages`: image files to predict, an unreadable one gives ``ok=False``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from visionkit_core import BadSample, UsageError
from visionkit_core.kit.sampler import EpochSeededSampler, balanced_weights
from visionkit_core.kit.skips import DECODE_ERRORS, BadSampleLog, UnusableSample

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; Pillow takes over if it goes away
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as _tv_decode
except ImportError:  # pragma: no cover - depends on the installed torchvision
    _tv_decode = None

#: ``--sampler`` choices of a :class:`SeededDataModule`.
SAMPLERS = ("default", "balanced")
#: How many bad samples an error message lists before "and N more".
LIST_LIMIT = 20
_TORCHVISION_FORMATS = frozenset({"JPEG"})  # Pillow's name for the format it detected


# -- decoding ---------------------------------------------------------------------------------


def decode_image(path: str | os.PathLike[str]) -> Tensor:
    """Read an image file as a ``(3, H, W)`` uint8 RGB tensor (first frame of an animation).

    Pillow reads the header first (format, size, its decompression-bomb limit); torchvision.io
    then decodes JPEGs (about 1.7x faster) and Pillow the rest. Colour modes convert as Pillow's
    ``convert("RGB")`` does; 16-bit images are scaled to 8 bits, not clipped. Raises one of
    :data:`DECODE_ERRORS` for a file that cannot be read.
    """
    path = os.fspath(path)
    with Image.open(path) as im:  # the header only; raises DecompressionBombError for huge sizes
        if _tv_decode is None or im.format not in _TORCHVISION_FORMATS:
            return _pil_to_tensor(im)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 warns on every call
            img: Tensor = _tv_decode(path, mode=ImageReadMode.RGB)
    except RuntimeError:
        pass  # a file libjpeg rejects; Pillow may still read it (or explain why not)
    else:
        return img
    with Image.open(path) as im:
        return _pil_to_tensor(im)


def decode_image_bytes(data: bytes | memoryview) -> Tensor:
    """:func:`decode_image` for an encoded image held in memory (a streaming shard's bytes)."""
    raw = bytes(data)
    with Image.open(io.BytesIO(raw)) as im:
        if _tv_decode is None or im.format not in _TORCHVISION_FORMATS:
            return _pil_to_tensor(im)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            img: Tensor = _tv_decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8), ImageReadMode.RGB)
    except RuntimeError:
        pass
    else:
        return img
    with Image.open(io.BytesIO(raw)) as im:
        return _pil_to_tensor(im)


def _pil_to_tensor(im: Image.Image) -> Tensor:
    im.seek(0)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: convert() would clip
        deep = np.asarray(im, dtype=np.int64).clip(0, 65535)
        grey = ((deep * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        arr = np.repeat(grey[..., None], 3, axis=2)
    else:
        arr = np.asarray(im.convert("RGB"))
    # numpy's transpose copy: torch's multi-threaded uint8 permute copy is ~20x slower here
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run per-image work on one torch thread, as DataLoader workers always do.

    Without workers the loader runs in the training process, whose torch uses every core;
    splitting one image's resize over threads gains little and, on busy cores, costs a lot
    (RandomResizedCrop of a 256 px image: 10.7 ms with 2 threads, 0.35 ms with 1, measured on
    2 shared cores). A no-op inside workers and outside the main thread.
    """
    threads = torch.get_num_threads()
    if threads == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- datasets ---------------------------------------------------------------------------------


class SeededDataset(Dataset[tuple[Any, ...]]):
    """Samples loaded on access, seeded per sample, bad ones replaced by the next good one.

    A subclass implements :meth:`load` (index -> a tuple, transformed; raise
    :class:`UnusableSample` for a sample that cannot be used). An item is that tuple plus one
    more element: the bad samples it replaced, as :meth:`skip_entry` gives them (``(path,
    reason)``). ``on_bad_image="error"`` raises :meth:`refuse`'s error at the first bad sample.

    Args:
        samples: what :meth:`load` reads (paths, pairs, annotation records...).
        on_bad_image: ``"skip"`` or ``"error"``.
    """

    def __init__(self, samples: Sequence[Any], on_bad_image: str = "skip") -> None:
        self.samples = list(samples)
        self.on_bad_image = on_bad_image
        self._bad: dict[int, UnusableSample] = {}  # per process: a worker remembers what failed

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Any, ...]:
        """The transformed sample ``index``; raise :class:`UnusableSample` when it cannot be used."""
        raise NotImplementedError

    def skip_entry(self, bad: UnusableSample) -> Any:
        """How a replaced sample travels with the item (``(path, reason)``)."""
        return (bad.path, bad.reason)

    def refuse(self, bad: UnusableSample) -> Exception:
        """The error raised for a bad sample under ``on_bad_image="error"``."""
        return UsageError(f"{bad.path}: {bad.reason} (--on-bad-image error)")

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...]:
        """``dataset[i]``, or ``dataset[(i, seed)]`` to draw the random transform from ``seed``."""
        if isinstance(key, tuple):
            index, seed = key
            # Only the CPU generator, which the transforms draw from: fork_rng + manual_seed
            # also visit every accelerator backend, 120 us per sample against 2 us here.
            gen = torch.default_generator
            state = gen.get_state()
            gen.manual_seed(seed)
            try:
                return self._get(index)
            finally:
                gen.set_state(state)
        return self._get(key)

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[tuple[Any, ...]]:
        """One batch of samples (the DataLoader's batched fetch), on one intra-op thread."""
        with one_thread():
            return [self[key] for key in keys]

    def none_usable(self, example: UnusableSample) -> Exception:
        """The error raised when no sample of the dataset can be used."""
        return UsageError(
            f"none of the {len(self.samples)} samples can be used, e.g. {example.path}: {example.reason}"
        )

    def _get(self, index: int) -> tuple[Any, ...]:
        skipped: list[Any] = []
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            bad = self._bad.get(i)
            if bad is None:
                try:
                    return (*self.load(i), tuple(skipped))
                except UnusableSample as err:
                    if self.on_bad_image == "error":
                        raise self.refuse(err) from None
                    self._bad[i] = bad = err
            skipped.append(self.skip_entry(bad))
        raise self.none_usable((self._bad.get(index % n) if n else None) or UnusableSample("?", "no samples"))


class PredictImages(Dataset[dict[str, Any]]):
    """Image files to predict: ``{"image": uint8 (3, S, S), "ok", "size": (h, w), "path"}`` each.

    ``transform`` turns a decoded image into what the model sees. An unreadable file gives
    ``ok=False`` and a blank image, so one bad file never stops a run. ``stack=False`` keeps the
    images of a batch as a list (detectors take lists).
    """

    def __init__(
        self,
        files: Sequence[Any],
        image_size: int,
        transform: Callable[[Tensor], Tensor],
        stack: bool = True,
        decode: Callable[[str], Tensor] = decode_image,
    ) -> None:
        self.files = [str(f) for f in files]
        self.image_size = int(image_size)
        self.transform = transform
        self.stack = stack
        self.decode = decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, s = self.files[index], self.image_size
        try:
            image = self.decode(path)
        except (UnusableSample, *DECODE_ERRORS):
            return {
                "image": torch.zeros(3, s, s, dtype=torch.uint8),
                "ok": False,
                "size": (s, s),
                "path": path,
            }
        size = (int(image.shape[1]), int(image.shape[2]))
        return {"image": self.transform(image), "ok": True, "size": size, "path": path}

    def collate_fn(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Images stacked (or a list); sizes as ``(h, w)`` tuples; paths as strings."""
        images = [it["image"] for it in items]
        return {
            "image": torch.stack(images) if self.stack else images,
            "ok": torch.tensor([bool(it["ok"]) for it in items]),
            "size": [tuple(it["size"]) for it in items],
            "path": [it["path"] for it in items],
        }


# -- the LightningDataModule's loader plumbing --------------------------------------------------


def check_common_options(
    batch_size: int, val_split: float, on_bad_image: str, sampler: str = "default"
) -> list[str]:
    """The problems of the options every :class:`SeededDataModule` takes (empty when fine)."""
    problems = []
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 < val_split < 1.0:
        problems.append(f"val_split must be between 0 and 1, got {val_split}")
    if on_bad_image not in ("skip", "error"):
        problems.append(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    if sampler not in SAMPLERS:
        problems.append(f"--sampler {sampler!r} is not one of: {', '.join(SAMPLERS)}")
    return problems


class ShardedEval(DistributedSampler):  # type: ignore[type-arg]
    """Rank ``r`` of ``w`` evaluates samples ``r, r + w, ...``: every sample exactly once over all ranks.

    Lightning's own distributed sampler repeats samples to even the ranks out, which would count
    them twice in a metric such as mAP; this one does not (ranks may differ by one sample).
    """

    def __init__(self, length: int, num_replicas: int, rank: int) -> None:
        # no super().__init__: it needs a dataset and may query torch.distributed. A
        # DistributedSampler, so that Lightning uses it as it is instead of wrapping it.
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.epoch, self.shuffle, self.drop_last = 0, False, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)  # the order never changes

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SeededDataModule(L.LightningDataModule):
    """Loader plumbing for datamodules over :class:`SeededDataset` splits.

    A subclass sets ``batch_size``, ``seed``, ``sampler`` (``default`` or ``balanced``) and
    ``num_workers`` (``None``: :meth:`default_num_workers`), fills :attr:`datasets` in
    ``setup``, and names its :attr:`collate` function. For ``--sampler balanced`` it gives each
    training sample's classes in :meth:`sample_targets`.
    """

    batch_size: int = 1
    seed: int = 0
    sampler: str = "default"
    num_workers: int | None = None
    #: ``collate(items)`` -> the batch the loaders yield (the replaced samples last).
    collate: Callable[[Sequence[Any]], Any] | None = None
    #: what :class:`BadSampleLog` warns with.
    skip_warning = (
        "skipped {path}: {reason} (replaced by another sample); pass --on-bad-image error to stop instead"
    )
    #: the reason recorded for a replaced sample that travels as a bare path.
    skip_reason = "unreadable image"
    #: the training sampler (:class:`~visionkit_core.kit.recipe.EpochKeySampler` adds the epoch to each key).
    train_sampler_class: type[EpochSeededSampler] = EpochSeededSampler

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Any] = {}
        self.skipped = BadSampleLog(self.skip_warning)

    # -- for subclasses --------------------------------------------------------------------------
    #: the smallest ``image_size`` :meth:`configure` accepts.
    min_image_size = 1
    default_image_size = 224

    def configure(self, arguments: Mapping[str, Any], problems: Sequence[str] = ()) -> None:
        """Check and keep the options every datamodule takes, from its ``__init__``'s ``locals()``.

        ``root``, ``batch_size``, ``image_size`` (``None``: :attr:`default_image_size`),
        ``val_split``, ``seed``, ``num_workers``, ``on_bad_image`` and ``sampler`` become
        attributes; every argument is saved as a hyperparameter (``root`` as a plain string, so
        a checkpoint loads with ``weights_only``). One ``UsageError`` lists every problem, the
        common ones and the subclass's ``problems``.
        """
        a = dict(arguments)
        found = check_common_options(
            a["batch_size"], a.get("val_split", 0.2), a["on_bad_image"], a.get("sampler", "default")
        )
        if a.get("image_size") is not None and a["image_size"] < self.min_image_size:
            found.append(f"image_size must be at least {self.min_image_size}, got {a['image_size']}")
        found += problems
        if found:
            raise UsageError("; ".join(found))
        frame = inspect.currentframe()
        while frame is not None and frame.f_code.co_name == "configure":  # a subclass's configure too
            frame = frame.f_back
        self.save_hyperparameters(ignore=["root"], frame=frame)
        root = a.get("root")
        self.hparams["root"] = os.fspath(root) if root is not None else None
        self.root: Path | None = Path(root).expanduser() if root is not None else None
        self.batch_size, self.seed, self.num_workers = a["batch_size"], a["seed"], a.get("num_workers")
        self.image_size = int(a["image_size"]) if a.get("image_size") is not None else self.default_image_size
        self.val_split, self.on_bad_image = a.get("val_split", 0.2), a["on_bad_image"]
        self.sampler = a.get("sampler", "default")

    def dataset(self, split: str, stage: str) -> Any:
        """The dataset of ``split``; a clear error when ``setup(stage)`` did not run."""
        if self.datasets.get(split) is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for the {split} dataloader")
        return self.datasets[split]

    def sample_targets(self, dataset: Any) -> Sequence[Any]:
        """Each training sample's class index (or multi-hot tuple) for ``--sampler balanced``."""
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise UsageError(f"--sampler balanced: {type(self).__name__} does not know its samples' classes")
        return list(targets)

    def default_num_workers(self, num_samples: int) -> int:
        """Workers when the user did not choose: 0 on a CPU (the step uses every core), else up to 4."""
        on_cpu = self.trainer is None or type(self.trainer.accelerator).__name__ == "CPUAccelerator"
        return 0 if on_cpu else min(4, max(0, available_cpus() - 1))

    @property
    def pin_memory(self) -> bool:
        return False

    # -- Lightning hooks ---------------------------------------------------------------------------
    def world(self) -> tuple[int, int]:
        """``(world size, global rank)`` of the trainer, ``(1, 0)`` without one."""
        if self.trainer is None:
            return 1, 0
        return max(1, self.trainer.world_size), self.trainer.global_rank

    def train_dataloader(self) -> DataLoader[Any]:
        dataset = self.dataset("train", "fit")
        world, rank = self.world()
        # drop_last keeps batches full (BatchNorm) unless a process would get no batch at all
        drop_last = -(-len(dataset) // world) > self.batch_size
        # order and augmentations are a function of (seed, epoch): exact resume, any worker count
        weights = balanced_weights(self.sample_targets(dataset)) if self.sampler == "balanced" else None
        sampler = self.train_sampler_class(
            len(dataset), self.seed, num_replicas=world, rank=rank, weights=weights
        )
        return self.loader(dataset, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader[Any]:
        return self.eval_loader(self.dataset("val", "validate"))

    def test_dataloader(self) -> DataLoader[Any]:
        return self.eval_loader(self.dataset("test", "test"))

    #: evaluate every sample exactly once over all ranks (:class:`ShardedEval`), for metrics
    #: that count images (mAP); otherwise Lightning shards the evaluation, evening ranks out.
    shard_eval = False

    def eval_loader(self, dataset: Any) -> DataLoader[Any]:
        """The loader of a validation or test split, in order (sharded as :attr:`shard_eval` says)."""
        if not self.shard_eval:
            return self.loader(dataset)
        world, rank = self.world()
        return self.loader(dataset, sampler=ShardedEval(len(dataset), world, rank))

    def resolve_num_workers(self, num_samples: int) -> int:
        """Loader workers: the ``num_workers`` given, else :meth:`default_num_workers`."""
        return self.num_workers if self.num_workers is not None else self.default_num_workers(num_samples)

    def loader(self, dataset: Any, **kwargs: Any) -> DataLoader[Any]:
        """A DataLoader over ``dataset`` with this datamodule's batch size, workers and collate."""
        workers = self.resolve_num_workers(len(dataset))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=type(self).collate,
            **kwargs,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record (and warn once about) the bad samples a batch replaced; hand on the rest.

        A batch carries them last: a ``"skipped"`` entry of a dict batch, or the last element
        of a tuple batch. Lightning runs this in the main process, so samples found inside
        DataLoader workers are recorded here. (Lightning runs one implementation of each
        batch-transfer hook, so the task keeps ``on_after_batch_transfer`` for normalisation.)
        """
        if isinstance(batch, dict) and "skipped" in batch:
            skipped = batch["skipped"]
            batch = {k: v for k, v in batch.items() if k != "skipped"}
        elif isinstance(batch, (tuple, list)) and len(batch) == 3 and isinstance(batch[2], list):
            skipped, batch = batch[2], tuple(batch[:2])
        else:
            return batch
        for entry in skipped:
            path, reason = (entry, self.skip_reason) if isinstance(entry, str) else entry
            self.skipped.record(path, reason)
        return batch

    def bad_samples(self) -> list[BadSample]:
        """The samples skipped while loading (a subclass adds those found when listing)."""
        return self.skipped.bad_samples()

    # -- bad data found up front -----------------------------------------------------------------
    def refuse_bad_samples(self, problems: Sequence[BadSample]) -> None:
        """``--on-bad-image error``: one ``UsageError`` listing ``problems`` (the first
        :data:`LIST_LIMIT`) before training starts; nothing when there are none."""
        if not problems:
            return
        shown = "\n".join(f"  {b.describe()}" for b in problems[:LIST_LIMIT])
        more = f"\n  ... and {len(problems) - LIST_LIMIT} more" if len(problems) > LIST_LIMIT else ""
        where = f" of {str(self.root)!r}" if getattr(self, "root", None) is not None else ""
        raise UsageError(
            f"{len(problems)} problems in the training/validation data{where} (--on-bad-image error):\n"
            f"{shown}{more}\nFix or remove them, or pass --on-bad-image skip "
            "(visionkit data check DIR lists every problem)"
        )

    def warn_left_out(self, count: int, what: str = "unusable annotations") -> None:
        """Warn once that ``count`` images with ``what`` are left out (``visionkit data check``
        lists them); nothing when there are none."""
        if count and not getattr(self, "_warned_left_out", False):
            self._warned_left_out = True
            warnings.warn(
                f"left out {count} images with {what}; `visionkit data check {self.root}` lists them; "
                "pass --on-bad-image error to stop instead",
                UserWarning,
                stacklevel=3,
            )
