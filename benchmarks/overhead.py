"""Benchmark: training steps/s of ``visionkit train`` vs a hand-written Lightning script vs raw PyTorch.

Three programs train the same timm model on the same synthetic ImageFolder (lossless PNG
files: the same pixels whoever decodes them) with the same batch size, loader workers (0),
optimiser, schedule, seed, sample order and torch threads (1, see :func:`run`), each in its
own process:

- ``visionkit``: the real CLI, ``visionkit train --data DIR --backbone timm:MODEL ...``, with
  its defaults (CSV logging, best + last checkpoints, metrics, progress line). A throwaway
  plugin, installed for the run as a dist-info on ``PYTHONPATH``, adds a step timer through
  the ``visionkit_configure_trainer`` hook;
- ``lightning``: ``baselines/lightning_timm.py``, a minimal Lightning + timm script with
  torchvision ``ImageFolder``, PIL transforms and Lightning's default Trainer;
- ``raw``: ``baselines/raw_torch.py``, the same in a plain PyTorch loop.

Steady-state steps/s counts the steps after the warm-up epoch(s), within epochs (validation
and checkpointing happen between epochs; their cost shows in ``epoch_s``). The programs run
interleaved (shuffled order per repeat); each figure is the median over repeats. The losses
of the first steps must agree for the same seed: the same model, data and order. Peak RSS
(``wait4``) of the same runs is the memory benchmark.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common  # type: ignore[no-redef]

NAME = "overhead"
TARGET_STEPS = 0.97  # visionkit / hand-written Lightning, steady-state steps/s
TARGET_MEMORY = 1.10  # visionkit / hand-written Lightning, peak RSS
#: torch threads of every run (OMP_NUM_THREADS); 0 keeps torch's default (one per core). See run().
THREADS = 1
PROGRAMS = ("visionkit", "lightning", "raw")
BASELINES = common.BENCH_DIR / "baselines"

#: (timm model, image size, batch size, classes, train images per class, val images per class, epochs)
FULL = [
    {"model": "resnet18", "size": 64, "batch": 16, "classes": 10, "train": 16, "val": 4, "epochs": 3},
    {"model": "test_resnet", "size": 64, "batch": 32, "classes": 10, "train": 32, "val": 8, "epochs": 3},
]
QUICK = [{"model": "test_resnet", "size": 32, "batch": 8, "classes": 4, "train": 8, "val": 2, "epochs": 2}]

_TIMER_PLUGIN = '''"""Throwaway benchmark plugin: adds the step timer to visionkit's Trainer."""

import os

from visionkit_core import hookimpl


@hookimpl
def visionkit_configure_trainer(trainer_kwargs, run):
    path = os.environ.get("VKBENCH_TIMES")
    if path:
        from steptimer import StepTimer

        trainer_kwargs["callbacks"].append(StepTimer(path))
