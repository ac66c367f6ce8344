"""``visionkit data check FILE.csv``: a manifest's bad rows (with line numbers), counts and unreadable images.

Pillow and the standard library only, like the ImageFolder check it shares its decoding with.
Read-only: nothing the manifest names is written, moved or deleted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionkit_imagefolder.check import FileCheck, effective_workers, inspect_files
from visionkit_imagefolder.manifest import Manifest, Row, RowProblem, read_manifest


@dataclass
class ManifestReport:
    """Everything :func:`check_manifest` found."""

    manifest: Manifest
    splits: dict[str, list[Row]]
    files: list[FileCheck]
    notes: list[str]
    seconds: float = 0.0
    workers: int = 1

    @property
    def problems(self) -> list[RowProblem]:
        return self.manifest.problems

    @property
    def bad_files(self) -> list[FileCheck]:
        return [f for f in self.files if f.error is not None]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.bad_files

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split (multi-label: images carrying each label)."""
        out: dict[str, dict[str, int]] = {}
        for split, rows in self.splits.items():
            if rows:
                counts = dict.fromkeys(self.manifest.classes, 0)
                for row in rows:
                    for name in row.labels:
                        counts[name] += 1
                out[split] = counts
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "manifest": str(self.manifest.file),
            "ok": self.ok,
            "multilabel": self.manifest.multilabel,
            "classes": self.manifest.classes,
            "splits": self.counts(),
            "bad_rows": [{"line": p.line, "path": p.path, "reason": p.reason} for p in self.problems],
            "images": len(self.files),
            "bad_files": [{"path": f.path, "reason": f.error} for f in self.bad_files],
            "warnings": [{"path": f.path, "warning": w} for f in self.files for w in f.warnings]
            + [{"warning": n} for n in self.notes],
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
        }

    def format(self) -> str:
        """The human-readable report."""
        m = self.manifest
        kind = "multi-label" if m.multilabel else "single-label"
        lines = [f"{m.file}: {kind} manifest, {len(m.classes)} classes, {len(m.rows)} usable rows"]
        counts = self.counts()
        names = list(counts)
        header = ["class", *names]
        rows = [[c, *(str(counts[s][c]) for s in names)] for c in m.classes]
        rows.append(["images", *(str(len(self.splits[s])) for s in names)])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells))
        lines.append("")
        lines += [f"warning: {n}" for n in self.notes]
        lines.append(f"bad rows: {len(self.problems)}")
        lines += [f"  {m.file.name}:{p.line}: {p.reason}" for p in self.problems]
        bad = self.bad_files
        lines.append(f"unreadable files: {len(bad)}")
        line_of = {r.path: r.line for r in m.rows}
        lines += [
            f"  {m.file.name}:{line_of.get(f.path, '?')}: {_shown(f.path, m.file)}: {f.error}" for f in bad
        ]
        lossy = [(f.path, w) for f in self.files for w in f.warnings]
        if lossy:
            lines.append(f"warnings: {len(lossy)}")
            lines += [f"  {_shown(p, m.file)}: {w}" for p, w in lossy]
        rate = len(self.files) / self.seconds if self.seconds > 0 else 0.0
        lines.append(f"checked {len(self.files)} images in {self.seconds:.1f} s ({rate:.0f} images/s)")
        if self.ok:
            lines.append("OK")
        else:
            what = [f"{len(self.problems)} bad rows"] if self.problems else []
            what += [f"{len(bad)} unreadable files"] if bad else []
            lines.append("FAILED: " + ", ".join(what))
        return "\n".join(lines)


def _shown(path: str, manifest: Path) -> str:
    try:
        return os.path.relpath(path, manifest.parent)
    except ValueError:
        return path


def check_manifest(
    file: Path,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    val_split: float = 0.2,
    seed: int = 42,
) -> ManifestReport:
    """What ``visionkit data check FILE.csv`` runs (registered as the ``csv`` dataset's check)."""
    manifest = read_manifest(file)
    splits = manifest.split_rows(val_split, seed)
    notes = []
    if manifest.has_split and not splits["val"]:
        notes.append("no rows with split=val: training needs validation rows")
    train_classes = {n for r in splits["train"] for n in r.labels}
    unseen = [c for c in manifest.classes if c not in train_classes]
    if unseen:
        notes.append(f"classes without training rows: {', '.join(unseen)}")
    paths = [r.path for r in manifest.rows]
    used = effective_workers(len(paths), workers)
    started = time.perf_counter()
    files = inspect_files(paths, used, progress=progress)
    return ManifestReport(manifest, splits, files, notes, time.perf_counter() - started, used)
