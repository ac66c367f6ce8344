"""Run the README test command and report its CPU seconds against the suite budget (issue 22).

    python scripts/suite_budget.py                 # runs `pytest`, prints the report
    python scripts/suite_budget.py --report FILE   # only formats a report pytest already wrote
    python scripts/suite_budget.py -- -x tests/core/test_cli.py   # extra pytest arguments (no budget check)

CPU seconds are user + system time of pytest and of every process it started (read with
``resource.getrusage(RUSAGE_CHILDREN)`` after pytest exits, and per test by the plugin in
tests/_cpu_budget.py). They barely change when other work shares the machine, so the budget can be
checked on a busy machine; wall time is printed too, but is a measurement only on a quiet one
(the load average is printed beside it). Exit status: pytest's, or 1 when the budget is exceeded by
more than 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _cpu_budget import TEST_BUDGET_S, TOLERANCE, TOTAL_BUDGET_S  # noqa: E402


def _format(report: dict, wall: float | None = None, cpu: float | None = None) -> str:  # type: ignore[type-arg]
    lines = []
    total_cpu = cpu if cpu is not None else report["total_cpu_s"]
    total_wall = wall if wall is not None else report["total_wall_s"]
    lines.append(
        f"README test command: {total_cpu:.0f} CPU s (budget {TOTAL_BUDGET_S:.0f}), {total_wall:.0f} s wall "
        f"({total_wall / 60:.1f} min; budget 12 min on 2 quiet cores), {report['tests']} tests, "
        f"load average at the end {report['load_average'][0]:.1f}"
    )
    tests = sorted(report["per_test"].items(), key=lambda kv: -kv[1]["cpu_s"])
    over = [n for n, t in tests if t["cpu_s"] > TEST_BUDGET_S]
    lines.append(f"tests over {TEST_BUDGET_S:.0f} CPU s: {len(over)}")
    lines.append("\n20 slowest tests (CPU s, wall s):")
    lines += [f"  {t['cpu_s']:7.1f} {t['wall_s']:7.1f}  {n}" for n, t in tests[:20]]
    lines.append("\nper test file (CPU s, wall s, tests):")
    files = sorted(report["per_file"].items(), key=lambda kv: -kv[1]["cpu_s"])
    lines += [f"  {f['cpu_s']:7.1f} {f['wall_s']:7.1f} {int(f['tests']):4d}  {n}" for n, f in files]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", type=Path, help="format this JSON report instead of running pytest")
    parser.add_argument("--json", type=Path, help="also keep the JSON report here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.report:
        report = json.loads(args.report.read_text())
        print(_format(report))
        return 1 if report.get("over_budget") else 0
    out = args.json or Path(tempfile.mkdtemp()) / "cpu-report.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "--cpu-report", str(out), *args.pytest_args]
    rc = subprocess.call(command, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not out.exists():
        print(f"pytest wrote no report (exit {rc})", file=sys.stderr)
        return rc or 1
    report = json.loads(out.read_text())
    # pytest's own figure misses its start-up but adds daemons' CPU (external_cpu): take the larger
    print("\n" + _format(report, wall=wall, cpu=max(cpu, report["total_cpu_s"])))
    over_total = not args.pytest_args and max(cpu, report["total_cpu_s"]) > TOTAL_BUDGET_S * (1 + TOLERANCE)
    if over_total and not report.get("over_budget"):
        print(f"OVER BUDGET: {cpu:.0f} CPU s > {TOTAL_BUDGET_S * (1 + TOLERANCE):.0f}")
    return rc or (1 if over_total else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
