"""The suite's CPU budget check (tests/_cpu_budget.py) on a throwaway suite of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]  # tests/

BURN = """
import time


def _burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_light():
    assert True


def test_heavy():
    _burn(0.6)


def test_child_process():
    import subprocess, sys
    subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.5\\n"
                    "while time.process_time() < end: pass"], check=True)
"""


def _suite(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_burn.py").write_text(BURN)
    (tmp_path / "tests" / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(HERE)!r})\npytest_plugins = ['_cpu_budget']\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -p no:cacheprovider\n")
    return tmp_path


def _pytest(root: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    report = root / "report.json"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONKIT_CPU")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--cpu-report", str(report), *args],
        cwd=root,
        env={**full_env, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, json.loads(report.read_text())


def test_per_test_cpu_counts_the_test_and_the_processes_it_waited_for(tmp_path: Path) -> None:
    out, report = _pytest(_suite(tmp_path))
    assert out.returncode == 0, out.stdout[-2000:]
    per = {k.split("::")[1]: v["cpu_s"] for k, v in report["per_test"].items()}
    assert per["test_light"] < 0.2
    assert 0.55 <= per["test_heavy"] < 1.5
    assert per["test_child_process"] >= 0.5  # the child's CPU, read from RUSAGE_CHILDREN
    assert report["total_cpu_s"] >= per["test_heavy"] + per["test_child_process"] - 0.1  # rounded
    assert report["enforced"] and report["over_budget"] == []
    assert report["per_file"]["tests/test_burn.py"]["tests"] == 3
    assert "CPU budget (issue 22)" in out.stdout and "slowest tests by CPU seconds" in out.stdout


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_full_run_over_the_budget_fails_and_names_the_test(tmp_path: Path, workers: list[str]) -> None:
    out, report = _pytest(
        _suite(tmp_path), *workers, VISIONKIT_CPU_BUDGET_TEST_S="0.3", VISIONKIT_CPU_BUDGET_TOTAL_S="0.5"
    )
    assert out.returncode == 1, out.stdout[-2000:]
    assert any("the suite used" in f for f in report["over_budget"])
    assert any(f.startswith("tests/test_burn.py::test_heavy used") for f in report["over_budget"])
    assert not any("test_light" in f for f in report["over_budget"])
    assert "OVER BUDGET" in out.stdout
    if workers:  # every worker's whole CPU time is in the total
        assert report["workers"] == 2 and report["total_cpu_s"] > sum(
            t["cpu_s"] for t in report["per_test"].values()
        )


def test_a_selection_is_reported_but_not_judged(tmp_path: Path) -> None:
    out, report = _pytest(_suite(tmp_path), "-k", "heavy", VISIONKIT_CPU_BUDGET_TEST_S="0.3")
    assert out.returncode == 0, out.stdout[-2000:]
    assert not report["enforced"] and report["over_budget"] == []
    assert list(report["per_test"]) == ["tests/test_burn.py::test_heavy"]


def test_the_script_formats_a_report(tmp_path: Path) -> None:
    _, _report = _pytest(_suite(tmp_path))
    out = subprocess.run(
        [
            sys.executable,
            str(HERE.parent / "scripts" / "suite_budget.py"),
            "--report",
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "README test command:" in out.stdout and "20 slowest tests" in out.stdout
    assert "tests/test_burn.py" in out.stdout


EXTERNAL = """
def test_daemon(external_cpu):
    external_cpu(50.0)  # a daemon's CPU seconds: no process of pytest's waits for it


def test_waited(request):
    # a command the CLI server waited for: the OS counts it in pytest's children already
    request.config.pluginmanager.get_plugin("visionkit-cpu-budget").add_external(20.0, waited=True)
"""


def test_a_daemons_cpu_counts_in_the_total_a_waited_processes_only_in_its_test(
    tmp_path: Path,
) -> None:
    root = _suite(tmp_path)
    (root / "tests" / "test_burn.py").write_text(EXTERNAL)
    out, report = _pytest(root, VISIONKIT_CPU_BUDGET="0")
    assert out.returncode == 0, out.stdout[-2000:]
    per = {k.split("::")[1]: v["cpu_s"] for k, v in report["per_test"].items()}
    assert per["test_daemon"] >= 50 and per["test_waited"] >= 20
    assert 50 <= report["total_cpu_s"] < 65  # the daemon's 50 once, the waited 20 not again
