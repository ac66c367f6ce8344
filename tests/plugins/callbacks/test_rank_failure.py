"""A failure on one rank of a 2-process CPU DDP run ends every rank, with that one message.

Faults are real: a third-party callback raising on rank 1, a non-finite loss on rank 1 only
(its weights poisoned), and a full disk under rank 0's checkpoint save (a real tmpfs). The
other rank must not wait in a collective (gloo until the socket closes, NCCL for 30 minutes)
nor report the broken connection as an error of its own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[2] / "probe_plugin"
#: Generous for 2 ranks starting on a loaded 2-core machine; a hang would run to the timeout.
BOUND_S = 240


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    info = site / "visionkit_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: visionkit-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[visionkit]\nprobe = visionkit_probe.plugin\n")
    return site


def ddp_train(site: Path, run_dir: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PROBE)])}
    cmd = [
        *(sys.executable, "-m", "visionkit_core", "train", "--task", "brightness", "--batch-size", "8"),
        *("--epochs", "2", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"),
        *("--logger", "csv", "--run-dir", str(run_dir), *extra),
    ]
    started = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=BOUND_S, cwd=run_dir.parent)
    return out, time.monotonic() - started


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def assert_one_message(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode != 0
    assert len(errors(out.stderr)) == 1, out.stderr[-3000:]
    assert needle in errors(out.stderr)[0]
    assert "Connection closed" not in out.stderr and "Traceback" not in out.stderr


def test_a_plugin_callback_raising_on_rank_1_ends_both_ranks_naming_the_plugin(
    site: Path, tmp_path: Path
) -> None:
    out, _ = ddp_train(site, tmp_path / "run", "--callback", "probe:fail-on-rank")
    assert_one_message(
        out, "plugin 'probe' (visionkit-probe 1.0) raised RuntimeError: probe callback failed on rank 1"
    )


def test_a_non_finite_loss_on_one_rank_ends_both_ranks(site: Path, tmp_path: Path) -> None:
    out, _ = ddp_train(site, tmp_path / "run", "--set", "task.nan_at_step=2", "--set", "task.nan_on_rank=1")
    assert_one_message(out, "training loss became nan at step")


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[None]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (root needed): {mounted.stderr.decode()[:200]}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_under_rank_0s_save_ends_both_ranks(site: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", 1024):  # room for the run directory, not for a 4 MB checkpoint
        out, _ = ddp_train(site, tmp_path / "small" / "run")
    assert_one_message(out, "the disk is full")
