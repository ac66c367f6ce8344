"""Check an ImageFolder tree without changing it: class counts, split consistency, unreadable files.

Pillow and the standard library only, so ``visionkit data check`` starts fast and works
without torch. Every image is decoded completely (``Image.verify()`` passes a truncated
JPEG), in worker processes for larger trees. Global Pillow settings are never changed:
the default ``Image.MAX_IMAGE_PIXELS`` decides what is a decompression bomb, and truncated
files are errors because ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from visionkit_imagefolder.folders import (
    IMAGE_EXTENSIONS,
    VAL_DIR_NAMES,
    class_folders,
    list_images,
    natural_key,
    nested_class_folders,
    real_class_paths,
)

#: Below this many files decoding runs in this process: starting workers would cost more
#: than it saves (a 256 px JPEG decodes in ~0.6 ms; forking two workers takes 10-25 ms).
PARALLEL_MIN_FILES = 128
#: How many bad files an error message lists before "and N more".
LIST_LIMIT = 20

_DECODE_ERRORS = (ValueError, SyntaxError, EOFError, MemoryError)  # besides OSError
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class FileCheck:
    """What checking one file found: why it cannot be used (``error``), and lossy conversions."""

    path: str
    error: str | None = None
    warnings: tuple[str, ...] = ()


def inspect_image(path: str) -> FileCheck:
    """Decode ``path`` completely as training would; say why it fails, and what it loses."""
    try:
        if os.path.getsize(path) == 0:
            return FileCheck(path, "empty file (0 bytes)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                raw_mode = im.tile[0].args if im.tile else None  # the file's own pixel layout
                im.seek(0)
                im.load()
                notes = _lossy_conversions(im, raw_mode)
        big = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
        if big:
            notes.append(f"very large image ({_pixels(im.size)}); decoding it needs a lot of memory")
        return FileCheck(path, None, tuple(notes))
    except Image.DecompressionBombError as err:  # not an OSError: caught on its own
        return FileCheck(path, f"decompression bomb: {str(err).partition(', could be')[0]}")
    except UnidentifiedImageError:
        return FileCheck(path, "not an image (Pillow cannot identify the file format)")
    except OSError as err:
        if err.errno is not None:  # the file system's error (a broken link, no permission), not Pillow's
            return FileCheck(path, f"cannot read the file: {err.strerror}")
        return FileCheck(path, _decode_failure(err))
    except _DECODE_ERRORS as err:
        return FileCheck(path, _decode_failure(err))


def _decode_failure(err: BaseException) -> str:
    text = _first_line(err)
    if "truncated" in text.lower() or "not enough image data" in text.lower():
        return f"truncated: {text}"
    return f"cannot decode: {text}"


def _lossy_conversions(im: Image.Image, raw_mode: Any) -> list[str]:
    """What converting ``im`` to 8-bit RGB (as training does) throws away."""
    notes = []
    mode = im.mode
    if mode in _SIXTEEN_BIT or (isinstance(raw_mode, str) and ";16" in raw_mode):
        notes.append("16-bit image reduced to 8 bits per channel (scaled, not clipped)")
    elif mode in ("I", "F"):
        kind = "integer" if mode == "I" else "float"
        notes.append(f"32-bit {kind} image: values outside 0..255 are clipped")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        notes.append("alpha channel dropped (transparent pixels keep their stored colour)")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB (colours may shift)")
    if getattr(im, "is_animated", False):
        notes.append(f"animated ({getattr(im, 'n_frames', '?')} frames): only the first frame is used")
    orientation = im.getexif().get(0x0112)  # EXIF Orientation
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation} is ignored: the image is used as stored")
    return notes


def _pixels(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _inspect_chunk(paths: Sequence[str]) -> list[FileCheck]:
    return [inspect_image(p) for p in paths]


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def inspect_files(
    paths: Sequence[str],
    workers: int | None = None,
    *,
    parallel_min_files: int = PARALLEL_MIN_FILES,
    progress: Callable[[int], None] | None = None,
) -> list[FileCheck]:
    """:func:`inspect_image` for every path, in order; in ``workers`` processes (default: one per CPU).

    Fewer than ``parallel_min_files`` files, or one worker, are decoded in this process.
    ``progress(n)`` is called after each chunk with the number of files it held.
    """
    paths = list(paths)
    workers = effective_workers(len(paths), workers, parallel_min_files)
    if workers == 1:
        results = []
        for p in paths:
            results.append(inspect_image(p))
            if progress is not None:
                progress(1)
        return results
    # chunks: few enough to keep pickling cheap, many enough to balance uneven file sizes
    size = max(1, min(256, len(paths) // (workers * 8)))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        for chunk_result in pool.map(_inspect_chunk, chunks):
            results.extend(chunk_result)
            if progress is not None:
                progress(len(chunk_result))
    return results


def effective_workers(
    n_files: int, workers: int | None = None, parallel_min_files: int = PARALLEL_MIN_FILES
) -> int:
    """Processes :func:`inspect_files` uses: ``workers`` (default one per CPU), 1 for few files."""
    if n_files < parallel_min_files:
        return 1
    wanted = available_cpus() if workers is None else workers
    return max(1, min(wanted, n_files))


def _context() -> Any:
    # fork starts a worker in ~10 ms, spawn in ~250 ms (a fresh interpreter importing Pillow).
    # Linux only, as torch's DataLoader does; macOS and Windows keep their default (spawn).
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


# -- the whole tree ---------------------------------------------------------------------------


@dataclass
class Split:
    """One split folder (``train``, ``val``, ``test``; ``all`` for a single tree of class folders)."""

    name: str
    folder: Path
    files: dict[str, list[str]] = field(default_factory=dict)  # class -> image paths


@dataclass
class Report:
    """Everything :func:`check_tree` found."""

    root: Path
    splits: list[Split]
    classes: list[str]
    problems: list[str]  # layout/class errors: training would refuse the folder
    notes: list[str]  # layout/class warnings: allowed, but worth knowing
    files: list[FileCheck]
    seconds: float = 0.0
    workers: int = 1

    @property
    def bad_files(self) -> list[FileCheck]:
        return [f for f in self.files if f.error is not None]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.bad_files

    def format(self) -> str:
        """The human-readable report ``visionkit data check`` prints."""
        return format_report(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "root": str(self.root),
            "ok": self.ok,
            "classes": self.classes,
            "splits": {s.name: {c: len(f) for c, f in s.files.items()} for s in self.splits},
            "class_problems": self.problems,
            "class_warnings": self.notes,
            "images": len(self.files),
            "bad_files": [{"path": f.path, "reason": f.error} for f in self.bad_files],
            "warnings": [{"path": f.path, "warning": w} for f in self.files for w in f.warnings],
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
        }


def check_tree(
    root: str | os.PathLike[str],
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check the ImageFolder tree at ``root`` (an existing folder); read-only."""
    root = Path(root)
    splits, problems, notes = _scan(root)
    classes = _ordered_classes(splits)
    paths = [p for s in splits for files in s.files.values() for p in files]
    used = effective_workers(len(paths), workers)
    started = time.perf_counter()
    results = inspect_files(paths, used, progress=progress)
    return Report(root, splits, classes, problems, notes, results, time.perf_counter() - started, used)


