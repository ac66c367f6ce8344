"""Benchmark: does plugin discovery keep ``visionkit --help`` fast with many plugins installed?

Writes N trivial third-party plugins as real installed distributions (``<dir>/<name>-1.0.dist-info``
with ``METADATA`` and an ``entry_points.txt`` in the ``visionkit`` group, plus the plugin
module, which registers one backbone) into a folder that is put on ``PYTHONPATH``, then times
``visionkit --help`` in fresh processes. Runs are interleaved (every repeat runs every count,
in a shuffled order) so that load from other processes on the machine hits all counts alike;
each count's time is the median over the repeats. The baseline gets an empty folder on
``PYTHONPATH`` so that only the plugins differ.

    python benchmarks/discovery.py                     # counts 0,10,50; 15 repeats
    python benchmarks/discovery.py --counts 0,50 --repeats 31

Results: ``benchmarks/results/discovery.json`` and ``discovery.md`` (a markdown table);
the target is ``ratio(50) <= 1.1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.1
RESULTS = Path(__file__).resolve().parent / "results"

_PLUGIN_MODULE = '''"""Trivial benchmark plugin {name}."""

from visionkit_core import hookimpl


@hookimpl
def visionkit_register_backbones(registry):
    registry.add("net", "{name}.models:net", description="benchmark plugin backbone")
'''


def write_plugins(root: Path, count: int) -> list[str]:
    """Write ``count`` installed trivial plugin distributions under ``root``; return their names."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"vkbench_plugin_{i:03d}"
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(_PLUGIN_MODULE.format(name=name), encoding="utf-8")
        info = root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(f"[visionkit]\n{name} = {name}\n", encoding="utf-8")
        (info / "top_level.txt").write_text(name + "\n", encoding="utf-8")
        names.append(name)
    return names


def _env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONKIT_")}
    env["PYTHONPATH"] = str(path)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # plugin modules get .pyc files, as installed ones do
    return env


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "visionkit_core", *args]


def time_once(path: Path, args: list[str]) -> float:
    """Seconds for one ``visionkit ARGS`` process, start to exit."""
    started = time.perf_counter()
    subprocess.run(
        _command(args), env=_env(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - started


def loaded_third_party(path: Path) -> int:
    """How many third-party plugins visionkit loaded with ``path`` on PYTHONPATH (sanity check)."""
    out = subprocess.run(
        _command(["plugins", "list", "--json"]), env=_env(path), capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout)
    return sum(1 for p in doc["plugins"] if not p["builtin"] and p["status"] == "loaded")


def run(counts: list[int], repeats: int, warmup: int, args: list[str], seed: int) -> dict[str, object]:
    """Time ``visionkit ARGS`` for every plugin count; return the results document."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="vk-discovery-") as tmp:
        dirs = {n: Path(tmp) / f"plugins-{n}" for n in counts}
        for n, d in dirs.items():
            write_plugins(d, n)
            found = loaded_third_party(d)
            if found != n:
                raise SystemExit(f"expected {n} plugins to load from {d}, visionkit loaded {found}")
        for _ in range(warmup):  # fills the OS file cache and writes .pyc files for every count
            for n in counts:
                time_once(dirs[n], args)
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(repeats):
            order = list(counts)
            rng.shuffle(order)
            for n in order:
                times[n].append(time_once(dirs[n], args))
    base = statistics.median(times[counts[0]])
    rows = [
        {
            "plugins": n,
            "median_s": round(statistics.median(ts), 4),
            "min_s": round(min(ts), 4),
            "max_s": round(max(ts), 4),
            "ratio": round(statistics.median(ts) / base, 3),
            "times_s": [round(t, 4) for t in ts],
        }
        for n, ts in times.items()
    ]
    return {
        "benchmark": "discovery",
        "command": "visionkit " + " ".join(args),
        "repeats": repeats,
        "warmup": warmup,
        "target_ratio": TARGET_RATIO,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows,
    }


def markdown(doc: dict[str, object]) -> str:
    """The results as a markdown table."""
    lines = [
        f"`{doc['command']}` with N trivial plugins installed: median of {doc['repeats']} interleaved "
        f"runs ({doc['machine']}, Python {doc['python']}). Target: ratio <= {doc['target_ratio']} at 50.",
        "",
        "| plugins | median (s) | min (s) | max (s) | ratio |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in doc["rows"]:  # type: ignore[attr-defined]
        cells = [str(row["plugins"]), *(f"{row[k]:.3f}" for k in ("median_s", "min_s", "max_s", "ratio"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def benchmark(quick: bool = False, repeats: int | None = None, seed: int = 0) -> dict[str, object]:
    """The runner's entry point: counts 0/10/50 (quick: 0/2, 2 repeats) and the target row."""
    counts = [0, 2] if quick else [0, 10, 50]
    doc = run(counts, repeats or (2 if quick else 15), 0 if quick else 2, ["--help"], seed)
    last = doc["rows"][-1]  # type: ignore[index]
    doc["quick"] = quick
    doc["targets"] = [
        {
            "name": f"discovery: --help with {last['plugins']} plugins / with 0",
            "value": last["ratio"],
            "target": f"<= {TARGET_RATIO:g}",
            "met": bool(last["ratio"] <= TARGET_RATIO),
            "note": "",
        }
    ]
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--counts", default="0,10,50", help="comma-separated plugin counts; the first is the baseline"
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per count (median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per count first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order shuffle")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where discovery.json/.md are written")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "args", nargs="*", default=["--help"], help="visionkit arguments to time (default --help)"
    )
    opts = parser.parse_args()
    counts = [int(c) for c in opts.counts.split(",")]
    doc = run(counts, opts.repeats, opts.warmup, opts.args, opts.seed)
    table = markdown(doc)
    print(table, end="")
    if not opts.no_write:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        (opts.out_dir / "discovery.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (opts.out_dir / "discovery.md").write_text(table, encoding="utf-8")
    worst = max(row["ratio"] for row in doc["rows"])  # type: ignore[attr-defined]
    sys.exit(0 if worst <= TARGET_RATIO else 1)


if __name__ == "__main__":
    main()
