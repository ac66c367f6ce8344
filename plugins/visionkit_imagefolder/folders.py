"""Find classes and image files in an ImageFolder tree: layout, natural order, stratified split.

Pure standard library on purpose: ``class_names()`` runs before the model is built, so
reading the layout must not import torch or decode anything.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from visionkit_core import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
VAL_DIR_NAMES = ("val", "valid", "validation")
_HINT = (
    "a folder with one sub-folder per class (PATH/cat/1.jpg, PATH/dog/2.jpg), or with train/ and val/ in it"
)

#: One labelled file: its path and class index (a multi-hot tuple where data is multi-label).
LabelledFile = tuple[str, int]


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders digit runs by value, so "2" < "10" and "img9" < "img10"."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.casefold()) for p in parts if p)


def _natsorted(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (natural_key(n), n))


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"  # __MACOSX: resource forks left by macOS zips


def class_folders(path: Path) -> list[str]:
    """Names of the class folders of ``path`` (hidden ones skipped), in natural order."""
    with os.scandir(path) as entries:
        names = [e.name for e in entries if e.is_dir() and not _is_hidden(e.name)]
    return _natsorted(names)


def list_images(folder: Path, class_paths: Collection[str] = ()) -> list[str]:
    """Image files under ``folder`` (recursively, hidden entries skipped), in natural order.

    Folder symlinks are followed, but every real folder is listed once: a link loop (a
    folder linked into itself) or two links to one folder add no duplicates. A link that
    leads into, or above, another class folder (``class_paths``: the real paths of all the
    class folders of the split) is not followed: those images belong to their own class.
    """
    found: list[str] = []
    seen = {_identity(folder)}
    others: list[str] | None = None  # resolved at the first symlink: most trees have none
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in _natsorted([d for d in dirnames if not _is_hidden(d)]):
            sub = os.path.join(dirpath, d)
            key = _identity(sub)
            if key in seen:
                continue
            if class_paths and os.path.islink(sub):
                if others is None:
                    own = os.path.realpath(folder)
                    others = [p for p in class_paths if p != own]
                if _overlaps_any(os.path.realpath(sub), others):
                    continue
            seen.add(key)
            keep.append(d)
        dirnames[:] = keep
        for name in _natsorted(filenames):
            if not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
    return found


def _identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _overlaps_any(path: str, folders: Collection[str]) -> bool:
    """Whether ``path`` is, lies inside, or contains one of ``folders`` (all real paths)."""
    return any(_inside(path, f) or _inside(f, path) for f in folders)


def real_class_paths(split_dir: Path, classes: Sequence[str]) -> dict[str, str]:
    """The real path (symlinks resolved) of each class folder of ``split_dir``."""
    return {c: os.path.realpath(split_dir / c) for c in classes}


def nested_class_folders(split_dir: Path, classes: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of class folders where one is, or lies inside, the other (through a symlink).

    Their images would be listed under both classes, with two labels.
    """
    if not any(os.path.islink(split_dir / c) for c in classes):
        return []  # plain sibling folders cannot nest
    reals = real_class_paths(split_dir, classes)
    pairs = []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            if _overlaps_any(reals[a], [reals[b]]):
                pairs.append((a, b))
    return pairs


@dataclass(frozen=True)
class Layout:
    """What a data folder holds: explicit train/val(/test) folders, or one folder to split."""

    root: Path
    train_dir: Path
    val_dir: Path | None  # None: split train_dir by val_split
    test_dir: Path | None
    classes: tuple[str, ...]


def check_folder(path: Path, what: str = "data folder") -> None:
    """Raise a UsageError unless ``path`` is an existing directory."""
    if not path.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist; pass --data PATH, {_HINT}")
    if not path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a file, not a folder; pass --data PATH, {_HINT}")