def _scan(root: Path) -> tuple[list[Split], list[str], list[str]]:
    """The split folders of ``root`` with their class folders, and what is wrong with them."""
    with os.scandir(root) as entries:
        subdirs = {e.name for e in entries if e.is_dir()}
    val_name = next((n for n in VAL_DIR_NAMES if n in subdirs), None)
    problems: list[str] = []
    notes: list[str] = []
    if "train" not in subdirs:
        if val_name or "test" in subdirs:
            problems.append(f"{val_name or 'test'}/ but no train/: add train/ with one folder per class")
        names = ["all"]
        folders = [root]
    else:
        names = ["train", *([val_name] if val_name else []), *(["test"] if "test" in subdirs else [])]
        folders = [root / n for n in names]
    splits = []
    for name, folder in zip(names, folders, strict=True):
        classes = class_folders(folder)
        for a, b in nested_class_folders(folder, classes):
            problems.append(
                f"{name}: class folders {a!r} and {b!r} hold the same images (one is a symlink into the "
                "other); keep one folder per class"
            )
        reals = list(real_class_paths(folder, classes).values())
        split = Split(name, folder, {c: list_images(folder / c, reals) for c in classes})
        splits.append(split)
    if not splits[0].files:
        loose = sum(1 for n in os.listdir(folders[0]) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        where = f" ({loose} images lie directly in it; move them into class folders)" if loose else ""
        problems.append(f"{splits[0].name}: no class folders{where}")
    elif len(splits[0].files) == 1:
        problems.append(f"{splits[0].name}: only one class folder; a classifier needs two or more")
    _compare_classes(splits, problems, notes)
    return splits, problems, notes


def _compare_classes(splits: list[Split], problems: list[str], notes: list[str]) -> None:
    first = splits[0]
    known = set(first.files)
    for c, files in first.files.items():
        if not files:
            problems.append(f"{first.name}: class {c!r} has no images")
    for split in splits[1:]:
        present = set(split.files)
        extra = _names(present - known)
        missing = _names(known - present)
        if extra:
            problems.append(f"{split.name}: classes not in {first.name}: {extra}")
        if missing and split.name != "test":
            problems.append(f"{split.name}: class folders missing (present in {first.name}): {missing}")
        elif missing:
            notes.append(f"test: no folder for classes {missing} (allowed: test reports the classes present)")
        empty = _names({c for c, files in split.files.items() if not files})
        if empty:
            notes.append(f"{split.name}: classes without images: {empty}")


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names, key=lambda n: (natural_key(n), n)))