'''


def install_timer_plugin(root: Path) -> Path:
    """Write the step-timer plugin as an installed distribution under ``root``."""
    name = "vkbench_steptimer"
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text(_TIMER_PLUGIN, encoding="utf-8")
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vkbench-steptimer\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[visionkit]\n{name} = {name}\n")
    (info / "top_level.txt").write_text(name + "\n")
    return root


def commands(
    program: str, case: dict[str, Any], data: Path, run_dir: Path, times: Path, seed: int
) -> list[str]:
    common_args = ["--image-size", str(case["size"]), "--batch-size", str(case["batch"])]
    common_args += ["--epochs", str(case["epochs"]), "--lr", "0.002", "--seed", str(seed)]
    if program == "visionkit":
        return [
            *common.visionkit_command(),
            "train",
            "--data",
            str(data),
            "--backbone",
            f"timm:{case['model']}",
            "--accelerator",
            "cpu",
            "--num-workers",
            "0",
            "--run-dir",
            str(run_dir),
            # no augmentation: the same pixels as the baselines' plain transforms
            "--set",
            "data.crop_scale_min=1.0",
            "--set",
            "data.hflip=false",
            "--set",
            "data.crop_pct=1.0",
            *common_args,
        ]
    script = BASELINES / ("lightning_timm.py" if program == "lightning" else "raw_torch.py")
    cmd = [sys.executable, str(script), "--data", str(data), "--model", case["model"], *common_args]
    cmd += ["--workers", "0", "--times", str(times)]
    return cmd + (["--run-dir", str(run_dir)] if program == "lightning" else [])


def steady_state(record: dict[str, Any], warmup_epochs: int = 1) -> dict[str, float]:
    """Steps/s within epochs after the warm-up, the median epoch time, and the first epoch's figures.

    ``steps_per_s`` is one over the median step interval: on a shared machine a step now and
    then waits for a core, and the median ignores those waits where the mean
    (``steps_per_s_mean``, all steady-state steps over their total time) does not.
    ``cpu_steps_per_s`` counts the process's CPU time per step instead, which waiting for a
    core does not inflate when torch runs one thread (with more, waiting threads spin). The
    ``first_epoch_*`` figures compare epoch 0's steps with the later ones by wall time
    (mean) and by the process's CPU time, which waiting for a core does not inflate.
    """
    ends, cpu, epochs = record["step_end"], record["step_cpu"], record["step_epoch"]
    steady, first, steady_cpu, first_cpu = [], [], [], []
    for i in range(1, len(ends)):
        if epochs[i] == epochs[i - 1]:
            later = epochs[i] >= warmup_epochs
            (steady if later else first).append(ends[i] - ends[i - 1])
            (steady_cpu if later else first_cpu).append(cpu[i] - cpu[i - 1])
    starts = [*record["epoch_start"], record["train_end"]]
    durations = [starts[k + 1] - starts[k] for k in range(len(starts) - 1)]
    nan = float("nan")

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else nan

    return {
        "steps_per_s": 1.0 / common.median(steady) if steady else nan,
        "steps_per_s_mean": 1.0 / mean(steady) if steady else nan,
        "cpu_steps_per_s": 1.0 / common.median(steady_cpu) if steady_cpu else nan,
        "epoch_s": common.median(durations[warmup_epochs:]),
        "first_epoch_speed_wall": mean(steady) / mean(first) if first and steady else nan,
        "first_epoch_speed_cpu": mean(steady_cpu) / mean(first_cpu) if first_cpu and steady_cpu else nan,
    }


def run(
    quick: bool = False,
    repeats: int | None = None,
    seed: int = 0,
    threads: int = THREADS,
    programs: tuple[str, ...] = PROGRAMS,
) -> dict[str, Any]:
    """Run every case; ``threads`` torch threads per run (0: torch's default, one per core).

    ``programs``: which of :data:`PROGRAMS` run (Lightning, the reference, always does); figures
    of a program left out are absent from the rows and ``-`` in the tables.

    One thread by default: on a machine shared with other jobs, a run with one thread per
    core is either as fast as it should be or, while another process holds a core, many
    times slower (each parallel region waits for its descheduled thread); whole runs land
    in one mode or the other, and three repeats cannot outvote that. With one thread a busy
    core only time-slices the run, alike for all three programs. Per-step framework work
    (logging, metrics, callbacks) does not depend on the thread count.
    """
    cases = QUICK if quick else FULL
    repeats = repeats or (1 if quick else 3)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vkbench-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        plugin_dir = install_timer_plugin(tmp / "plugins")
        env = common.clean_env(
            {
                "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(BASELINES)]),
                "VISIONKIT_CACHE_DIR": str(tmp / "cache"),
            }
        )
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var, None)
            if threads:
                env[var] = str(threads)
        for ci, case in enumerate(cases):
            data = tmp / f"data-{ci}"
            common.write_images(data, case["classes"], case["train"], case["size"], ext=".png", seed=1)
            common.write_images(
                data, case["classes"], case["val"], case["size"], ext=".png", seed=2, splits=("val",)
            )
            chosen = [p for p in PROGRAMS if p in programs or p == "lightning"]
            results: dict[str, list[dict[str, Any]]] = {p: [] for p in chosen}
            runners = {
                p: functools.partial(_run_one, p, case, data, tmp, env, seed, results[p]) for p in chosen
            }
            common.interleave(runners, repeats, seed=seed + ci)
            rows.append(_summarise(case, results))
    return {**_document(rows, repeats, quick), "threads": threads or "torch default"}


def _run_one(
    program: str,
    case: dict[str, Any],
    data: Path,
    tmp: Path,
    env: dict[str, str],
    seed: int,
    results: list[dict[str, Any]],
) -> float:
    """Run ``program`` once; append its figures to ``results``; return its steps/s."""
    index = len(list(tmp.glob("times-*.json")))
    times = tmp / f"times-{index}.json"
    cmd = commands(program, case, data, tmp / f"run-{index}", times, seed)
    child = common.run_child(cmd, env={**env, "VKBENCH_TIMES": str(times)}, cwd=tmp)
    record = json.loads(times.read_text())
    stats = steady_state(record)
    results.append(
        {**stats, "wall_s": child.wall_s, "max_rss_mib": child.max_rss_mib, "loss": record["loss"]}
    )
    return stats["steps_per_s"]


def _summarise(case: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = {
        p: {
            k: common.median([r[k] for r in rs])
            for k in (
                "steps_per_s",
                "steps_per_s_mean",
                "cpu_steps_per_s",
                "epoch_s",
                "first_epoch_speed_wall",
                "first_epoch_speed_cpu",
                "wall_s",
                "max_rss_mib",
            )
        }
        for p, rs in results.items()
    }
    first = {p: rs[0]["loss"] for p, rs in results.items()}
    n = min(len(v) for v in first.values())
    check = min(n, 10)
    loss_diff = {
        f"{a}-{b}": max(
            (abs(x - y) for x, y in zip(first[a][:check], first[b][:check], strict=True)), default=0.0
        )
        for a, b in (("visionkit", "lightning"), ("visionkit", "raw"), ("lightning", "raw"))
        if a in first and b in first
    }
    missing = dict.fromkeys(med["lightning"], float("nan"))
    vk, lt, raw = (med.get(p, missing) for p in ("visionkit", "lightning", "raw"))
    return {
        "model": case["model"],
        "image_size": case["size"],
        "batch_size": case["batch"],
        "train_images": case["classes"] * case["train"],
        "epochs": case["epochs"],
        "median": med,
        "per_run": {
            p: [{k: v for k, v in r.items() if k != "loss"} for r in rs] for p, rs in results.items()
        },
        "steps_ratio_vs_lightning": common.ratio(vk["steps_per_s"], lt["steps_per_s"]),
        "steps_ratio_vs_raw": common.ratio(vk["steps_per_s"], raw["steps_per_s"]),
        "mean_steps_ratio_vs_lightning": common.ratio(vk["steps_per_s_mean"], lt["steps_per_s_mean"]),
        "cpu_steps_ratio_vs_lightning": common.ratio(vk["cpu_steps_per_s"], lt["cpu_steps_per_s"]),
        "epoch_ratio_vs_lightning": common.ratio(lt["epoch_s"], vk["epoch_s"]),
        "memory_ratio_vs_lightning": common.ratio(vk["max_rss_mib"], lt["max_rss_mib"]),
        "loss_first_steps": {p: [round(x, 5) for x in v[:check]] for p, v in first.items()},
        "loss_max_abs_diff_first_steps": loss_diff,
        "losses_agree": all(d <= 1e-3 for d in loss_diff.values()),
    }


def _document(rows: list[dict[str, Any]], repeats: int, quick: bool) -> dict[str, Any]:
    targets = []
    for row in rows:
        label = f"{row['model']}@{row['image_size']}"
        targets.append(
            common.target(
                f"overhead {label}: visionkit / Lightning steps/s",
                row["steps_ratio_vs_lightning"],
                TARGET_STEPS,
                ">=",
            )
        )
        memory = common.target(
            f"memory {label}: visionkit / Lightning peak RSS",
            row["memory_ratio_vs_lightning"],
            TARGET_MEMORY,
            "<=",
        )
        targets.append({**memory, "benchmark": "memory"})
        diff = max(row["loss_max_abs_diff_first_steps"].values())
        targets.append(common.target(f"overhead {label}: max loss difference, first steps", diff, 1e-3, "<="))
    return {"benchmark": NAME, "quick": quick, "repeats": repeats, "rows": rows, "targets": targets}


def markdown(doc: dict[str, Any]) -> str:
    head = [
        "model",
        "batch",
        "visionkit steps/s",
        "Lightning steps/s",
        "raw steps/s",
        "vk / Lightning",
        "vk / raw",
        "vk / Lightning (mean step)",
        "vk / Lightning (CPU time per step)",
        "epoch time Lightning / vk",
        "peak RSS vk / Lightning (MiB)",
        "loss diff (10 steps)",
    ]
    body, first = [], []
    for row in doc["rows"]:
        missing = dict.fromkeys(row["median"]["lightning"], "-")
        med = {p: row["median"].get(p, missing) for p in PROGRAMS}
        label = f"{row['model']}@{row['image_size']}"
        body.append(
            [
                label,
                row["batch_size"],
                med["visionkit"]["steps_per_s"],
                med["lightning"]["steps_per_s"],
                med["raw"]["steps_per_s"],
                row["steps_ratio_vs_lightning"],
                row["steps_ratio_vs_raw"],
                row["mean_steps_ratio_vs_lightning"],
                row["cpu_steps_ratio_vs_lightning"],
                row["epoch_ratio_vs_lightning"],
                f"{common.fmt(med['visionkit']['max_rss_mib'], 0)} / "
                f"{common.fmt(med['lightning']['max_rss_mib'], 0)} = "
                f"{common.fmt(row['memory_ratio_vs_lightning'])}",
                f"{max(row['loss_max_abs_diff_first_steps'].values()):.2e}",
            ]
        )
        first.append(
            [
                label,
                *(
                    f"{common.fmt(med[p]['first_epoch_speed_wall'], 2)} / "
                    f"{common.fmt(med[p]['first_epoch_speed_cpu'], 2)}"
                    for p in PROGRAMS
                ),
            ]
        )
    head_note = (
        f"torch threads per run: {doc.get('threads', '-')}; median of {doc['repeats']} interleaved runs; "
        "steps/s from the median step after the first (warm-up) epoch.\n\n"
    )
    note = (
        "\nFirst epoch's step speed relative to the later epochs' (1.00 = as fast), by wall time / by "
        "process CPU time:\n\n"
    )
    return head_note + common.md_table(head, body) + note + common.md_table(["model", *PROGRAMS], first)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="torch threads per run; 0: torch's default"
    )
    opts = parser.parse_args()
    result = run(opts.quick, opts.repeats, threads=opts.threads)
    print(markdown(result))
    print(json.dumps(result["targets"], indent=2))
