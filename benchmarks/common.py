"""Shared helpers of the benchmarks: interleaved timing, child processes with peak memory, targets.

Every figure a benchmark reports as a target is a *ratio* of two things measured side by side
in one run: runs alternate (A B A B ..., or a shuffled order per repeat), each is repeated,
and the median is taken. Absolute times on a shared machine move with whatever else runs
there; ratios of interleaved medians move much less.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def interleave(
    runners: Mapping[str, Callable[[], float]], repeats: int, *, seed: int = 0, shuffle: bool = True
) -> dict[str, list[float]]:
    """Call every runner once per repeat (shuffled order per repeat); return the values per name."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        order = list(runners)
        if shuffle:
            rng.shuffle(order)
        for name in order:
            out[name].append(runners[name]())
    return out


@dataclass
class ChildResult:
    """One finished child process: exit status, wall seconds, peak RSS (MiB) and its output."""

    returncode: int
    wall_s: float
    max_rss_mib: float
    output: str


class PeakMemory:
    """Polls a child's ``VmHWM`` (peak resident memory of its own address space) until stopped.

    ``wait4``'s ``ru_maxrss`` cannot be used: Linux starts a forked child's count from the
    parent's resident memory, so a child of a large runner reports at least the runner's
    size. ``VmHWM`` belongs to the program's own memory map after ``exec``; readings are
    taken only once ``/proc/PID/cmdline`` shows that the child runs ``cmd``. Growth in the
    last poll interval before exit is missed (20 ms).
    """

    def __init__(self, pid: int, cmd: Sequence[str], interval: float = 0.02) -> None:
        self.pid, self.expected, self.interval = pid, "\0".join(cmd), interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/cmdline", "rb") as fh:
                    running = fh.read().rstrip(b"\0").decode("utf-8", "replace") == self.expected
                if running:
                    with open(f"/proc/{self.pid}/status", encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                                break
            except (OSError, ValueError):
                pass
            self._stop.wait(self.interval)

    def stop(self) -> float:
        """Stop polling; the peak in MiB (0 where ``/proc`` is not available)."""
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def run_child(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 900,
    check: bool = True,
) -> ChildResult:
    """Run ``cmd``; measure its wall time (``wait4``) and its own peak resident memory."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vkbench-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log_path, "w+b") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=dict(env) if env else None, cwd=cwd, stdout=log, stderr=log)
        memory = PeakMemory(proc.pid, cmd)
        killer = threading.Timer(timeout, proc.kill)  # a blocking wait4 times the exit exactly
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        rss = memory.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    log_path.unlink(missing_ok=True)
    if not rss:  # no /proc (macOS): ru_maxrss, in bytes there
        rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    result = ChildResult(proc.returncode, wall, rss, output)
    if check and result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{tail}")
    return result


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without VISIONKIT_* switches, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("VISIONKIT_") or k == "VISIONKIT_CACHE_DIR"
    }
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    env.update(extra or {})
    return env


def visionkit_command() -> list[str]:
    """How a user starts visionkit: the console script next to this Python, else ``-m``."""
    script = Path(sys.executable).with_name("visionkit")
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "visionkit_core"]


def target(
    name: str, value: float, limit: float, op: str, *, unit: str = "", note: str = ""
) -> dict[str, Any]:
    """A target row: ``value op limit`` (op is ``>=`` or ``<=``)."""
    met = value >= limit if op == ">=" else value <= limit
    return {
        "name": name,
        "value": round(value, 4),
        "target": f"{op} {limit:g}{unit}",
        "met": bool(met),
        "note": note,
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    try:
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def write_images(
    root: Path,
    classes: int,
    per_class: int,
    size: int,
    *,
    ext: str = ".jpg",
    quality: int = 90,
    seed: int = 0,
    splits: Sequence[str] = ("train",),
) -> Path:
    """Write an ImageFolder tree of smooth synthetic RGB images (``c0..cN/00000.ext``).

    Each class has its own colour layout plus noise, so a model can learn it; file and class
    names sort the same naturally and lexically (visionkit and torchvision agree on order).
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    for split in splits:
        for c in range(classes):
            folder = root / split / f"c{c}" if split else root / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            phase = 2 * np.pi * c / classes
            for i in range(per_class):
                shift = rng.uniform(0, 2 * np.pi, size=3)
                chans = [
                    0.5 + 0.4 * np.sin(3 * xx + phase + shift[0]),
                    0.5 + 0.4 * np.cos(2 * yy + phase + shift[1]),
                    0.5 + 0.4 * np.sin(2 * (xx + yy) + phase + shift[2]),
                ]
                img = np.stack(chans, -1) * 255 + rng.normal(0, 12, size=(size, size, 3))
                arr = np.clip(img, 0, 255).astype(np.uint8)
                options = {"quality": quality} if ext in (".jpg", ".jpeg") else {}
                Image.fromarray(arr).save(folder / f"{i:05d}{ext}", **options)
    return root


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
