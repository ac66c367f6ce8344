"""Threads that fit the cores actually free: :class:`ThreadPolicy`, a default callback of every fit.

Given to every fit through ``visionkit_default_callbacks``; the CLI shortens OpenMP's spin-wait
(``GOMP_SPINCOUNT``) before torch loads (see docs/performance.md).
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

#: ``auto`` (default): torch's intra-op threads follow the cores other processes leave free;
#: ``torch``: torch's own default (one per core); an integer: that many threads.
THREADS_ENV = "VISIONKIT_THREADS"
#: Environment variables that fix the thread count (the user's choice is never changed).
_FIXED_BY = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _busy_jiffies() -> float | None:
    """Busy CPU time of the whole machine so far, in seconds (``/proc/stat``); None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # guest time is already counted in user
    return busy / float(os.sysconf("SC_CLK_TCK"))


class CoreMeter:
    """How many cores *other* processes kept busy since the last reading.

    The machine's busy time (``/proc/stat``) minus this process's own CPU time, over the wall
    time between two readings: an instantaneous count that a load average (a one-minute
    decay, counting this process too) cannot give. Where ``/proc/stat`` is missing it falls
    back to the one-minute load average.
    """

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._last = self._read()

    def _read(self) -> tuple[float, float | None, float]:
        import time

        return self._clock(), _busy_jiffies(), time.process_time()

    def elapsed(self) -> float:
        """Seconds since the last reading."""
        return self._clock() - self._last[0]

    def others(self) -> float:
        """Cores other processes used since the previous call (or since this meter started)."""
        now = self._read()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        wall = t1 - t0
        if busy0 is None or busy1 is None or wall <= 0.05:
            try:
                return max(0.0, os.getloadavg()[0])
            except OSError:
                return 0.0
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall)


def threads_for(cpus: int, others: float) -> int:
    """torch threads that fit: the cores left by ``others`` busy cores, at least one, at most ``cpus``."""
    return max(1, min(cpus, int(cpus - others + 0.5)))


def fixed_threads() -> tuple[int | None, str]:
    """``(threads, why)`` when the thread count is not visionkit's to choose, else ``(None, "auto")``."""
    choice = os.environ.get(THREADS_ENV, "auto").strip().lower()
    if choice == "torch":
        return None, "torch"
    if choice.isdigit() and int(choice) > 0:
        return int(choice), THREADS_ENV
    for var in _FIXED_BY:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), var
    return None, "auto"


class ThreadPolicy(Callback):
    """torch's intra-op threads fit the cores that are actually free, while training on the CPU.

    torch starts one OpenMP thread per core. When other processes hold some of those cores,
    every parallel region waits for its descheduled threads: a 2-core detection run next to
    one CPU-bound process took 11x its quiet time (``benchmarks/shared_machine.py``). This
    callback measures what other processes use (:class:`CoreMeter`: a short sample when the
    run starts, then every ``interval_s`` seconds of training) and sets
    ``torch.set_num_threads`` to the cores left, at least one. The CLI also shortens OpenMP's
    spin-wait (``GOMP_SPINCOUNT``, before torch loads), so the seconds until the next check
    cost little when load arrives mid-run.

    It leaves the count alone when the user fixed it (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
    ``VISIONKIT_THREADS=N``, or ``VISIONKIT_THREADS=torch`` for torch's own default), on
    accelerators (the CPU threads then only feed the device), and under ``--deterministic``
    after the first choice (thread counts may change floating-point reduction order).

    ``choices`` keeps the first decision and every change as ``(epoch, threads, other
    processes' cores)``; the run records them (``config.yaml``'s ``derived.runtime``).
    """

    def __init__(self, sample_s: float = 0.3, interval_s: float = 5.0) -> None:
        self.sample_s, self.interval_s = sample_s, interval_s
        self.meter: CoreMeter | None = None
        self.mode = "auto"
        self.adaptive = False
        self.checks = 0
        self.choices: list[tuple[int, int, float]] = []
        self._last = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import time

        import torch

        threads, self.mode = fixed_threads()
        on_cpu = type(trainer.accelerator).__name__ == "CPUAccelerator"
        if threads is not None:
            torch.set_num_threads(threads)
        if self.mode != "auto" or not on_cpu:
            if not on_cpu and self.mode == "auto":
                self.mode = "accelerator"
            self.choices.append((-1, torch.get_num_threads(), float("nan")))
            return
        self.meter = CoreMeter()
        time.sleep(self.sample_s)  # what the others use while this process waits
        self._apply(-1)
        self.adaptive = stage == "fit" and not _deterministic(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.adaptive and self.meter is not None and self.meter.elapsed() >= self.interval_s:
            self._apply(trainer.current_epoch)

    def _apply(self, epoch: int) -> None:
        import torch

        assert self.meter is not None
        others = self.meter.others()
        self.checks += 1
        threads = threads_for(available_cpus(), others)
        if threads != torch.get_num_threads() or not self.choices:
            torch.set_num_threads(threads)
            self.choices.append((epoch, threads, round(others, 2)))

    def describe(self) -> dict[str, Any]:
        """What was chosen, for config.yaml."""
        import torch

        return {
            "torch_threads": torch.get_num_threads(),
            "thread_policy": self.mode,
            "cpus": available_cpus(),
            "thread_checks": self.checks,
            "thread_choices": [list(c) for c in self.choices],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        }


def _deterministic(trainer: L.Trainer) -> bool:
    import torch

    return bool(torch.are_deterministic_algorithms_enabled())
