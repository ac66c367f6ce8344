"""Bad samples: the error a loader raises for one, and the record the main process keeps.

Torch-free (Pillow and the core only), so ``data check`` code running in worker processes
can raise :class:`UnusableSample` without importing torch. A sample found bad inside a
DataLoader worker travels with the batch as ``(path, reason)``
(:class:`~visionkit_core.kit.data.SeededDataset`); :class:`BadSampleLog` keeps every pair
once, in the main process, and gives the contract's ``bad_samples()`` list. Under DDP each
rank keeps its own; the core gathers the names of all ranks for summary.json.
"""

from __future__ import annotations

import warnings

from PIL import Image, UnidentifiedImageError

from visionkit_core.plugin.contract import BadSample

#: What decoders raise for broken files (Pillow raises SyntaxError for some malformed headers).
DECODE_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    MemoryError,
    Image.DecompressionBombError,
)


class UnusableSample(Exception):
    """A sample that cannot be used: ``path`` is the offending file, ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def error_text(err: BaseException) -> str:
    """The first line of a decoder's error, in words a user can act on."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image (Pillow cannot identify the file format)"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class BadSampleLog:
    """Every ``(path, reason)`` met while loading, each kept and warned about once.

    A path met for two reasons (an unreadable image, later a mask of the wrong size) is kept
    twice: no reason is lost.

    Args:
        warning: the warning text, formatted with ``path`` and ``reason``.
    """

    def __init__(
        self,
        warning: str = "skipped {path}: {reason} (replaced by another sample); "
        "pass --on-bad-image error to stop instead",
    ) -> None:
        self.warning = warning
        self.entries: dict[tuple[str, str], None] = {}  # an insertion-ordered set

    def record(self, path: str, reason: str) -> bool:
        """Keep ``(path, reason)`` and warn, unless it was met before; True when it is new."""
        key = (str(path), str(reason))
        if key in self.entries:
            return False
        self.entries[key] = None
        warnings.warn(self.warning.format(path=key[0], reason=key[1]), UserWarning, stacklevel=3)
        return True

    @property
    def paths(self) -> set[str]:
        """The paths recorded (whatever the reason)."""
        return {path for path, _ in self.entries}

    def bad_samples(self) -> list[BadSample]:
        """The records as :class:`~visionkit_core.BadSample` objects, sorted by path, every reason kept."""
        return [BadSample(path, reason) for path, reason in sorted(self.entries)]
