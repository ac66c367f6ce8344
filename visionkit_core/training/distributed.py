"""Several processes, one run: ranks, a shared run directory, SLURM requeue, FSDP.

Lightning's launcher (``--devices N``), torchrun or SLURM start the ranks; Lightning connects them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from visionkit_core.errors import UsageError

#: Set by rank 0 before ``fit``; the ranks Lightning's launcher starts inherit it.
RUN_DIR_ENV = "_VISIONKIT_RUN_DIR"
#: The unredacted command line, for ranks started from rank 0's (redacted) ``sys.argv``.
ARGV_ENV = "_VISIONKIT_ARGV"


def _env_int(default: int, *names: str) -> int:
    """The first of the environment variables ``names`` that holds a number (``""`` is skipped)."""
    found = [int(os.environ[n]) for n in names if n and os.environ.get(n, "").isdigit()]
    return found[0] if found else default


def launch_rank() -> int:
    """This process's global rank as its launcher told it (0 when not launched as a rank)."""
    return _env_int(0, "RANK", "SLURM_PROCID" if slurm_detected() else "", "LOCAL_RANK")


def slurm_detected() -> bool:
    """Lightning's rule: a SLURM batch job (not an interactive ``srun bash``)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def shared_run_dir(default: Path, backbone: str) -> Path:
    """The run directory every rank agrees on when ``--run-dir`` is not given."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and launch_rank() > 0:  # only ranks started by rank 0's launcher inherit it
        return Path(inherited)
    if _env_int(1, "WORLD_SIZE", "SLURM_NTASKS" if slurm_detected() else "") > 1:  # torchrun or SLURM
        job = os.environ.get("SLURM_JOB_ID") if slurm_detected() else None
        job = job or os.environ.get("TORCHELASTIC_RUN_ID")
        if not job or job == "none":
            raise UsageError(
                "several processes were launched (torchrun): pass --run-dir so that every rank "
                "writes to the same run directory"
            )
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone).strip("-")
        return Path("runs") / f"job-{job}-{safe}"
    return default


def publish_run_dir(run_dir: Path) -> None:
    """Let ranks started later by Lightning's launcher find the run directory."""
    os.environ[RUN_DIR_ENV] = str(run_dir)


def slurm_resume_checkpoint(run_dir: Path) -> Path | None:
    """Under a requeued SLURM job, the checkpoint to continue from without extra flags."""
    if not slurm_detected() or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None  # a new job never continues an old run silently: only a requeued one
    # the newest checkpoint Lightning saved on a requeue signal (hpc_ckpt_N.ckpt), or last.ckpt
    hpc = [p for p in run_dir.glob("hpc_ckpt_*.ckpt") if re.fullmatch(r"hpc_ckpt_\d+\.ckpt", p.name)]
    newest = max(hpc, key=lambda p: int(p.stem[len("hpc_ckpt_") :]), default=None)
    candidates = [p for p in (newest, run_dir / "checkpoints" / "last.ckpt") if p and p.exists()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


_BLOCK_NAME = re.compile(r"(Block|Bottleneck|BasicBlock|Stage|EncoderLayer)$")


def fsdp_strategy(model: Any, accelerator: str, activation_checkpointing: bool) -> Any:
    """Lightning's FSDPStrategy, wrapping the backbone's blocks; a clear error where it cannot run."""
    if accelerator not in ("gpu", "cuda"):
        raise UsageError(
            "--strategy fsdp needs CUDA GPUs (it shards parameters over NCCL); on CPU use --strategy ddp"
        )
    from lightning.pytorch.strategies import FSDPStrategy

    blocks = {type(m) for m in model.modules() if _BLOCK_NAME.search(type(m).__name__)}
    kwargs: dict[str, Any] = {}
    if blocks:
        kwargs["auto_wrap_policy"] = blocks
        if activation_checkpointing:
            kwargs["activation_checkpointing_policy"] = blocks
    else:
        from functools import partial

        from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

        kwargs["auto_wrap_policy"] = partial(size_based_auto_wrap_policy, min_num_params=1_000_000)
    return FSDPStrategy(**kwargs)


def gather_skipped(trainer: Any, local: set[str]) -> set[str]:
    """The union of every rank's skipped image paths (each counted once)."""
    if trainer.world_size <= 1:
        return set(local)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return set(local)
    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, sorted(local))
    return {p for part in gathered for p in (part or [])}
