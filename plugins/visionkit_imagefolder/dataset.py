"""Decode image files to uint8 tensors, transform them, and collate them: the ImageFolder data path.

Everything stays uint8 from the file to the batch; the model normalises on the device.
Pillow reads every file's header first (format, size, and its decompression-bomb limit);
``torchvision.io`` then decodes JPEGs (about 1.7x faster than Pillow) and Pillow the rest.
PNGs go to Pillow because torchvision's PNG decoder crashes the process (SIGSEGV, measured
with torchvision 0.29) on a PNG whose image data is too short. Global Pillow settings
are never changed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; PIL takes over if it goes away
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - depends on the installed torchvision
    decode_image = None

from visionkit_core import UsageError
from visionkit_imagefolder.folders import Sample

_TORCHVISION_FORMATS = frozenset({"JPEG"})  # Pillow's name for the format it detected
# What decoders raise for broken files (PIL raises SyntaxError for some malformed headers).
_DECODE_ERRORS = (RuntimeError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

#: One sample: the image, its label (a class index, or a multi-hot tuple for multi-label data),
#: and the paths of unreadable files replaced by it.
Item = tuple[Tensor, Any, tuple[str, ...]]
#: One batch from the loaders: images (B, 3, S, S) uint8, labels (B,) int64 or multi-hot (B, C)
#: float32, unreadable paths met.
RawBatch = tuple[Tensor, Tensor, list[str]]


class BadImageError(UsageError):
    """An image file could not be decoded and ``on_bad_image`` is ``"error"``."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's exception is re-raised in the main process as
        # ``BadImageError(<whole worker traceback>)``; keep only the original message.
        if message.startswith("Caught BadImageError"):
            original = message.rstrip().splitlines()[-1].partition("BadImageError: ")[2]
            message = original or message
        super().__init__(message)


def decode_image_file(path: str | os.PathLike[str]) -> Tensor:
    """Read an image file as a ``(3, H, W)`` uint8 RGB tensor (first frame of an animation).

    Colour modes convert as Pillow's ``convert("RGB")`` does (CMYK, grey, palette, 1-bit;
    alpha is dropped); 16-bit images are scaled to 8 bits (65535 -> 255), not clipped.
    Raises one of ``OSError``/``ValueError``/... or ``Image.DecompressionBombError`` for a
    file that cannot be read.
    """
    path = os.fspath(path)
    with Image.open(path) as im:  # the header only; raises DecompressionBombError for huge sizes
        if decode_image is None or im.format not in _TORCHVISION_FORMATS:
            return _pil_to_tensor(im)
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 warns on every call that its decoders are deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            img: Tensor = decode_image(path, mode=ImageReadMode.RGB)
    except RuntimeError:
        pass  # a file libjpeg rejects; Pillow may still read it (or explain why not)
    else:
        return img
    with Image.open(path) as im:
        return _pil_to_tensor(im)


def decode_image_bytes(data: bytes | memoryview) -> Tensor:
    """:func:`decode_image_file` for an encoded image held in memory (a streaming shard's bytes)."""
    import io

    raw = bytes(data)
    with Image.open(io.BytesIO(raw)) as im:
        if decode_image is None or im.format not in _TORCHVISION_FORMATS:
            return _pil_to_tensor(im)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            img: Tensor = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), ImageReadMode.RGB)
    except RuntimeError:
        pass
    else:
        return img
    with Image.open(io.BytesIO(raw)) as im:
        return _pil_to_tensor(im)


