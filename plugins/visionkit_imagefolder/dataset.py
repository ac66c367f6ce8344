"""Decode image files to uint8 tensors, transform them, and collate them: the ImageFolder data path.

Everything stays uint8 from the file to the batch; the model normalises on the device.
``torchvision.io`` decodes what it can (JPEG, PNG, GIF, WebP); PIL handles the rest
(BMP, TIFF, and anything torchvision rejects), without touching global PIL settings.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

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

from visionkit_core.errors import UsageError
from visionkit_imagefolder.folders import Sample

_TORCHVISION_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
# What decoders raise for broken files (PIL raises SyntaxError for some malformed headers).
_DECODE_ERRORS = (RuntimeError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

#: One sample: the image, its label, and the paths of unreadable files replaced by it.
Item = tuple[Tensor, int, tuple[str, ...]]
#: One batch from the loaders: images (B, 3, S, S) uint8, labels (B,), unreadable paths met.
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
    """Read an image file as a ``(3, H, W)`` uint8 RGB tensor (first frame of an animation)."""
    path = os.fspath(path)
    if decode_image is not None and os.path.splitext(path)[1].lower() in _TORCHVISION_EXTENSIONS:
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 warns on every call that its decoders are deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(path, mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # a file libjpeg/libpng rejects; PIL may still read it (or explain why not)
        else:
            return _to_rgb_uint8(img)
    return _decode_with_pil(path)


def _to_rgb_uint8(img: Tensor) -> Tensor:
    if img.ndim == 4:  # animated GIF/WebP: (frames, C, H, W)
        img = img[0]
    if img.dtype == torch.uint16:  # 16-bit PNG
        img = (img.to(torch.int32) // 257).to(torch.uint8)
    return img


def _decode_with_pil(path: str) -> Tensor:
    with Image.open(path) as im:
        im.seek(0)
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: convert() would clip
            grey = (np.asarray(im, dtype=np.int64) // 257).clip(0, 255).astype(np.uint8)
            arr = np.repeat(grey[..., None], 3, axis=2)
        else:
            arr = np.array(im.convert("RGB"))
    # numpy's transpose copy: torch's multi-threaded uint8 permute copy is ~20x slower here
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def train_transform(image_size: int, crop_scale_min: float = 0.35, hflip: bool = True) -> v2.Compose:
    """Training augmentation on uint8 tensors: random resized crop (+ horizontal flip)."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), antialias=True)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
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
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._get(index)
        return self._get(key)

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


def collate_samples(items: Sequence[Item]) -> RawBatch:
    """Stack uint8 images and labels; gather the unreadable paths the samples replaced."""
    images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.long)
    skipped = [p for item in items for p in item[2]]
    return images, labels, skipped
