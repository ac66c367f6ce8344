"""How much a detection run slows down when another process shares the machine (issue 18, part 3).

Trains ``visionkit train --task detection`` on the rendered shapes demo (96 px scenes, FCOS
over ``timm:test_resnet``, a few batches per epoch) as a fresh process, alone ("quiet") and
next to one competing CPU-bound process ("loaded"), for variants side by side:

- ``before``: torch's own threading, as visionkit ran before the fix: one intra-op thread
  per core (``VISIONKIT_THREADS=torch``) and libgomp's default wait policy (its threads spin
  before they sleep; ``OMP_WAIT_POLICY`` set empty so visionkit's default does not apply);
- ``after``: visionkit's defaults: a short OpenMP spin-wait (``GOMP_SPINCOUNT=10000``, set by
  the CLI before torch loads) and torch threads that fit the cores other processes leave free,
  checked every 5 s of training (``visionkit_callbacks.threads.ThreadPolicy``);
- ``threads-only``, ``spin-only``: each part alone; ``passive``: ``OMP_WAIT_POLICY=PASSIVE``
  with visionkit's threads (``--variants``).

The competitor is ``busy`` (a Python loop: one CPU-bound process, the case issue 18's
target names) or ``train`` (a second, identical visionkit detection run, each variant's
own). It starts before the measured run (``--competitor-start before``) or
``--competitor-delay-s`` after it, while it trains (``--competitor-start during``). Runs
are interleaved in a shuffled order per repeat; each figure is the median (and min) over
repeats of the child's wall time and CPU seconds (user + system, ``wait4``).
The slowdown is loaded / quiet wall of the same variant; the headline is its before/after.

``--profile`` adds one run per variant and condition under Lightning's ``SimpleProfiler``
and reports where the fit's time went (the largest actions).

    python benchmarks/shared_machine.py                      # 3 repeats, busy competitor
    python benchmarks/shared_machine.py --competitor train --repeats 2 --profile

On a machine that others share, take both CPU slots for the run (the competitor is load
this benchmark makes on purpose): ``flock /tmp/cpu-slot.1 flock /tmp/cpu-slot.2 python ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

VARIANTS: dict[str, dict[str, str]] = {
    "before": {"VISIONKIT_THREADS": "torch", "OMP_WAIT_POLICY": ""},
    "after": {},
    # the parts alone: visionkit's thread count with libgomp's default spin-wait, and the
    # short spin-wait with torch's thread count; and OpenMP's PASSIVE waiting for reference
    "threads-only": {"OMP_WAIT_POLICY": ""},
    "spin-only": {"VISIONKIT_THREADS": "torch"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
#: Variables that would fix the thread count for both variants alike: removed from the children.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VISIONKIT_THREADS", "OMP_WAIT_POLICY")


def variant_env(name: str, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in common.clean_env().items() if k not in _THREAD_VARS}
    env["VISIONKIT_CACHE_DIR"] = str(cache)
    env.update(VARIANTS[name])
    return env


def train_command(args: argparse.Namespace, run_dir: Path, *, epochs: int | None = None,
                  profile: bool = False) -> list[str]:  # fmt: skip
    cmd = [
        *common.visionkit_command(), "train", "--task", "detection", "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size), "--epochs", str(epochs or args.epochs),
        "--set", f"trainer.limit_train_batches={args.limit_train}",
        "--set", f"trainer.limit_val_batches={args.limit_val}", "--run-dir", str(run_dir),
    ]  # fmt: skip
    if profile:
        cmd += ["--set", "trainer.profiler=simple"]
    return cmd


def run_timed(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, CPU seconds (user + system, its waited-for children included), output."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.05)
        wall = time.perf_counter() - started
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(output.strip().splitlines()[-20:])
        raise RuntimeError(f"command failed ({code}): {' '.join(cmd)}\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "output": output}


class Competitor:
    """One competing process for the length of a ``with`` block."""

    def __init__(self, kind: str, args: argparse.Namespace, env: dict[str, str], work: Path) -> None:
        self.kind, self.args, self.env, self.work = kind, args, env, work
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.__enter__()

    def __enter__(self) -> Competitor:
        if self.kind == "busy":
            cmd = [sys.executable, "-c", "while True: pass"]
        else:  # a second training run, long enough to outlast the measured one
            run_dir = self.work / f"competitor-{time.monotonic_ns()}"
            cmd = train_command(self.args, run_dir, epochs=1000)
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(self.args.competitor_lead_s)  # let it get going (a training run imports torch first)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the run and any loader workers
        self.proc.wait()


def profile_summary(output: str, top: int) -> list[tuple[str, float, float]]:
    """The ``top`` largest actions of a SimpleProfiler report: (action, total s, share %)."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("Action", "Total") and re.match(r"^[\d.e+-]+$", cells[3]):
            try:
                rows.append((cells[0], float(cells[3]), float(cells[4])))
            except ValueError:
                continue
    rows.sort(key=lambda r: -r[1])
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-train", type=int, default=8, help="training batches per epoch")
    parser.add_argument("--limit-val", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--competitor", choices=("busy", "train"), default="busy")
    parser.add_argument("--competitor-lead-s", type=float, default=3.0)
    parser.add_argument("--competitor-start", choices=("before", "during"), default="before")
    parser.add_argument(
        "--competitor-delay-s", type=float, default=9.0, help="with --competitor-start during"
    )
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--profile", action="store_true", help="one profiled run per variant and condition")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    work = Path(tempfile.mkdtemp(prefix="vk-shared-"))
    cache = work / "cache"
    info = common.machine()
    # warm-up: materialise the demo tree, fill the file cache and .pyc files (not counted)
    run_timed(train_command(args, work / "warmup", epochs=1), variant_env("after", cache), args.timeout)

    rng = random.Random(0)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    jobs = [(v, c) for v in variants for c in ("quiet", "loaded")]
    for rep in range(args.repeats):
        rng.shuffle(jobs)
        for variant, condition in jobs:
            env = variant_env(variant, cache)
            run_dir = work / f"{variant}-{condition}-{rep}"
            load = os.getloadavg()[0]
            if condition == "loaded" and args.competitor_start == "during":
                competitor = Competitor(args.competitor, args, env, work)
                timer = threading.Timer(args.competitor_delay_s, competitor.start)
                timer.start()
                try:
                    result = run_timed(train_command(args, run_dir), env, args.timeout)
                finally:
                    timer.cancel()
                    timer.join()
                    if competitor.proc is not None:
                        competitor.__exit__()
            elif condition == "loaded":
                with Competitor(args.competitor, args, env, work):
                    result = run_timed(train_command(args, run_dir), env, args.timeout)
            else:
                result = run_timed(train_command(args, run_dir), env, args.timeout)
            entry = {"wall_s": result["wall_s"], "cpu_s": result["cpu_s"], "load1_start": load}
            samples.setdefault((variant, condition), []).append(entry)
            print(f"{variant:6s} {condition:6s} rep {rep}: wall {entry['wall_s']:.1f} s, "
                  f"cpu {entry['cpu_s']:.1f} s (load {load:.2f})", flush=True)  # fmt: skip

    profiles: dict[str, list[tuple[str, float, float]]] = {}
    if args.profile:
        for variant in variants:
            for condition in ("quiet", "loaded"):
                env = variant_env(variant, cache)
                cmd = train_command(args, work / f"profile-{variant}-{condition}", profile=True)
                if condition == "loaded":
                    with Competitor(args.competitor, args, env, work):
                        result = run_timed(cmd, env, args.timeout)
                else:
                    result = run_timed(cmd, env, args.timeout)
                profiles[f"{variant} {condition}"] = profile_summary(result["output"], 10)

    stats: dict[str, dict[str, float]] = {}
    for (variant, condition), entries in samples.items():
        walls, cpus = [e["wall_s"] for e in entries], [e["cpu_s"] for e in entries]
        stats[f"{variant} {condition}"] = {
            "wall_median": common.median(walls), "wall_min": min(walls),
            "cpu_median": common.median(cpus), "cpu_min": min(cpus),
        }  # fmt: skip
    rows = []
    slowdown: dict[str, float] = {}
    for variant in variants:
        quiet, loaded = stats[f"{variant} quiet"], stats[f"{variant} loaded"]
        slowdown[variant] = common.ratio(loaded["wall_median"], quiet["wall_median"])
        rows.append([
            variant, quiet["wall_median"], quiet["wall_min"], loaded["wall_median"], loaded["wall_min"],
            slowdown[variant], common.ratio(loaded["wall_min"], quiet["wall_min"]),
            quiet["cpu_median"], loaded["cpu_median"],
        ])  # fmt: skip
    headers = ["variant", "quiet wall (median)", "quiet wall (min)", "loaded wall (median)",
               "loaded wall (min)", "slowdown loaded/quiet (medians)", "slowdown (mins)", "quiet CPU s",
               "loaded CPU s"]  # fmt: skip
    report = [
        f"# Shared machine: detection slowdown under a competing process ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"machine: {info}",
        f"run: detection on shapes, {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs x "
        f"{args.limit_train} batches (+{args.limit_val} val batches); competitor: {args.competitor}, "
        f"started {args.competitor_start} the run; "
        f"{args.repeats} repeats, interleaved",
        "",
        common.md_table(headers, rows),
    ]
    if "before" in slowdown and "after" in slowdown:
        b_loaded, a_loaded = stats["before loaded"]["wall_median"], stats["after loaded"]["wall_median"]
        b_quiet, a_quiet = stats["before quiet"]["wall_median"], stats["after quiet"]["wall_median"]
        report.append(
            f"slowdown before / after: {common.ratio(slowdown['before'], slowdown['after']):.2f}x; "
            f"loaded wall before / after: "
            f"{common.ratio(b_loaded, a_loaded):.2f}x; "
            f"quiet wall after / before: "
            f"{common.ratio(a_quiet, b_quiet):.2f}x\n"
        )
    for name, top in profiles.items():
        report.append(f"\n## SimpleProfiler, {name}\n")
        report.append(common.md_table(["action", "total s", "share %"], top))
    text = "\n".join(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"shared-machine-{time.strftime('%Y-%m-%d')}"
    stem.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    data = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "stats": stats,
            "samples": {f"{v} {c}": e for (v, c), e in samples.items()}, "slowdown": slowdown,
            "profiles": profiles}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
