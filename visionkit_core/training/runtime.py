"""Small run-time helpers for assembled runs (imports Lightning; never imported by the CLI at start)."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


def batch_size_of(batch: Any) -> int:
    """Images in a batch: the length of its images (a tensor, or a list of variable-size images)."""
    import torch

    if isinstance(batch, dict):
        first = batch.get("image", batch.get("images"))
    elif isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
    else:
        first = batch
    if isinstance(first, torch.Tensor):
        return int(first.shape[0]) if first.ndim else 1
    return len(first) if isinstance(first, (list, tuple)) else 0


class RunMetadata(Callback):
    """Write the run's ``"visionkit"`` metadata into every checkpoint (the core does it, for any task)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = plain(meta)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        from visionkit_core.training.checkpoint import META_KEY

        checkpoint[META_KEY] = dict(self.meta)


_PLAIN = (str, int, float, bool, type(None))


def plain(obj: Any) -> Any:
    """``obj`` with paths turned into strings and anything else non-plain into its ``repr``,
    so a checkpoint's metadata always loads with ``weights_only=True``."""
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if isinstance(obj, list) else tuple(plain(v) for v in obj)
    return repr(obj)


class PlainHyperparameters(Callback):
    """Keep hyperparameters plain in every checkpoint (a plugin's ``Path`` would break safe loading)."""

    KEYS = ("hyper_parameters", "datamodule_hyper_parameters")

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for key in self.KEYS:
            if key in checkpoint:
                checkpoint[key] = plain(dict(checkpoint[key]))


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


#: Notices that are expected in every visionkit run and tell the user nothing actionable.
_EXPECTED_WARNINGS = (
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+_dataloader' does not have many workers",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"torch.distributed.nn.functional.all_gather is deprecated",
)


def quiet_lightning() -> None:
    """Silence Lightning's advertising tip and the notices visionkit's own design triggers."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


class RNGState(Callback):
    """Save and restore the Python, NumPy and torch RNG states with every checkpoint.

    Together with the (seed, epoch)-driven sampler this makes ``--resume`` replay exactly what
    an uninterrupted run would have done. States are stored as plain lists and tensors so the
    checkpoint still loads with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        version, mt, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
        state: dict[str, Any] = {
            "python": [version, list(mt), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],  # type: ignore[union-attr,attr-defined]
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        version, mt, gauss = state_dict["python"]
        random.setstate((version, tuple(mt), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


# -- threads that fit the cores actually free ----------------------------------------------------

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


# -- config.yaml: every choice that shaped the run -------------------------------------------------


class RunRecord(Callback):
    """Add what shaped the run to ``config.yaml``'s ``derived`` section when training starts.

    The resolved config names the flags; this records what they (and the task's and dataset's
    own defaults) became once everything was built: ``task`` and ``data`` (every
    hyperparameter of the LightningModule and the datamodule: network, loss, augmentation
    recipe), ``optimizer`` (class, per-group rate and weight decay), ``schedule`` (class,
    interval, total and warmup steps), ``callbacks`` (the recipe callbacks: EMA and its decay,
    backbone fine-tuning) and ``runtime`` (torch threads, loader workers, precision, devices).
    Written on rank zero; recorded, never read back.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(run_dir), "config.yaml")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._update(describe_run(trainer, pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The thread counts chosen during the run (:class:`ThreadPolicy` adapts them each epoch)."""
        policies = [cb for cb in trainer.callbacks if isinstance(cb, ThreadPolicy)]  # type: ignore[attr-defined]
        if trainer.is_global_zero and policies:
            self._update({}, runtime=policies[0].describe())

    def _update(self, record: dict[str, Any], runtime: dict[str, Any] | None = None) -> None:
        if not os.path.exists(self.path):
            return
        import yaml

        from visionkit_core.run.config import DERIVED_KEY

        with open(self.path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        derived = data.get(DERIVED_KEY) or {}
        derived.update(plain(record))
        if runtime:
            derived["runtime"] = {**(derived.get("runtime") or {}), **plain(runtime)}
        data[DERIVED_KEY] = derived
        with open(self.path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=False)


def describe_run(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The resolved choices of a started fit (see :class:`RunRecord`)."""
    datamodule = getattr(trainer, "datamodule", None)
    record: dict[str, Any] = {
        "task": {
            "class": _qualname(pl_module),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
            "trainable_parameters": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            **dict(pl_module.hparams),
        },
        "data": {"class": _qualname(datamodule), **dict(getattr(datamodule, "hparams", {}) or {})},
    }
    optimizers = [
        {
            "class": _qualname(opt),
            "groups": [
                {key: group[key] for key in _GROUP_KEYS if key in group}
                | {"parameters": sum(p.numel() for p in group["params"])}
                for group in opt.param_groups
            ],
        }
        for opt in trainer.optimizers
    ]
    record["optimizer"] = optimizers[0] if len(optimizers) == 1 else optimizers
    record["schedule"] = [_describe_scheduler(config, trainer) for config in trainer.lr_scheduler_configs]
    record["callbacks"] = [_describe_callback(cb) for cb in trainer.callbacks if _shapes_training(cb)]  # type: ignore[attr-defined]
    runtime: dict[str, Any] = {
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "precision": trainer.precision,
        "max_epochs": trainer.max_epochs,
        "train_batches_per_epoch": trainer.num_training_batches,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
    }
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None and hasattr(loader, "num_workers"):
        runtime["num_workers"] = loader.num_workers
        runtime["batch_size"] = getattr(loader, "batch_size", None)
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, ThreadPolicy):
            runtime.update(cb.describe())
    record["runtime"] = runtime
    return record


#: What a parameter group records (``initial_lr``: the base rate the schedule scales).
_GROUP_KEYS = ("initial_lr", "weight_decay", "betas", "eps", "momentum", "nesterov")


def _qualname(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _describe_scheduler(config: Any, trainer: L.Trainer) -> dict[str, Any]:
    out: dict[str, Any] = {"class": _qualname(config.scheduler), "interval": config.interval}
    if type(config.scheduler).__name__ == "OwnGroupsLambdaLR":  # the kit's warmup + cosine
        from visionkit_core.kit.optim import MIN_LR_RATIO, schedule_lengths

        total, warmup = schedule_lengths(trainer)
        out.update({"kind": "linear warmup + cosine", "total_steps": total, "warmup_steps": warmup,
                    "final_lr_ratio": MIN_LR_RATIO})  # fmt: skip
    return out


#: Callback classes whose settings change what is trained (recorded in config.yaml).
_SHAPING = ("WeightAveraging", "BackboneFinetuning", "StochasticWeightAveraging", "CloseMosaic")


def _shapes_training(cb: Any) -> bool:
    return any(base.__name__ in _SHAPING for base in type(cb).__mro__)


def _describe_callback(cb: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"class": _qualname(cb)}
    describe = getattr(cb, "describe", None)
    if callable(describe):
        out.update(describe())
        return out
    for key in ("decay", "unfreeze_backbone_at_epoch", "swa_lrs", "swa_epoch_start"):
        if hasattr(cb, key):
            out[key] = getattr(cb, key)
    return out
