"""Read CSV manifests: ``path`` plus ``label`` (one class) or ``labels`` (a space-separated set), ``split``.

Standard library only: ``data check`` and the training datamodule both read a manifest with
:func:`read_manifest`, and checking must not import torch. A header problem (no ``path``
column, no label column, both label columns) makes the whole file unusable and raises a
UsageError; a bad row (missing or empty path, empty label, unknown split value) is kept as
a :class:`RowProblem` with its line number, so training can skip it and say which it was.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from visionkit_core import BadSample, UsageError
from visionkit_imagefolder.folders import natural_key

#: Accepted ``split`` values, and the split each one means.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_EXAMPLE = (
    "path,label\\nimages/cat1.jpg,cat\\n... (or path,labels with space-separated names; optional split)"
)


@dataclass(frozen=True)
class Row:
    """One usable row: the image (absolute or relative to the working directory), its labels, split."""

    line: int
    path: str
    labels: tuple[str, ...]
    split: str | None  # "train" | "val" | "test", or None without a split column


@dataclass(frozen=True)
class RowProblem:
    """A row training cannot use, and why."""

    line: int
    path: str
    reason: str

    def bad_sample(self, manifest: Path) -> BadSample:
        return BadSample(str(manifest), self.reason, self.line)


@dataclass
class Manifest:
    """A parsed manifest: its rows, the problems of the others, and the class names."""

    file: Path
    multilabel: bool
    has_split: bool
    rows: list[Row] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Every label name the usable rows use, in natural order."""
        names = {name for row in self.rows for name in row.labels}
        return sorted(names, key=lambda n: (natural_key(n), n))

    def bad_samples(self) -> list[BadSample]:
        return [p.bad_sample(self.file) for p in self.problems]

    def split_rows(self, val_split: float, seed: int) -> dict[str, list[Row]]:
        """Rows per split: the ``split`` column, else a stratified ``val_split`` of every row."""
        if self.has_split:
            out: dict[str, list[Row]] = {"train": [], "val": [], "test": []}
            for row in self.rows:
                out[row.split or "train"].append(row)
            return out
        train, val = stratified_rows(self.rows, val_split, seed)
        return {"train": train, "val": val, "test": []}


def read_manifest(file: str | os.PathLike[str], *, check_files: bool = True) -> Manifest:
    """Parse ``file``; raise a UsageError when its header makes it unusable.

    ``check_files``: a row whose image does not exist is a problem (``missing file``).
    """
    path = Path(file).expanduser()
    if not path.is_file():
        raise UsageError(f"manifest {str(path)!r} not found; give an existing CSV file ({_EXAMPLE})")
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"manifest {str(path)!r} is empty; expected a header line: {_EXAMPLE}")
            columns = _columns(path, header)
            manifest = Manifest(path, multilabel="labels" in columns, has_split="split" in columns)
            label_col = columns["labels"] if manifest.multilabel else columns["label"]
            for row in reader:
                _add_row(manifest, reader.line_num, row, columns["path"], label_col, columns.get("split"))
                if check_files and manifest.rows and manifest.rows[-1].line == reader.line_num:
                    _check_file(manifest)
    except UnicodeDecodeError as err:
        raise UsageError(f"manifest {str(path)!r} is not UTF-8 text: {err.reason}") from None
    except csv.Error as err:
        raise UsageError(f"manifest {str(path)!r} is not a valid CSV file: {err}") from None
    manifest.rows = [
        Row(r.line, r.path if os.path.isabs(r.path) else os.path.join(base, r.path), r.labels, r.split)
        for r in manifest.rows
    ]
    if not manifest.rows:
        found = f" ({len(manifest.problems)} bad rows)" if manifest.problems else ""
        raise UsageError(f"manifest {str(path)!r} has no usable rows{found}; expected {_EXAMPLE}")
    return manifest


def _columns(path: Path, header: Sequence[str]) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    columns = {n: i for i, n in reversed(list(enumerate(names)))}
    if "path" not in columns:
        raise UsageError(
            f"manifest {str(path)!r} has no 'path' column (header: {','.join(header)}); {_EXAMPLE}"
        )
    if "label" in columns and "labels" in columns:
        raise UsageError(
            f"manifest {str(path)!r} has both 'label' and 'labels' columns; keep 'label' for one class per "
            "image or 'labels' for space-separated label sets"
        )
    if "label" not in columns and "labels" not in columns:
        raise UsageError(
            f"manifest {str(path)!r} has no 'label' or 'labels' column (header: {','.join(header)}); "
            f"{_EXAMPLE}"
        )
    return columns


def _add_row(
    manifest: Manifest, line: int, row: list[str], path_col: int, label_col: int, split_col: int | None
) -> None:
    if not any(cell.strip() for cell in row):
        return  # blank line
    cell = lambda i: row[i].strip() if i is not None and i < len(row) else ""  # noqa: E731
    image = cell(path_col)
    if not image:
        manifest.problems.append(RowProblem(line, "", "empty path"))
        return
    raw = cell(label_col)
    labels = tuple(dict.fromkeys(raw.split())) if manifest.multilabel else ((raw,) if raw else ())
    if not labels:
        column = "labels" if manifest.multilabel else "label"
        manifest.problems.append(RowProblem(line, image, f"empty {column} for {image!r}"))
        return
    split = None
    if split_col is not None:
        value = cell(split_col)
        split = SPLIT_NAMES.get(value.lower())
        if split is None:
            manifest.problems.append(
                RowProblem(line, image, f"unknown split {value!r} for {image!r} (use train, val or test)")
            )
            return
    manifest.rows.append(Row(line, image, labels, split))


def _check_file(manifest: Manifest) -> None:
    row = manifest.rows[-1]
    full = row.path if os.path.isabs(row.path) else os.path.join(manifest.file.parent, row.path)
    if not os.path.isfile(full):
        manifest.rows.pop()
        manifest.problems.append(RowProblem(row.line, row.path, f"missing file {row.path!r}"))


def stratified_rows(rows: Sequence[Row], val_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split per label (multi-label rows: by their rarest label), ``round(n * val_fraction)`` to val.

    Deterministic in ``seed`` and independent of the row order, as the ImageFolder split is.
    """
    counts: dict[str, int] = {}
    for row in rows:
        for name in row.labels:
            counts[name] = counts.get(name, 0) + 1
    strata: dict[str, list[Row]] = {}
    for row in rows:
        key = min(row.labels, key=lambda n: (counts[n], natural_key(n), n))
        strata.setdefault(key, []).append(row)
    rng = random.Random(seed)
    train: list[Row] = []
    val: list[Row] = []
    for key in sorted(strata, key=lambda n: (natural_key(n), n)):
        ordered = sorted(strata[key], key=lambda r: (natural_key(r.path), r.path, r.line))
        shuffled = list(ordered)
        rng.shuffle(shuffled)
        n = len(ordered)
        n_val = min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
        chosen = {id(r) for r in shuffled[:n_val]}
        for r in ordered:
            (val if id(r) in chosen else train).append(r)
    train.sort(key=lambda r: r.line)
    val.sort(key=lambda r: r.line)
    return train, val


def describe_problems(problems: Sequence[RowProblem], manifest: Path, limit: int = 20) -> str:
    """One line per bad row (``file.csv:LINE: reason``), at most ``limit``, then "and N more"."""
    lines = [f"  {manifest.name}:{p.line}: {p.reason}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
