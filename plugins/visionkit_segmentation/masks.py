"""Read and validate image/mask pairs with Pillow and numpy only (shared by training and ``data check``).

A mask is one class index per pixel: a greyscale (``L``) or palette (``P``) PNG, whose
palette *indices* are the classes (Pascal VOC); 255 marks pixels to ignore. A colour mask
is accepted only when its channels are equal (a grey image saved as RGB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from visionkit_core.kit.skips import UnusableSample, error_text
from visionkit_segmentation.layouts import IGNORE_INDEX, Pair

#: What Pillow and numpy raise for broken files (PIL raises SyntaxError for some bad headers).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError)


class BadPair(UnusableSample):
    """A sample that cannot be used: ``path`` is the offending file, ``reason`` says why."""


def read_mask(path: str) -> np.ndarray:
    """The ``(H, W)`` uint8 class indices of a mask file; raises :class:`BadPair` saying why not."""
    try:
        if os.path.getsize(path) == 0:
            raise BadPair(path, "cannot read mask: empty file (0 bytes)")
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L"):
                return np.array(im, dtype=np.uint8)  # "P": the palette indices, not the colours
            if mode == "1":
                return np.array(im, dtype=np.uint8)
            if mode.startswith("I"):
                deep = np.array(im, dtype=np.int64)
                if deep.min() < 0 or deep.max() > IGNORE_INDEX:
                    raise BadPair(path, f"mask values up to {int(deep.max())}: class indices must be 0-255")
                return deep.astype(np.uint8)
            if mode in ("RGB", "RGBA", "LA"):
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
                if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
                    return np.ascontiguousarray(arr[..., 0])
            raise BadPair(
                path,
                f"mask is a {mode} colour image; expected one class index per pixel "
                "(a greyscale or palette PNG)",
            )
    except BadPair:
        raise
    except DECODE_ERRORS as err:
        raise BadPair(path, f"cannot read mask: {error_text(err)}") from None


def read_image_pil(path: str) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB pixels of an image file (full decode); raises :class:`BadPair`."""
    try:
        if os.path.getsize(path) == 0:
            raise BadPair(path, "cannot read image: empty file (0 bytes)")
        with Image.open(path) as im:
            im.seek(0)
            return np.asarray(im.convert("RGB"))
    except BadPair:
        raise
    except DECODE_ERRORS as err:
        raise BadPair(path, f"cannot read image: {error_text(err)}") from None


def check_mask(pair: Pair, mask: np.ndarray, image_hw: tuple[int, int], num_classes: int | None) -> None:
    """Raise :class:`BadPair` when the mask's size differs from the image's or it holds unknown classes."""
    if tuple(mask.shape) != tuple(image_hw):
        h, w = image_hw
        mh, mw = mask.shape
        raise BadPair(pair.mask, f"mask is {mw}x{mh} but its image {pair.image} is {w}x{h}")
    if num_classes is not None:
        wrong = [int(v) for v in np.unique(mask) if v >= num_classes and v != IGNORE_INDEX]
        if wrong:
            shown = ", ".join(map(str, wrong[:8])) + (" ..." if len(wrong) > 8 else "")
            raise BadPair(
                pair.mask,
                f"mask values {shown} are not classes (there are {num_classes}: 0-{num_classes - 1}; "
                f"{IGNORE_INDEX} = ignore)",
            )


@dataclass(frozen=True)
class PairCheck:
    """What checking one pair found: the problem (``path``/``reason``) or the classes present."""

    pair: Pair
    path: str | None = None
    reason: str | None = None
    classes: tuple[int, ...] = ()


def inspect_pair(pair: Pair, num_classes: int | None) -> PairCheck:
    """Decode both files completely, as training would, and check them against each other."""
    try:
        image = read_image_pil(pair.image)
        mask = read_mask(pair.mask)
        check_mask(pair, mask, image.shape[:2], num_classes)
    except BadPair as bad:
        return PairCheck(pair, bad.path, bad.reason)
    present = tuple(int(v) for v in np.unique(mask) if v != IGNORE_INDEX)
    return PairCheck(pair, classes=present)
