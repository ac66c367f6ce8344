"""Shared test fixtures: isolated caches, offline services, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# Per-test CPU seconds, the suite's CPU budget and its report (tests/_cpu_budget.py).
pytest_plugins = ["_cpu_budget"]

_CACHE = Path(
    os.environ.get("VISIONKIT_TEST_CACHE", Path(__file__).resolve().parents[1] / ".cache" / "test-visionkit")
)

# Every test (and every subprocess it starts) is offline and writes nowhere outside tmp dirs.
os.environ.setdefault("VISIONKIT_CACHE_DIR", str(_CACHE))
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
# One compute thread per process (tests and every run they start): two test processes or two DDP
# ranks then share the 2 cores without OpenMP threads spinning against each other, which inflates
# CPU seconds and wall time on a busy machine.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def pytest_configure(config: pytest.Config) -> None:
    import cli_server

    cli_server.CONFIG = config


def offline_wandb_env(home: Path) -> dict[str, str]:
    """The environment of a subprocess that logs a real offline wandb run: none of this process's
    ``WANDB_*`` variables, no netrc (no key), and wandb's config, cache and data folders in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        NETRC=str(home / "no-netrc"),
        WANDB_CONFIG_DIR=str(home / "wandb-config"),
        WANDB_CACHE_DIR=str(home / "wandb-cache"),
        WANDB_DATA_DIR=str(home / "wandb-data"),
    )
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m visionkit_core ARGS`` as a process of its own (cwd: a fresh tmp dir).

    A forked child of the shared CLI server (tests/cli_server.py): the environment, exit code and
    output of a subprocess without importing torch again. Tests of what a fresh interpreter
    imports start one themselves (test_cli's ``_imported_by``).
    """
    import cli_server

    def run(
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        return cli_server.visionkit(*args, cwd=cwd or tmp_path, env=env, timeout=timeout)

    return run


def make_image_tree(
    root: Path,
    classes: Sequence[str],
    per_class: int,
    size: int = 40,
    splits: Sequence[str] = ("train", "val"),
) -> Path:
    """Write a small ImageFolder tree of distinguishable synthetic JPEGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for ci, cls in enumerate(classes):
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3), dtype=np.uint8)
                base[..., ci % 3] = 200  # each class its own dominant colour
                noise = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(d / f"{cls}_{i}.jpg", quality=90)
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A train/val tree with 2 classes, 8 images each per split."""
    return make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=8)
