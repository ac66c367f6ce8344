"""The kit is importable lazily: its package and torch-free modules never import torch."""

from __future__ import annotations

import subprocess
import sys

import visionkit_core.kit as kit


def test_importing_the_kit_and_its_torch_free_modules_imports_no_torch() -> None:
    code = (
        "import sys, visionkit_core, visionkit_core.kit, visionkit_core.kit.demo, visionkit_core.kit.skips\n"
        "import visionkit_core.kit.plots, visionkit_core.kit.weights, visionkit_core.kit.check\n"
        "import visionkit_core.kit.export\n"
        "heavy = [m for m in ('torch', 'lightning', 'timm', 'wandb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves() -> None:
    for name in kit.__all__:
        assert getattr(kit, name) is not None, name
    assert set(kit.__all__) <= set(dir(kit))
