"""Faults injected for real: a full disk, a read-only run directory, SIGKILL during a save, a
diverging loss, SIGTERM. In each, nothing already saved is lost and the user gets one clear line.

Commands run as processes forked by the CLI server of tests/cli_server.py (torch imported once);
the one that needs a resource limit set before it starts is a ``subprocess`` of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_server import Cli
from conftest import make_image_tree

from visionkit_core.training.checkpoint import safe_load

# Lightning's own deprecation notice about torch's pytree, seen by the in-process Trainers below
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")

TINY = ["--image-size", "32", "--batch-size", "4", "--backbone", "timm:test_resnet"]
# One thread per process: on shared CPUs OpenMP spin-waiting makes a 0.3 s epoch take 15 s.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(
    *args: str, cwd: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionkit_core", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=600,
        preexec_fn=preexec_fn,
    )


@pytest.fixture
def vk(request: pytest.FixtureRequest) -> Cli:
    """``vk("train", ..., cwd=...)``: one visionkit command, a process of its own."""
    return Cli(request.config)


def error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_finite(path: Path) -> bool:
    ckpt = safe_load(path)
    return all(bool(torch.isfinite(v).all()) for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A finished one-epoch run (12 training images), copied by each test that resumes it."""
    root = tmp_path_factory.mktemp("reliability")
    make_image_tree(root / "data", ["cat", "dog"], per_class=6, size=40)
    out = Cli(request.config)(
        "train", "--data", str(root / "data"), "--epochs", "1", *TINY, "--run-dir", "run", cwd=root
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run"


def copy_run(good_run: Path, dest: Path) -> tuple[Path, str]:
    """A copy of the good run at ``dest``, and the hash of its ``last.ckpt``."""
    shutil.copytree(good_run, dest)
    return dest, digest(dest / "checkpoints" / "last.ckpt")


def assert_previous_checkpoint_intact(run: Path, before: str) -> None:
    last = run / "checkpoints" / "last.ckpt"
    assert digest(last) == before
    assert safe_load(last)["global_step"] > 0
    assert not list((run / "checkpoints").glob(".*.tmp")), "a temporary file was left behind"


# -- write failures -------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[bool]:
    """Mount a tmpfs of ``size_kb`` at ``path``; yields False where mounting is not permitted."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(path)], check=True)


def _du_kb(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) // 1024 + 64


def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(
    good_run: Path, tmp_path: Path, vk: Cli
) -> None:
    """ENOSPC from a real, nearly full tmpfs (as root); elsewhere EFBIG from a real RLIMIT_FSIZE."""
    ckpt_kb = (good_run / "checkpoints" / "last.ckpt").stat().st_size // 1024
    with small_filesystem(tmp_path / "fs", _du_kb(good_run) + ckpt_kb // 2) as mounted:
        if mounted:  # room for everything but one more checkpoint
            run, before = copy_run(good_run, tmp_path / "fs" / "run")
            out = vk("train", "--resume", "last", "--epochs", "2", "--run-dir", str(run), cwd=tmp_path)
            reason = "No space left on device"
        else:  # not root: the kernel refuses any write past 1 MiB to this process
            run, before = copy_run(good_run, tmp_path / "run")
            limit = 1 << 20
            out = cli(
                "train",
                "--resume",
                "last",
                "--epochs",
                "2",
                "--run-dir",
                str(run),
                cwd=tmp_path,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
            )
            reason = "File too large"
        assert out.returncode == 1, out.stderr[-3000:]
        line = error_line(out)
        assert "cannot write checkpoint" in line and reason in line and "--resume last" in line, line
        assert_previous_checkpoint_intact(run, before)


def _make_read_only(path: Path) -> Callable[[], None]:
    """Make ``path`` unwritable even for root; return the undo."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: cannot make a directory read-only")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_checkpoint_dir_is_one_line_and_keeps_the_previous_checkpoint(
    good_run: Path, tmp_path: Path, vk: Cli
) -> None:
    run, before = copy_run(good_run, tmp_path / "run")
    undo = _make_read_only(run / "checkpoints")
    try:
        out = vk("train", "--resume", "last", "--epochs", "2", "--run-dir", str(run), cwd=tmp_path)
    finally:
        undo()
    assert out.returncode == 1, out.stderr[-3000:]
    line = error_line(out)
    assert "cannot write checkpoint" in line and "not writable" in line, line
    assert_previous_checkpoint_intact(run, before)