def _ordered_classes(splits: list[Split]) -> list[str]:
    names = {c for s in splits for c in s.files}
    return sorted(names, key=lambda n: (natural_key(n), n))


# -- text ---------------------------------------------------------------------------------------


def describe_bad_files(bad: Sequence[FileCheck], root: Path | None = None, limit: int = LIST_LIMIT) -> str:
    """One line per bad file (``path: reason``), at most ``limit``, then "and N more"."""
    lines = [f"  {_shown(f.path, root)}: {f.error}" for f in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


def _shown(path: str, root: Path | None) -> str:
    if root is None:
        return path
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path


def format_report(report: Report) -> str:
    """The human-readable report of ``visionkit data check``."""
    lines = [f"{report.root}: {len(report.classes)} classes, {len(report.files)} images"]
    lines += _count_table(report)
    lines.append("")
    if report.problems or report.notes:
        lines.append("class folders:")
        lines += [f"  error: {p}" for p in report.problems]
        lines += [f"  warning: {n}" for n in report.notes]
    else:
        lines.append("class folders: consistent")
    bad = report.bad_files
    lines.append(f"unreadable files: {len(bad)}")
    lines += [f"  {_shown(f.path, report.root)}: {f.error}" for f in bad]
    lossy = [(f.path, w) for f in report.files for w in f.warnings]
    if lossy:
        lines.append(f"warnings: {len(lossy)}")
        lines += [f"  {_shown(p, report.root)}: {w}" for p, w in lossy]
    rate = len(report.files) / report.seconds if report.seconds > 0 else 0.0
    lines.append(
        f"checked {len(report.files)} images in {report.seconds:.1f} s "
        f"({_plural(report.workers, 'worker')}, {rate:.0f} images/s)"
    )
    if report.ok:
        lines.append("OK")
    else:
        what = []
        if report.problems:
            what.append(_plural(len(report.problems), "class folder problem"))
        if bad:
            what.append(_plural(len(bad), "unreadable file"))
        lines.append("FAILED: " + ", ".join(what))
    return "\n".join(lines)


def _count_table(report: Report) -> list[str]:
    header = ["class", *(s.name for s in report.splits)]
    rows = [
        [c, *(str(len(s.files[c])) if c in s.files else "-" for s in report.splits)] for c in report.classes
    ]
    rows.append(["total", *(str(sum(len(f) for f in s.files.values())) for s in report.splits)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells))
    return lines


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_data(
    root: Path, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> Report:
    """What ``visionkit data check`` runs on an ImageFolder tree (registered as the dataset's check)."""
    return check_tree(root, workers, progress=progress)