def _classes_of(path: Path) -> list[str]:
    classes = class_folders(path)
    if not classes:
        loose = sum(1 for n in os.listdir(path) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        found = f" (it holds {loose} images directly; move them into class folders)" if loose else ""
        raise UsageError(f"data folder {str(path)!r} has no class folders{found}; expected {_HINT}")
    if len(classes) == 1:
        raise UsageError(
            f"data folder {str(path)!r} has only one class folder ({classes[0]!r}); "
            "a classifier needs at least two class folders"
        )
    _refuse_nested(path, classes)
    return classes


def _refuse_nested(split_dir: Path, classes: Sequence[str]) -> None:
    nested = nested_class_folders(split_dir, classes)
    if nested:
        a, b = nested[0]
        raise UsageError(
            f"class folders {a!r} and {b!r} in {str(split_dir)!r} hold the same images (one is a symlink "
            "into the other), so they would get two labels; keep one folder per class"
        )


def _differ(a: set[str], b: set[str]) -> str:
    return ", ".join(_natsorted(list(a - b))) or "(none)"


def scan_layout(root: str | os.PathLike[str] | None) -> Layout:
    """Read the layout of ``root`` (folder names only) or raise a UsageError saying what to do."""
    if root is None:
        raise UsageError(f"the imagefolder dataset needs a folder: pass --data PATH, {_HINT}")
    path = Path(root).expanduser()
    check_folder(path)
    with os.scandir(path) as entries:
        subdirs = {e.name for e in entries if e.is_dir()}
    val_name = next((n for n in VAL_DIR_NAMES if n in subdirs), None)
    test_dir = path / "test" if "test" in subdirs else None
    if "train" not in subdirs:
        if val_name or test_dir:
            raise UsageError(
                f"data folder {str(path)!r} has {val_name or 'test'}/ but no train/; add train/ with one "
                "folder per class, or pass a folder of class folders to split by --val-split"
            )
        return Layout(path, path, None, None, tuple(_classes_of(path)))
    train_dir = path / "train"
    classes = _classes_of(train_dir)
    val_dir = path / val_name if val_name else None
    if val_dir is not None:
        val_classes = class_folders(val_dir)
        if set(val_classes) != set(classes):
            raise UsageError(
                f"train and {val_name} class folders differ in {str(path)!r}: only in train: "
                f"{_differ(set(classes), set(val_classes))}; only in {val_name}: "
                f"{_differ(set(val_classes), set(classes))}. Give both the same class folders"
            )
        _refuse_nested(val_dir, val_classes)
    if test_dir is not None:
        test_classes = class_folders(test_dir)
        extra = set(test_classes) - set(classes)
        if extra:  # fewer classes are fine: test reports on the classes it has
            raise UsageError(
                f"test/ has class folders that train/ lacks in {str(path)!r}: {_differ(extra, set())}; "
                "their images could not be labelled. Rename or remove them, or add them to train/"
            )
        _refuse_nested(test_dir, test_classes)
    return Layout(path, train_dir, val_dir, test_dir, tuple(classes))


def find_samples(split_dir: Path, classes: tuple[str, ...], *, require_all: bool) -> list[LabelledFile]:
    """``(path, label)`` for every image of ``split_dir``; labels index ``classes``.

    Class folders missing from ``classes`` are an error (their label would be unknown);
    with ``require_all`` every class must also have at least one image.
    """
    index = {name: i for i, name in enumerate(classes)}
    present = class_folders(split_dir)
    unknown = [c for c in present if c not in index]
    if unknown:
        raise UsageError(
            f"{str(split_dir)!r} has class folders the training data does not: {', '.join(unknown)}; "
            f"known classes: {', '.join(classes)}"
        )
    samples: list[LabelledFile] = []
    empty: list[str] = []
    reals = list(real_class_paths(split_dir, present).values())
    for name in present:
        files = list_images(split_dir / name, reals)
        if not files:
            empty.append(name)
        samples.extend((f, index[name]) for f in files)
    if require_all:
        empty += [c for c in classes if c not in present]
    exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    if require_all and empty:
        raise UsageError(
            f"class folders without images in {str(split_dir)!r}: {', '.join(_natsorted(empty))}; "
            f"add images ({exts}) or remove the folders"
        )
    if not samples:
        raise UsageError(f"no images ({exts}) found in {str(split_dir)!r}")
    return samples


def stratified_split(
    samples: list[LabelledFile], val_fraction: float, seed: int
) -> tuple[list[LabelledFile], list[LabelledFile]]:
    """Split per class: ``round(n * val_fraction)`` of each class to val, deterministically by ``seed``.

    A class with two or more images keeps at least one on each side; a single image goes
    to train. The result does not depend on the order of ``samples``.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    train: list[LabelledFile] = []
    val: list[LabelledFile] = []
    for label in sorted(by_class):
        ordered = sorted(by_class[label], key=lambda p: (natural_key(p), p))
        shuffled = list(ordered)
        rng.shuffle(shuffled)
        n = len(ordered)
        n_val = min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
        chosen = set(shuffled[:n_val])
        for p in ordered:
            (val if p in chosen else train).append((p, label))
    return train, val
