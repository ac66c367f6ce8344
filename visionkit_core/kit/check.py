"""``visionkit data check`` building blocks: a report shape and parallel inspection. Torch-free.

A dataset's ``check_data`` decodes every file as training would and returns a report with
``ok``, ``as_dict()`` (the ``--json`` output) and ``format()`` (the text output).
:class:`DataReport` gives that shape; a subclass adds its counts (:meth:`DataReport.counts`,
:meth:`DataReport.split_lines`). :func:`inspect_all` runs a picklable per-file check in
worker processes when there are enough files to pay for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from visionkit_core.plugin.contract import BadSample

T = TypeVar("T")
R = TypeVar("R")

#: Below this many files a check runs in this process (forking workers would cost more).
PARALLEL_MIN = 128


def check_workers() -> int:
    """Worker processes for a check: every CPU this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus))


def inspect_all(check: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[check(item) for item in items]``, in ``workers`` processes when there are enough items."""
    workers = workers or check_workers()
    if workers <= 1 or len(items) < PARALLEL_MIN:
        return [check(item) for item in items]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check, items, chunksize=max(1, len(items) // (workers * 8))))


@dataclass
class DataReport:
    """The result of checking a dataset; ``ok`` is False when anything would be skipped."""

    root: str
    layout: str
    class_names: list[str]
    bad: list[BadSample] = field(default_factory=list)

    #: the heading of the list of bad samples, and what ``format`` says when nothing is usable.
    bad_heading = "bad samples"
    nothing_usable = "no usable samples found"

    def usable(self) -> bool:
        """Whether training would find any sample (a subclass counts them)."""
        return True

    def counts(self) -> dict[str, Any]:
        """The report's own counts, for ``as_dict`` (after ``class_names``)."""
        return {}

    def split_lines(self) -> list[str]:
        """One text line per split for ``format``."""
        return []

    def header(self) -> str:
        return f"{self.root}: {self.layout} layout, {len(self.class_names)} classes"

    @property
    def ok(self) -> bool:
        return not self.bad and self.usable()

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": self.ok,
            "class_names": list(self.class_names),
            **self.counts(),
            "bad": [{"path": b.path, "reason": b.reason, "line": b.line} for b in self.bad],
        }

    def format(self) -> str:
        lines = [self.header(), *self.split_lines()]
        if self.bad:
            lines.append(f"{len(self.bad)} {self.bad_heading}:")
            lines.extend(f"  {b.describe()}" for b in self.bad)
        else:
            lines.append("no problems found" if self.ok else self.nothing_usable)
        return "\n".join(lines)
