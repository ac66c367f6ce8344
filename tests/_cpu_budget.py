"""The suite's CPU-seconds budget, measured by pytest itself (issue 22).

CPU seconds (user + system of pytest and of every process it started and waited for) barely move
when other work shares the machine, unlike wall time, so the budget is checked in CPU seconds:

* every test's CPU seconds (setup + call + teardown, so a shared fixture counts where it is built)
  and wall seconds are recorded;
* the terminal summary prints the totals, the slowest tests by CPU and the total per test file;
* ``--cpu-report FILE`` (or ``VISIONKIT_CPU_REPORT``) writes it all as JSON
  (``scripts/suite_budget.py`` reads it);
* on a full run (the whole ``tests/`` folder, no ``-k``/``-m``, nothing deselected) the run fails
  when the total exceeds :data:`TOTAL_BUDGET_S` or one test exceeds :data:`TEST_BUDGET_S` by more
  than :data:`TOLERANCE` (10 %).

Processes a test starts and never waits for (daemons such as a Ray cluster) are not in
``RUSAGE_CHILDREN``; a fixture that starts one adds their CPU seconds with the ``external_cpu``
fixture before it stops them.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: CPU seconds for the README test command (``pytest``), and for any one test. The environment
#: variables exist for the check's own test (tests/core/test_cpu_budget.py), not to raise the budget.
TOTAL_BUDGET_S = float(os.environ.get("VISIONKIT_CPU_BUDGET_TOTAL_S", "1300"))
TEST_BUDGET_S = float(os.environ.get("VISIONKIT_CPU_BUDGET_TEST_S", "40"))
#: How far over a budget a run may go before it fails (CPU seconds still vary a little with load).
TOLERANCE = 0.10


def cpu_seconds() -> float:
    """User + system seconds of this process and of every child it (transitively) waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuBudget:
    """The pytest plugin: per-test CPU and wall seconds, a summary and the budget check.

    Works alone and under pytest-xdist: each worker measures its tests and ships the figures on the
    teardown report; the controller adds up the workers' own totals (``workeroutput``).
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.tests: dict[str, dict[str, float]] = {}
        self.started: dict[str, tuple[float, float]] = {}
        self.external: dict[str, float] = defaultdict(float)
        self.unwaited = 0.0  # CPU seconds of processes no process of pytest's waits for
        self.current: str | None = None
        self.workers_cpu: dict[str, float] = {}
        self.deselected = 0
        self.start_cpu = cpu_seconds()
        self.start_wall = time.perf_counter()
        self.total_cpu = 0.0
        self.total_wall = 0.0
        self.failures: list[str] = []

    # -- measuring (where tests run: the only process, or an xdist worker) -------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.current = item.nodeid
        self.started[item.nodeid] = (cpu_seconds(), time.perf_counter())
        yield
        self.current = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        outcome = yield
        if call.when != "teardown" or item.nodeid not in self.started:
            return
        cpu0, wall0 = self.started.pop(item.nodeid)
        cpu = cpu_seconds() - cpu0 + self.external.pop(item.nodeid, 0.0)
        report = outcome.get_result()
        report.user_properties.append(("cpu_s", round(cpu, 2)))
        report.user_properties.append(("wall_s", round(time.perf_counter() - wall0, 2)))

    def add_external(self, seconds: float, *, waited: bool = False) -> None:
        """Count ``seconds`` of CPU used by other processes to the running test.

        ``waited``: the operating system already counts them in pytest's own children (a process
        pytest waits for, or one such a process waits for, as the CLI server's commands): they go to
        the test only. Otherwise (daemons nobody waits for) they also go to the suite's total.
        """
        if self.current is not None:
            self.external[self.current] += seconds
        if not waited:
            self.unwaited += seconds

    # -- collecting (the only process, or the xdist controller) ------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        props = dict(report.user_properties)
        if "cpu_s" in props:
            self.tests[report.nodeid] = {"cpu_s": props["cpu_s"], "wall_s": props["wall_s"]}

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist: a worker finished; remember its whole CPU time."""
        output = getattr(node, "workeroutput", {}) or {}
        if "visionkit_cpu_s" in output:
            self.workers_cpu[output.get("workerid", str(len(self.workers_cpu)))] = output["visionkit_cpu_s"]

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    # -- judging ----------------------------------------------------------------------------
    def _is_full_run(self) -> bool:
        """The README test command: all of tests/, no selection."""
        opt = self.config.option
        if getattr(opt, "keyword", "") or getattr(opt, "markexpr", "") or self.deselected:
            return False
        tests_dir = (Path(str(self.config.rootpath)) / "tests").resolve()
        args = [Path(a.split("::")[0]).resolve() for a in self.config.args] or [tests_dir]
        return all(a == tests_dir or a == tests_dir.parent for a in args)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        external = self.unwaited
        if self.is_worker:
            # the worker process's whole life (start-up and collection included) and its children
            self.config.workeroutput["visionkit_cpu_s"] = cpu_seconds() + external  # type: ignore[attr-defined]
            return
        if self.workers_cpu:  # xdist: this controller ran no test; the workers report their totals
            own = resource.getrusage(resource.RUSAGE_SELF)
            self.total_cpu = own.ru_utime + own.ru_stime + sum(self.workers_cpu.values()) + external
        else:
            self.total_cpu = cpu_seconds() - self.start_cpu + external
        self.total_wall = time.perf_counter() - self.start_wall
        enforce = self._is_full_run() and os.environ.get("VISIONKIT_CPU_BUDGET", "1") != "0"
        if enforce and session.testscollected:
            limit = TOTAL_BUDGET_S * (1 + TOLERANCE)
            if self.total_cpu > limit:
                self.failures.append(
                    f"the suite used {self.total_cpu:.0f} CPU s, over the budget of {TOTAL_BUDGET_S:.0f} "
                    f"(+{TOLERANCE:.0%} = {limit:.0f})"
                )
            per_test = TEST_BUDGET_S * (1 + TOLERANCE)
            for nodeid, t in sorted(self.tests.items(), key=lambda kv: -kv[1]["cpu_s"]):
                if t["cpu_s"] > per_test:
                    self.failures.append(
                        f"{nodeid} used {t['cpu_s']:.0f} CPU s, over the per-test budget of "
                        f"{TEST_BUDGET_S:.0f} (+{TOLERANCE:.0%})"
                    )
            if self.failures and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        report = self.config.getoption("cpu_report") or os.environ.get("VISIONKIT_CPU_REPORT")
        if report:
            Path(report).parent.mkdir(parents=True, exist_ok=True)
            Path(report).write_text(json.dumps(self.as_dict(enforce), indent=1) + "\n")

    def per_file(self) -> dict[str, dict[str, float]]:
        files: dict[str, dict[str, float]] = defaultdict(lambda: {"cpu_s": 0.0, "wall_s": 0.0, "tests": 0})
        for nodeid, t in self.tests.items():
            f = files[nodeid.split("::")[0]]
            f["cpu_s"] += t["cpu_s"]
            f["wall_s"] += t["wall_s"]
            f["tests"] += 1
        return {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in files.items()}

    def as_dict(self, enforced: bool) -> dict[str, Any]:
        return {
            "total_cpu_s": round(self.total_cpu, 1),
            "total_wall_s": round(self.total_wall, 1),
            "tests": len(self.tests),
            "workers": len(self.workers_cpu) or 1,
            "budget": {"total_cpu_s": TOTAL_BUDGET_S, "test_cpu_s": TEST_BUDGET_S, "tolerance": TOLERANCE},
            "enforced": enforced,
            "over_budget": self.failures,
            "per_test": self.tests,
            "per_file": self.per_file(),
            "load_average": list(os.getloadavg()),
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        tr = terminalreporter
        tr.section("CPU budget (issue 22)")
        tr.write_line(
            f"total: {self.total_cpu:.0f} CPU s, {self.total_wall:.0f} s wall, {len(self.tests)} tests, "
            f"{len(self.workers_cpu) or 1} process(es) running tests "
            f"(budget {TOTAL_BUDGET_S:.0f} CPU s in all, {TEST_BUDGET_S:.0f} per test; "
            f"load average {os.getloadavg()[0]:.1f})"
        )
        slow = sorted(self.tests.items(), key=lambda kv: -kv[1]["cpu_s"])[:20]
        if slow:
            tr.write_line("slowest tests by CPU seconds (cpu / wall):")
            for nodeid, t in slow:
                tr.write_line(f"  {t['cpu_s']:7.1f} {t['wall_s']:7.1f}  {nodeid}")
        files = sorted(self.per_file().items(), key=lambda kv: -kv[1]["cpu_s"])
        if len(files) > 1:
            tr.write_line("per file (cpu / wall / tests):")
            for name, f in files:
                tr.write_line(f"  {f['cpu_s']:7.1f} {f['wall_s']:7.1f} {int(f['tests']):4d}  {name}")
        for failure in self.failures:
            tr.write_line(f"OVER BUDGET: {failure}", red=True, bold=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-report", default=None, help="write the per-test CPU seconds report (JSON) here")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(CpuBudget(config), "visionkit-cpu-budget")
    if hasattr(config, "workerinput"):  # xdist worker: its id travels with its total
        config.workeroutput = getattr(config, "workeroutput", {})  # type: ignore[attr-defined]
        config.workeroutput["workerid"] = config.workerinput["workerid"]  # type: ignore[attr-defined]


@pytest.fixture
def external_cpu(request: pytest.FixtureRequest) -> Callable[[float], None]:
    """Add CPU seconds of processes the test started but pytest never waits for (daemons)."""
    plugin = request.config.pluginmanager.get_plugin("visionkit-cpu-budget")
    assert isinstance(plugin, CpuBudget)
    return plugin.add_external
