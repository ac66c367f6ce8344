"""Threads that fit the free cores (ThreadPolicy); config.yaml records what shaped a run (RunRecord)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.demos.boring_classes import BoringModel
from visionkit_callbacks.record import RunRecord
from visionkit_callbacks.threads import CoreMeter, ThreadPolicy, fixed_threads, threads_for

from visionkit_core.kit.optim import adamw_warmup_cosine


def test_threads_for_leaves_the_cores_others_use() -> None:
    assert threads_for(2, 0.0) == 2
    assert threads_for(2, 0.4) == 2
    assert threads_for(2, 1.0) == 1
    assert threads_for(2, 7.0) == 1  # at least one
    assert threads_for(8, 2.6) == 5
    assert threads_for(4, -1.0) == 4  # never more than the CPUs


def test_user_choices_win(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VISIONKIT_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert fixed_threads() == (None, "auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert fixed_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("VISIONKIT_THREADS", "torch")
    assert fixed_threads() == (None, "torch")
    monkeypatch.setenv("VISIONKIT_THREADS", "2")
    assert fixed_threads() == (2, "VISIONKIT_THREADS")


def test_core_meter_does_not_count_this_process() -> None:
    meter = CoreMeter()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # this process keeps one core busy
        pass
    # the machine's busy time minus this process's own: what *others* used, far below the core
    # this loop held (other processes on a shared machine may add some)
    assert 0.0 <= meter.others() < 0.9 + (len(os.sched_getaffinity(0)) - 1)


class _Scheduled(BoringModel):  # type: ignore[misc]
    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return adamw_warmup_cosine(self, self.hparams.lr, 0.05, self.trainer)


def test_fit_records_task_optimizer_schedule_and_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VISIONKIT_THREADS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "config.yaml").write_text("task: demo\nderived:\n  data_info: {}\n", encoding="utf-8")
    policy = ThreadPolicy(sample_s=0.05, interval_s=0.0)  # a check before every step
    threads = torch.get_num_threads()
    try:
        trainer = L.Trainer(
            max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[policy, RunRecord(tmp_path)], accelerator="cpu",
        )  # fmt: skip
        trainer.fit(_Scheduled(lr=0.02))
    finally:
        torch.set_num_threads(threads)
    record = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))
    assert record["task"] == "demo" and record["derived"]["data_info"] == {}  # kept
    derived = record["derived"]
    assert derived["task"]["lr"] == 0.02 and derived["task"]["class"].endswith("_Scheduled")
    assert derived["task"]["parameters"] == derived["task"]["trainable_parameters"] == 32 * 2 + 2
    assert derived["optimizer"]["class"] == "torch.optim.adamw.AdamW"
    assert [g["weight_decay"] for g in derived["optimizer"]["groups"]] == [0.05, 0.0]
    assert derived["optimizer"]["groups"][0]["initial_lr"] == 0.02
    schedule = derived["schedule"][0]
    assert schedule["kind"] == "linear warmup + cosine" and schedule["total_steps"] == 4
    runtime = derived["runtime"]
    assert runtime["thread_policy"] == "auto" and runtime["accelerator"] == "cpu"
    # the first choice, then a check before each of the 4 steps (recorded when it changes)
    assert runtime["thread_choices"][0][0] == -1 and runtime["thread_checks"] == 5
    assert all(1 <= c[1] <= runtime["cpus"] for c in runtime["thread_choices"])