def _pil_to_tensor(im: Image.Image) -> Tensor:
    im.seek(0)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: convert() would clip
        # round(v * 255 / 65535): 0 -> 0, 32896 -> 128, 65535 -> 255
        deep = np.asarray(im, dtype=np.int64).clip(0, 65535)
        grey = ((deep * 255 + 32767) // 65535).astype(np.uint8)
        arr = np.repeat(grey[..., None], 3, axis=2)
    else:
        arr = np.asarray(im.convert("RGB"))
    # numpy's transpose copy: torch's multi-threaded uint8 permute copy is ~20x slower here
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


#: ``--augment`` choices; every one but ``none`` starts with the ``basic`` crop and flip.
AUGMENTATIONS = ("none", "basic", "randaugment", "trivialaugment", "autoaugment")


def train_transform(
    image_size: int,
    crop_scale_min: float = 0.35,
    hflip: bool = True,
    augment: str = "basic",
    crop_pct: float = 0.875,
) -> v2.Compose:
    """Training augmentation on uint8 tensors.

    ``none``: the evaluation resize + centre crop; ``basic``: random resized crop (+ horizontal
    flip); ``randaugment`` / ``trivialaugment`` / ``autoaugment``: basic, then torchvision's
    policy of that name (``AutoAugment`` with its ImageNet policy), on uint8 as they expect.
    """
    if augment not in AUGMENTATIONS:
        raise UsageError(f"augment {augment!r} is not one of: {', '.join(AUGMENTATIONS)}")
    if augment == "none":
        return eval_transform(image_size, crop_pct)
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), antialias=True)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment == "randaugment":
        steps.append(v2.RandAugment())
    elif augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif augment == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    return v2.Compose(steps)


def eval_transform(image_size: int, crop_pct: float = 0.875) -> v2.Compose:
    """Deterministic evaluation transform: resize the short side to size/crop_pct, centre crop."""
    return v2.Compose([v2.Resize(round(image_size / crop_pct), antialias=True), v2.CenterCrop(image_size)])


class ImageFileDataset(Dataset[Item]):
    """``(path, label)`` samples decoded on access; unreadable files are skipped or raised.

    With ``on_bad_image="skip"`` an unreadable file is replaced by the next readable sample
    (index + 1, + 2, ... wrapping around), so every batch keeps its size and an all-bad
    batch cannot happen; the replaced paths travel with the sample so the main process can
    warn about each once. With ``"error"`` the first unreadable file raises a UsageError.
    """

    def __init__(
        self, samples: Sequence[Sample], transform: v2.Transform | None = None, on_bad_image: str = "skip"
    ) -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.on_bad_image = on_bad_image
        self._bad: set[int] = set()  # per process: a worker remembers what it failed to read

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
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

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[Item]:
        """One batch of samples (the DataLoader's batched fetch), on one intra-op thread."""
        with one_thread():
            return [self[key] for key in keys]

    def _get(self, index: int) -> Item:
        skipped: list[str] = []
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            path, label = self.samples[i]
            if i not in self._bad:
                try:
                    img = decode_image_file(path)
                except _DECODE_ERRORS as err:
                    if self.on_bad_image == "error":
                        raise BadImageError(
                            f"cannot read image {path!r}: {_first_line(err)}; fix or remove the file, "
                            "or pass --on-bad-image skip"
                        ) from None
                    self._bad.add(i)
                else:
                    if self.transform is not None:
                        img = self.transform(img)
                    return img, label, tuple(skipped)
            skipped.append(path)
        raise BadImageError(f"none of the {n} images could be read, e.g. {self.samples[0][0]!r}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run per-image work on one torch thread, as DataLoader workers always do.

    Without workers the loader runs in the training process, whose torch uses every core.
    Splitting one image's resize or copy over threads gains little, and on a machine whose
    cores are busy with other work it costs a lot: a thread waits for its peer to be
    scheduled (measured on 2 shared cores: RandomResizedCrop of a 256 px image 10.7 ms with
    2 threads, 0.35 ms with 1). A no-op inside workers and outside the main thread.
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


def collate_samples(items: Sequence[Item]) -> RawBatch:
    """Stack uint8 images and labels; gather the unreadable paths the samples replaced."""
    with one_thread():
        images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.long)
    if labels.ndim == 2:  # multi-hot targets of multi-label data
        labels = labels.float()
    skipped = [p for item in items for p in item[2]]
    return images, labels, skipped


class PredictFiles(Dataset[dict[str, Any]]):
    """Image files for ``predict`` as ``{"image", "ok", "size"}`` samples.

    An unreadable file gives a blank image with ``ok=False``: predict names it and goes on.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], image_size: int, crop_pct: float) -> None:
        self.files = list(files)
        self.transform = eval_transform(image_size, crop_pct)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = decode_image_file(self.files[index])
        except Exception:
            blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
            return {"image": blank, "ok": False, "size": torch.tensor([0, 0])}
        size = torch.tensor([int(image.shape[-2]), int(image.shape[-1])])
        return {"image": self.transform(image), "ok": True, "size": size}