# -- SIGKILL during saves ---------------------------------------------------------------------


def _other_filesystem() -> str | None:
    shm = Path("/dev/shm")
    if (
        shm.is_dir()
        and os.access(shm, os.W_OK)
        and shm.stat().st_dev != Path(tempfile.gettempdir()).stat().st_dev
    ):
        return str(shm)
    return None


@pytest.mark.parametrize("tmpdir", ["same", "other"])
def test_sigkill_during_saves_never_leaves_a_partial_checkpoint(tmp_path: Path, tmpdir: str) -> None:
    """Kill a process at random moments while it saves through the Trainer's checkpoint I/O.

    With Lightning's own I/O and ``$TMPDIR`` on another file system (here /dev/shm), about a
    quarter of such kills leave an empty or truncated ``last.ckpt``.
    """
    from visionkit_core.training.checkpoint_io import AtomicCheckpointIO

    temp = str(tmp_path) if tmpdir == "same" else _other_filesystem()
    if temp is None:
        pytest.skip("no second writable file system (/dev/shm) for $TMPDIR")
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    blob = torch.arange(4_000_000, dtype=torch.float32)  # 16 MB: saves take long enough to be hit
    io.save_checkpoint({"round": 0, "blob": blob}, target)
    started = time.perf_counter()
    io.save_checkpoint({"round": 0, "blob": blob}, target)
    save_s = time.perf_counter() - started
    rng = random.Random(0)
    rounds = []
    for r in range(1, 9):
        done_r, done_w = os.pipe()  # the child writes a byte after each save it completes
        pid = os.fork()
        if pid == 0:  # the child: save, save, save... until killed
            os.close(done_r)
            os.environ["TMPDIR"] = temp
            tempfile.tempdir = temp
            try:
                while True:
                    io.save_checkpoint({"round": r, "blob": blob}, target)
                    os.write(done_w, b"s")
            finally:
                os._exit(1)
        os.close(done_w)
        if r % 2 == 0:  # every other kill lands in a save after a completed one, however slow saves are
            ready, _, _ = select.select([done_r], [], [], 120)
            assert ready, "the child completed no save in 120 s"
            time.sleep(rng.uniform(0.0, 1.0) * save_s)
        else:  # at a random moment from the start: in the first save, or a later one
            time.sleep(rng.uniform(0.3, 3.0) * save_s)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(done_r)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert target.stat().st_size > 0
        ckpt = safe_load(target)
        assert torch.equal(ckpt["blob"], blob) and ckpt["round"] in (rounds[-1] if rounds else 0, r)
        rounds.append(ckpt["round"])
    assert any(rounds), "no save ever completed: the kills never hit a save"
    io.save_checkpoint(
        {"round": 99, "blob": blob}, target
    )  # a later save removes the killed ones' temp files
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


# -- non-finite loss --------------------------------------------------------------------------


def test_diverging_run_stops_at_the_first_non_finite_loss(good_run: Path, tmp_path: Path, vk: Cli) -> None:
    data = good_run.parent / "data"
    out = vk(
        "train", "--data", str(data), "--epochs", "2", "--lr", "1e12", *TINY, "--run-dir", "nan", cwd=tmp_path
    )
    assert out.returncode == 1, out.stderr[-3000:]
    line = error_line(out)
    assert "training loss became nan at step" in line or "training loss became inf at step" in line, line
    assert "--lr" in line and "gradient_clip_val" in line, line
    # the very first steps diverge: nothing finished, so nothing was saved
    assert not list((tmp_path / "nan").rglob("*.ckpt"))


