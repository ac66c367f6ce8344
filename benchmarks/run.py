"""Run the visionkit benchmarks; write ``benchmarks/results/<date>.json`` and ``<date>.md``.

    python benchmarks/run.py                       # everything (~10 minutes on 2 CPU cores)
    python benchmarks/run.py --only loader,startup
    python benchmarks/run.py --quick --no-write    # a fast smoke run (tiny sizes, 1 repeat)
    nox -s bench                                   # the same, in a fresh virtualenv

Every target is a ratio of two things measured side by side in one run (interleaved, median
of repeats), except the demo's wall time, which the issue states in seconds. Targets that
are missed are marked in the table; ``--strict`` makes them fail the command.

| benchmark | measures | target |
| --- | --- | --- |
| startup | `visionkit --help` etc. vs `python -c "import torch"` | <= 0.15, no heavy import |
| discovery | `visionkit --help` with 50 vs 0 installed plugins | <= 1.1 |
| loader | ImageFolder images/s, visionkit vs torchvision + PIL | >= 1.5 |
| overhead | training steps/s, `visionkit train` vs hand-written Lightning | >= 0.97 |
| memory | peak RSS of those runs, visionkit vs hand-written Lightning | <= 1.10 |
| demo | `visionkit train` with no arguments | val/acc >= 0.97 in <= 60 s |
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/run.py: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, demo, discovery, loader, overhead, startup

Runner = Callable[..., dict[str, Any]]
#: name -> (run(quick, repeats, seed), markdown(doc)); memory comes with overhead's runs
BENCHMARKS: dict[str, tuple[Runner, Callable[[dict[str, Any]], str]]] = {
    "startup": (startup.run, startup.markdown),
    "discovery": (discovery.benchmark, discovery.markdown),  # type: ignore[dict-item]
    "loader": (loader.run, loader.markdown),
    "overhead": (overhead.run, overhead.markdown),
    "demo": (demo.run, demo.markdown),
}
TITLES = {
    "startup": "Start-up",
    "discovery": "Plugin discovery",
    "loader": "ImageFolder loader",
    "overhead": "Training overhead and memory",
    "demo": "The demo: `visionkit train`",
}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("visionkit", "torch", "torchvision", "lightning", "timm", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=common.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=common.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "-"
    return rev + ("+dirty" if dirty else "")


def run_all(names: list[str], *, quick: bool, repeats: int | None, seed: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": commit(),
        "versions": versions(),
        "machine": common.machine(),
        "quick": quick,
        "benchmarks": {},
        "duration_s": {},
        "targets": [],
    }
    for name in names:
        fn, _ = BENCHMARKS[name]
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = fn(quick=quick, repeats=repeats, seed=seed)
        doc["duration_s"][name] = round(time.perf_counter() - started, 1)
        doc["benchmarks"][name] = result
        for row in result.get("targets", []):
            doc["targets"].append({"benchmark": name, **row})  # a row may name its own (memory)
        print(f"[bench] {name} done in {doc['duration_s'][name]} s", file=sys.stderr, flush=True)
    return doc


def _short(target: dict[str, Any]) -> str:
    """A target's name without its benchmark's name in front (the table has a column for that)."""
    name, bench = target["name"], target["benchmark"]
    for prefix in (f"{bench}: ", f"{bench} "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    v = doc["versions"]
    lines = [
        f"# Benchmarks {doc['date']}" + (" (quick mode: smoke sizes, not figures)" if doc["quick"] else ""),
        "",
        f"Commit {doc['commit']}; {m.get('cpus')} CPUs ({m.get('cpu', m.get('machine'))}), "
        f"load average at start {m.get('loadavg_start')}; Python {m['python']}, torch {v['torch']}, "
        f"torchvision {v['torchvision']}, Lightning {v['lightning']}, timm {v['timm']}.",
        "",
        "## Targets",
        "",
    ]
    rows = [
        [t["benchmark"], _short(t), t["value"], t["target"], "met" if t["met"] else "**missed**"]
        for t in doc["targets"]
    ]
    lines.append(common.md_table(["benchmark", "figure", "value", "target", ""], rows))
    for name, result in doc["benchmarks"].items():
        _, to_md = BENCHMARKS[name]
        lines += [f"## {TITLES[name]} ({doc['duration_s'][name]} s)", "", to_md(result)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat: checks that it runs")
    parser.add_argument("--repeats", type=int, help="override every benchmark's repeat count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS)
    parser.add_argument(
        "--tag", help="append to the file names: <date>-<tag>.json (keeps the day's full run)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    opts = parser.parse_args(argv)
    names = [n.strip() for n in opts.only.split(",")] if opts.only else list(BENCHMARKS)
    names = [n for n in names if n not in {s.strip() for s in opts.skip.split(",") if s.strip()}]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    doc = run_all(names, quick=opts.quick, repeats=opts.repeats, seed=opts.seed)
    table = markdown(doc)
    print(table)
    if not opts.no_write:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        stem = doc["date"] + ("-quick" if opts.quick else "") + (f"-{opts.tag}" if opts.tag else "")
        (opts.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (opts.out_dir / f"{stem}.md").write_text(table, encoding="utf-8")
        print(f"wrote {opts.out_dir / stem}.json and .md", file=sys.stderr)
    missed = [t for t in doc["targets"] if not t["met"]]
    return 1 if missed and opts.strict else 0


if __name__ == "__main__":
    sys.exit(main())
