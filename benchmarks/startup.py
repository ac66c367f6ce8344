"""Benchmark: start-up time of ``visionkit --help``, ``train --help`` and ``plugins list``.

Each command runs in a fresh process, interleaved (shuffled order per repeat) with two
references: ``python -c pass`` (the interpreter alone) and ``python -c "import torch"``
(what any training script pays before doing anything). The figure is the median ratio to
``import torch``. One extra run of each visionkit command under ``python -X importtime``
lists which heavy modules (torch, lightning, timm, ...) it imported: there should be none.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common  # type: ignore[no-redef]

NAME = "startup"
TARGET_HELP = 0.15  # visionkit --help / import torch
HEAVY = (
    "torch",
    "torchvision",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "timm",
    "torchmetrics",
    "wandb",
    "tensorboard",
    "matplotlib",
    "sklearn",
    "numpy",
    "PIL",
)
VISIONKIT_COMMANDS = {
    "visionkit --help": ["--help"],
    "visionkit train --help": ["train", "--help"],
    "visionkit plugins list": ["plugins", "list"],
}


def _commands() -> dict[str, list[str]]:
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    for label, args in VISIONKIT_COMMANDS.items():
        cmds[label] = [*common.visionkit_command(), *args]
    return cmds


def heavy_imports(cmd: list[str], env: dict[str, str]) -> list[str]:
    """Top-level packages from :data:`HEAVY` that ``cmd`` (a Python command) imported."""
    traced = [cmd[0], "-X", "importtime", *cmd[1:]]
    out = common.run_child(traced, env=env).output
    found = set()
    for line in out.splitlines():
        if not line.startswith("import time:"):
            continue
        name = line.rsplit("|", 1)[-1].strip()
        top = name.split(".")[0]
        if top in HEAVY:
            found.add(top)
    return sorted(found)


def run(quick: bool = False, repeats: int | None = None, seed: int = 0) -> dict[str, Any]:
    repeats = repeats or (2 if quick else 15)
    with tempfile.TemporaryDirectory(prefix="vkbench-startup-") as tmp:
        env = common.clean_env({"VISIONKIT_CACHE_DIR": str(Path(tmp) / "cache")})
        cmds = _commands()
        # warm-up (file cache, .pyc files); --quick, whose times nothing asserts, goes without
        for cmd in cmds.values() if not quick else ():
            common.run_child(cmd, env=env, cwd=tmp)
        runners = {
            label: (lambda c=cmd: common.run_child(c, env=env, cwd=tmp).wall_s) for label, cmd in cmds.items()
        }
        times = common.interleave(runners, repeats, seed=seed)
        heavy = {label: heavy_imports(cmds[label], env) for label in VISIONKIT_COMMANDS}
    torch_s = common.median(times['python -c "import torch"'])
    rows = [
        {
            "command": label,
            "median_s": round(common.median(ts), 4),
            "min_s": round(min(ts), 4),
            "ratio_to_import_torch": round(common.median(ts) / torch_s, 4),
            "heavy_imports": heavy.get(label),
        }
        for label, ts in times.items()
    ]
    by = {r["command"]: r for r in rows}
    targets = [
        common.target(
            "startup: visionkit --help / import torch",
            by["visionkit --help"]["ratio_to_import_torch"],
            TARGET_HELP,
            "<=",
        )
    ]
    for label in VISIONKIT_COMMANDS:
        targets.append(
            common.target(f"startup: heavy modules imported by {label}", len(heavy[label]), 0, "<=")
        )
    return {"benchmark": NAME, "quick": quick, "repeats": repeats, "rows": rows, "targets": targets}


def markdown(doc: dict[str, Any]) -> str:
    body = [
        [
            f"`{r['command']}`",
            r["median_s"],
            r["ratio_to_import_torch"],
            "-" if r["heavy_imports"] is None else (", ".join(r["heavy_imports"]) or "none"),
        ]
        for r in doc["rows"]
    ]
    return common.md_table(["command", "median (s)", "/ import torch", "heavy modules imported"], body)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    opts = parser.parse_args()
    result = run(opts.quick, opts.repeats)
    print(markdown(result))
    print(json.dumps(result["targets"], indent=2))