def test_divergence_after_a_good_epoch_leaves_last_ckpt_untouched(
    good_run: Path, tmp_path: Path, vk: Cli
) -> None:
    """Epoch 1 was fine; the learning rate then jumps to 1e12 (in the saved optimizer state)."""
    run, _ = copy_run(good_run, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    ckpt = safe_load(last)
    for group in ckpt["optimizer_states"][0]["param_groups"]:
        group["lr"] = group["initial_lr"] = 1e12
    for sched in ckpt["lr_schedulers"]:
        sched["base_lrs"] = [1e12] * len(sched["base_lrs"])
    torch.save(ckpt, last)
    before = {p.name: digest(p) for p in (run / "checkpoints").glob("*.ckpt")}
    out = vk("train", "--resume", "last", "--epochs", "3", "--run-dir", str(run), cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "training loss became" in error_line(out)
    after = {p.name: digest(p) for p in (run / "checkpoints").glob("*.ckpt")}
    assert after == before
    assert all(all_finite(p) for p in (run / "checkpoints").glob("*.ckpt"))


def test_weights_that_overflow_after_a_finite_loss_are_never_saved(tmp_path: Path) -> None:
    """The guard checks the weights at save time too (a finite loss can precede an overflowing step)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from visionkit_callbacks.guards import NonFiniteError, guard_callbacks

    from visionkit_core.training.checkpoint_io import AtomicCheckpointIO

    class Overflowing(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.layer(batch[0]).pow(2).mean()

        def on_train_epoch_end(self) -> None:  # runs before ModelCheckpoint saves the epoch
            if self.current_epoch == 1:
                with torch.no_grad():
                    self.layer.weight.fill_(float("inf"))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    ckdir = tmp_path / "checkpoints"
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=ckdir, save_last=True), *guard_callbacks()],
        plugins=[AtomicCheckpointIO()],
    )
    with pytest.raises(NonFiniteError, match=r"weight 'layer\.weight' is not finite at step 4"):
        trainer.fit(Overflowing(), train_dataloaders=data)
    assert safe_load(ckdir / "last.ckpt")["global_step"] == 2 and all_finite(ckdir / "last.ckpt")


def test_a_deferred_loss_check_still_names_the_first_bad_step_and_saves_nothing_after_it(
    tmp_path: Path,
) -> None:
    """How it runs on GPUs: losses are checked in groups; the check before a save catches it."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from visionkit_callbacks.guards import NonFiniteError, NonFiniteGuard

    from visionkit_core.training.checkpoint_io import AtomicCheckpointIO

    class Diverging(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.layer(batch[0]).pow(2).mean()
            return loss * float("nan") if self.global_step == 5 else loss  # the 6th step diverges

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    ckdir = tmp_path / "checkpoints"
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=ckdir, save_last=True), NonFiniteGuard(check_every=100)],
        plugins=[AtomicCheckpointIO()],
    )
    with pytest.raises(NonFiniteError, match=r"loss became nan at step 6 \(epoch 2, batch 2\)"):
        trainer.fit(Diverging(), train_dataloaders=data)
    assert safe_load(ckdir / "last.ckpt")["global_step"] == 4 and all_finite(ckdir / "last.ckpt")


# -- SIGTERM ----------------------------------------------------------------------------------


def test_sigterm_saves_last_ckpt_exits_143_and_resume_finishes(tmp_path: Path, vk: Cli) -> None:
    data = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=16, size=16, splits=("train", "val"))
    steps_per_epoch = 32 // 4
    proc = vk.start(
        "train", "--data", str(data), "--epochs", "50", *TINY, cwd=tmp_path, env={"VISIONKIT_DEBUG": ""}
    )
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 300
    while (
        proc.poll() is None and time.monotonic() < deadline and not list(runs.glob("*/checkpoints/last.ckpt"))
    ):
        time.sleep(0.1)
    (last,) = list(runs.glob("*/checkpoints/last.ckpt"))
    step_before = safe_load(last)["global_step"]  # a checkpoint being replaced still reads whole
    os.kill(proc.pid, signal.SIGTERM)
    done = proc.wait(timeout=300)
    stderr = done.stderr
    assert done.returncode == 143, stderr[-3000:]
    line = [x for x in stderr.splitlines() if x.startswith("Error:")][-1]
    assert "stopped by SIGTERM at step" in line and "--resume last" in line and "Traceback" not in stderr, (
        line
    )
    saved = safe_load(last)
    assert saved["global_step"] >= step_before and not (last.parent.parent / "summary.json").exists()

    epochs = saved["epoch"] + 2  # finish the interrupted epoch and one more
    run = last.parent.parent
    out = vk("train", "--resume", "last", "--run-dir", str(run), "--epochs", str(epochs), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == epochs
    assert summary["global_step"] == epochs * steps_per_epoch  # no batch lost or repeated
