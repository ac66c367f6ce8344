"""Several processes, one run: CPU DDP, two torchrun nodes on loopback, SLURM requeue, FSDP on CPU.

The processes DDP and torchrun start are real interpreters (they start the program again);
single-process commands, the SLURM job's included, and torchrun's agents are forked by the CLI
server of tests/cli_server.py (torch imported once).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_server import Cli
from conftest import make_image_tree

VK = [sys.executable, "-m", "visionkit_core"]
#: A few 32 px steps prove what a full digits run proves. test_vit has LayerNorm, not BatchNorm, so a
#: 2-process run (2 x 8 images a step) computes exactly what one process does with 16.
TINY = ["--backbone", "timm:test_vit", "--image-size", "32", "--accelerator", "cpu"]
TRAIN_IMAGES = 48


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3 classes x 16 images per split, 16 px (upscaled to 32)."""
    root = make_image_tree(tmp_path_factory.mktemp("dist") / "data", ["a", "b", "c"], per_class=16, size=16)
    return str(root)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "_VISIONKIT"))}
    env.update(extra)
    return env


#: What _env() leaves out, for commands run by the CLI server (which has pytest's environment).
def _unset() -> list[str]:
    return [k for k in os.environ if k.startswith(("SLURM_", "_VISIONKIT"))]


@pytest.fixture
def vk(request: pytest.FixtureRequest) -> Cli:
    return Cli(request.config)


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _summary(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "summary.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_cpu_ddp_matches_one_process_and_writes_one_set_of_outputs(
    tmp_path: Path, data: str, vk: Cli
) -> None:
    common = ["train", "--data", data, *TINY, "--epochs", "2"]
    ddp = _run(
        [*VK, *common, "--devices", "2", "--strategy", "ddp", "--batch-size", "8", "--run-dir", "ddp"],
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = vk(
        *common, "--devices", "1", "--batch-size", "16", "--run-dir", "one", cwd=tmp_path, unset=_unset()
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _summary(tmp_path / "ddp"), _summary(tmp_path / "one")
    # same global batch, same sample order and augmentations, no BatchNorm: the same numbers
    for key in ("val/acc", "val/loss", "train/loss_epoch"):
        assert abs(a["metrics"][key] - b["metrics"][key]) <= 1e-4, (key, a["metrics"], b["metrics"])
    assert a["global_step"] == b["global_step"] == 2 * TRAIN_IMAGES // 16
    # one set of outputs: rank 1 wrote nothing of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]
    assert len(list((tmp_path / "ddp" / "checkpoints").glob("best-*.ckpt"))) == 1
    assert ddp.stdout.count("Final val/acc") == 1


def test_two_torchrun_nodes_on_loopback_train_as_one_job(tmp_path: Path, data: str, vk: Cli) -> None:
    # the two nodes' agents (python -m torch.distributed.run) are forked by the CLI server, at the
    # same time; each starts its worker, python -m visionkit_core, as a fresh interpreter
    port = _free_port()
    agents = [
        vk.start(
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "-m",
            "visionkit_core",
            "train",
            "--data",
            data,
            *TINY,
            "--num-nodes",
            "2",
            "--devices",
            "1",
            "--strategy",
            "ddp",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--run-dir",
            "run",
            module="torch.distributed.run",
            cwd=tmp_path,
            unset=_unset(),
        )
        for rank in (0, 1)
    ]
    results = [agent.wait(900) for agent in agents]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    outs = [(result.stdout, result.stderr) for result in results]
    summary = _summary(tmp_path / "run")
    assert summary["epochs"] == 1 and summary["metrics"]["val/acc"] > 0
    assert sum("Final val/acc" in out for out, _ in outs) == 1  # rank 0 reports for the job
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == TRAIN_IMAGES // (2 * 8)  # 2 nodes x 8 images a step


def test_slurm_sigusr1_saves_requeues_and_the_restarted_job_resumes(
    tmp_path: Path, data: str, vk: Cli
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    env = dict(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="visionkit-job",
        SLURM_NTASKS="1",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
        SLURM_NODELIST="localhost",
    )
    # enough short epochs that the job is still running when the signal arrives after the first one
    args = ["train", "--data", data, *TINY, "--epochs", "12", "--devices", "1", "--run-dir", "run"]
    proc = vk.start(*args, cwd=tmp_path, env=env, unset=_unset())
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.wait().stderr
    os.kill(proc.pid, signal.SIGUSR1)
    hpc = tmp_path / "run" / "hpc_ckpt_1.ckpt"
    while not (hpc.exists() and calls.exists()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # SLURM stops the job after requeueing it
    proc.wait()
    assert calls.read_text().split() == ["requeue", "4242"]
    assert torch.load(hpc, weights_only=True)["visionkit"]["config"]["epochs"] == 12
    assert not (tmp_path / "run" / "summary.json").exists()
    # the same command, no extra flags
    again = vk(*args, cwd=tmp_path, env={**env, "SLURM_RESTART_COUNT": "1"}, unset=_unset())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "SLURM job requeued; continuing from" in again.stdout + again.stderr
    assert _summary(tmp_path / "run")["epochs"] == 12


def test_fsdp_and_sync_batchnorm_on_cpu_are_clear_usage_errors(tmp_path: Path, vk: Cli) -> None:
    for extra, needle in (
        (["--strategy", "fsdp"], "--strategy fsdp needs CUDA GPUs"),
        (["--sync-batchnorm"], "--sync-batchnorm needs GPUs"),
    ):
        out = vk("train", "--accelerator", "cpu", "--epochs", "1", "--run-dir", "r", *extra, cwd=tmp_path,
                 unset=_unset())  # fmt: skip
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr[
            -2000:
        ]
