"""``visionkit sweep``: Optuna over real ``train`` runs on a tiny 16 px tree (1-3 epochs each).

Every command runs in a process of its own, forked from the pre-imported CLI server of
tests/cli_server.py (one import of torch for all of them, none in pytest's own process), so
the sweep that is killed gets a real SIGKILL. Each sweep has as few trials as its assertions
need: a trial costs ~3 CPU s, most of it the run's plots, whatever its epochs and pixels.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_server import Cli
from conftest import make_image_tree

optuna = pytest.importorskip("optuna", reason="the sweep extra: pip install 'visionkit[sweep]'")

SMALL = ["--backbone", "timm:test_resnet", "--image-size", "16", "--batch-size", "4", "--num-workers", "0"]
SPACE = {
    "lr": {"type": "float", "low": 0.0005, "high": 0.05, "log": True},
    "augment": {"type": "choice", "values": ["none", "basic"]},
}


def study_of(sweep_dir: Path) -> Any:
    state = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    return optuna.load_study(study_name=state["study_name"], storage=f"sqlite:///{sweep_dir / 'study.db'}")


def write_space(path: Path, space: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def vk(request: pytest.FixtureRequest) -> Cli:
    """``vk("sweep", ..., cwd=...)``: a visionkit command in a process forked from the CLI server."""
    return Cli(request.config)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("sweep") / "data", ["a", "b"], per_class=8, size=16)


# -- a 3-trial sweep, killed during trial 1 and resumed -------------------------------------


@pytest.fixture(scope="module")
def resumed(tree: Path, tmp_path_factory: pytest.TempPathFactory, vk: Cli) -> dict[str, Any]:
    """Start a 3-trial sweep, SIGKILL its process while trial 1 runs, then --resume it."""
    work = tmp_path_factory.mktemp("resumed")
    space = write_space(work / "space.yaml", SPACE)
    sweep_dir = work / "sweep"
    args = ["--space", space, "--trials", "3", "--sweep-dir", sweep_dir, "--data", tree, "--epochs", "1"]
    proc = vk.start("sweep", *args, *SMALL, cwd=work)
    started = sweep_dir / "trials" / "1" / "config.yaml"  # written when trial 1's Trainer starts
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), f"trial 1 never started (exit code {proc.poll()})"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait().returncode == -signal.SIGKILL
    before = study_of(sweep_dir).trials
    stamps = {0: (sweep_dir / "trials" / "0" / "summary.json").stat().st_mtime_ns}
    again = vk("sweep", "--resume", sweep_dir, cwd=work)
    assert again.returncode == 0, again.stdout + again.stderr
    output = again.stdout + again.stderr
    return {"dir": sweep_dir, "before": before, "stamps": stamps, "work": work, "output": output}


def test_killed_sweep_resumes_with_exactly_the_remaining_trials(resumed: dict[str, Any]) -> None:
    states = [t.state.name for t in resumed["before"]]
    assert states == ["COMPLETE", "RUNNING"]
    trials = study_of(resumed["dir"]).trials
    # 0 finished before the kill and was not run again; 1 was cut off, its values ran again as 2,
    # and 3 is the one trial the sweep still owed
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert "retry_of" not in trials[3].user_attrs
    for n, stamp in resumed["stamps"].items():
        assert (resumed["dir"] / "trials" / str(n) / "summary.json").stat().st_mtime_ns == stamp
    assert "trial 1 was running when its sweep stopped" in resumed["output"]
    assert "This run:    2 trial(s)" in resumed["output"]


def test_sweep_writes_the_table_best_yaml_and_plots(resumed: dict[str, Any]) -> None:
    sweep_dir = resumed["dir"]
    with (sweep_dir / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == [str(n) for n in range(4)]
    assert list(table[0])[:6] == ["trial", "lr", "augment", "val/acc", "state", "wall_s"]
    assert [r["state"] for r in table].count("complete") == 3
    assert table[1]["state"] == "interrupted" and "re-run as trial 2" in table[1]["note"]
    assert all(
        0.0 <= float(r["val/acc"]) <= 1.0 and float(r["wall_s"]) > 0
        for r in table
        if r["state"] == "complete"
    )
    md = (sweep_dir / "summary.md").read_text()
    assert md.startswith("| trial | lr | augment | val/acc | state |") and md.count("\n") == 6
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    study = study_of(sweep_dir)
    assert best["lr"] == pytest.approx(study.best_trial.params["lr"])
    assert best["augment"] == study.best_trial.params["augment"] and best["run_dir"] is None
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        png = sweep_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert f"Best config: {sweep_dir / 'best.yaml'}" in resumed["output"]


def test_each_trial_config_holds_its_values_as_set_would(resumed: dict[str, Any]) -> None:
    for trial in study_of(resumed["dir"]).trials:
        config = yaml.safe_load((resumed["dir"] / "trials" / str(trial.number) / "config.yaml").read_text())
        assert config["lr"] == pytest.approx(trial.params["lr"])
        assert config["augment"] == trial.params["augment"]  # 'none' stays 'none' (no augmentation)
        assert config["run_dir"] == str(resumed["dir"] / "trials" / str(trial.number))


def test_best_yaml_trains_the_best_trial_again(resumed: dict[str, Any], vk: Cli) -> None:
    sweep_dir = resumed["dir"]
    best = study_of(sweep_dir).best_trial
    run_dir = resumed["work"] / "again"
    done = vk("train", "--config", sweep_dir / "best.yaml", "--run-dir", run_dir, cwd=resumed["work"])
    assert done.returncode == 0, done.stderr
    again = yaml.safe_load((run_dir / "summary.json").read_text())
    trial = yaml.safe_load((sweep_dir / "trials" / str(best.number) / "summary.json").read_text())
    assert again["monitor"]["best"] == pytest.approx(best.value, abs=1e-6)
    assert again["metrics"]["val/loss"] == pytest.approx(trial["metrics"]["val/loss"], abs=1e-5)


def test_a_trial_is_a_run_directory_predict_takes(resumed: dict[str, Any], tree: Path, vk: Cli) -> None:
    trial = yaml.safe_load((resumed["dir"] / "trials" / "0" / "summary.json").read_text())
    image = next((tree / "val" / "a").iterdir())
    out = resumed["work"] / "pred.csv"
    done = vk("predict", "--ckpt", trial["best_checkpoint"], image, "--output", out, cwd=resumed["work"])
    assert done.returncode == 0, done.stderr
    assert out.read_text().count("\n") == 2


# -- pruning and a failing trial -------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned(tree: Path, tmp_path_factory: pytest.TempPathFactory, vk: Cli) -> tuple[Path, str]:
    """Three enqueued trials: a diverging lr (fails), a good one, then a useless one (pruned)."""
    work = tmp_path_factory.mktemp("pruned")
    space = write_space(work / "space.yaml", {"lr": {"type": "float", "low": 1e-9, "high": 1e6, "log": True}})
    sweep_dir = work / "sweep"
    points = ["{lr: 1000000.0}", "{lr: 0.01}", "{lr: 1.0e-9}"]
    args = ["sweep", "--space", space, "--trials", "3", "--sweep-dir", sweep_dir, "--data", tree]
    # the median of one complete trial is its value: pruning starts after the good trial
    args += ["--epochs", "3", "--pruner", "median", "--pruner-startup-trials", "1", *SMALL]
    for point in points:
        args += ["--enqueue", point]
    done = vk(*args, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    return sweep_dir, done.stdout + done.stderr


def test_median_pruner_stops_a_bad_trial_before_its_last_epoch(pruned: tuple[Path, str]) -> None:
    sweep_dir, output = pruned
    trials = study_of(sweep_dir).trials
    bad, good = trials[2], trials[1]
    assert bad.params["lr"] == pytest.approx(1e-9)
    assert bad.state.name == "PRUNED", (bad.intermediate_values, good.intermediate_values)
    # pruned after the first epoch where it falls below the good trial (of 3 epochs: a good
    # trial's first epoch on 16 images can itself be at chance, so it may take a second)
    epochs = len(bad.intermediate_values)
    assert 1 <= epochs < 3 and list(bad.intermediate_values) == list(range(epochs))
    assert bad.user_attrs["epochs"] == epochs
    summary = yaml.safe_load((sweep_dir / "trials" / "2" / "summary.json").read_text())
    assert summary["epochs"] == epochs and summary["last_checkpoint"]  # a normal run that stopped early
    assert good.state.name == "COMPLETE" and len(good.intermediate_values) == 3
    assert "trial 2 pruned" in output


def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(pruned: tuple[Path, str]) -> None:
    sweep_dir, output = pruned
    trials = study_of(sweep_dir).trials
    assert trials[0].state.name == "FAIL" and "nan" in trials[0].user_attrs["reason"]
    assert len(trials) == 3 and trials[1].state.name == "COMPLETE"
    with (sweep_dir / "summary.csv").open() as f:
        first = next(csv.DictReader(f))
    assert first["state"] == "failed" and "training loss became nan" in first["note"]
    assert "Traceback" not in output


# -- a grid sweep, logged to wandb: one group per sweep ---------------------------------------


@pytest.fixture(scope="module")
def grouped(tree: Path, tmp_path_factory: pytest.TempPathFactory, vk: Cli) -> Path:
    """A grid over two values with --trials 5 and the wandb logger (offline)."""
    work = tmp_path_factory.mktemp("grid")
    space = write_space(work / "space.yaml", {"augment": {"type": "choice", "values": ["none", "basic"]}})
    sweep_dir = work / "grouped"
    args = ["sweep", "--space", space, "--trials", "5", "--sweep-dir", sweep_dir, "--data", tree]
    args += ["--sampler", "grid", "--pruner", "none", "--epochs", "1", "--logger", "wandb", *SMALL]
    done = vk(*args, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    return sweep_dir


def test_grid_sampler_tries_each_combination_once_and_stops_at_the_grid_size(grouped: Path) -> None:
    trials = study_of(grouped).trials
    assert sorted(t.params["augment"] for t in trials) == ["basic", "none"]
    assert {t.state.name for t in trials} == {"COMPLETE"}


def _wandb_records(path: Path) -> Any:
    """The records of a ``.wandb`` file (LevelDB log format: 7-byte header, 32 KiB blocks of chunks)."""
    import struct

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            yield buf
            buf = b""


def test_with_the_wandb_logger_every_trial_is_a_run_in_the_sweeps_group(grouped: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    groups = {}
    for n in (0, 1):
        (run_file,) = (grouped / "trials" / str(n) / "wandb").glob("offline-run-*/run-*.wandb")
        for raw in _wandb_records(run_file):
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "run":
                groups[record.run.display_name] = record.run.run_group
                break
    assert groups == {"0": "grouped", "1": "grouped"}


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"lrr": {"type": "float", "low": 0.001, "high": 0.1}}, r"key 'lrr'.*did you mean 'lr'"),
        ({"batch_size": {"type": "float", "low": 4, "high": 8}}, r"key 'batch_size'.*float range"),
        ({"lr": {"type": "float", "low": "small", "high": 0.1}}, r"key 'lr'.*low must be a number"),
        ({"augment": {"type": "choice", "values": ["none", "sideways"]}}, r"key 'augment'.*sideways"),
        ({"backbone.drop_pth_rate": {"type": "float", "low": 0, "high": 0.1}}, r"backbone.drop_pth_rate"),
        (
            {"lr": {"type": "float", "low": 0.001, "high": 0.1, "scale": "log"}},
            r"key 'lr'.*unknown field 'scale'",
        ),
    ],
)
def test_a_bad_space_is_a_usage_error_naming_the_key_before_any_trial(
    entry: dict[str, Any], message: str, tree: Path, tmp_path: Path, vk: Cli
) -> None:
    space = write_space(tmp_path / "space.yaml", entry)
    sweep_dir = tmp_path / "sweep"
    done = vk(
        "sweep",
        "--space",
        space,
        "--trials",
        "2",
        "--sweep-dir",
        sweep_dir,
        "--data",
        tree,
        *SMALL,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr and not (sweep_dir / "trials").exists()


def test_missing_extras_name_the_pip_command(tree: Path, tmp_path: Path, vk: Cli) -> None:
    space = write_space(tmp_path / "space.yaml", SPACE)
    args = ["sweep", "--space", space, "--trials", "1", "--data", tree, *SMALL]
    done = vk(*args, "--backend", "ray", cwd=tmp_path, block=["ray"])  # as if not installed
    assert done.returncode == 2 and "pip install 'visionkit[ray]'" in done.stderr, done.stderr
    done = vk(*args, cwd=tmp_path, block=["optuna"])
    assert done.returncode == 2 and "pip install 'visionkit[sweep]'" in done.stderr, done.stderr


def test_resume_of_a_folder_that_is_no_sweep_is_a_usage_error(tmp_path: Path, vk: Cli) -> None:
    done = vk("sweep", "--resume", tmp_path, cwd=tmp_path)
    assert done.returncode == 2 and "sweep.yaml" in done.stderr and str(tmp_path) in done.stderr


def test_resume_refuses_options_that_would_change_the_sweep(resumed: dict[str, Any], vk: Cli) -> None:
    args = ["sweep", "--resume", resumed["dir"], "--lr", "0.1", "--set", "mixup=0.2", "--sampler", "random"]
    done = vk(*args, cwd=resumed["work"])
    assert done.returncode == 2 and "drop --lr, --set, --sampler" in done.stderr, done.stderr
    assert len(study_of(resumed["dir"]).trials) == 4  # nothing ran


def test_sweep_help_imports_no_torch_optuna_or_ray() -> None:
    code = (
        "import sys\nfrom visionkit_core.cli import main\n"
        "try:\n    main(['sweep', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'optuna', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--space" in out and out.strip().endswith("[]")


# -- Ray: a real local cluster of two worker slots -------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session(sid: int) -> dict[int, list[str]]:
    """The processes of session ``sid`` (``ray start`` and everything it started: Ray gives each
    worker its own process group, but not its own session), with their /proc/<pid>/stat fields."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        except OSError:
            continue
        if int(fields[3]) == sid:
            found[int(stat.parent.name)] = fields
    return found


def _session_cpu_seconds(sid: int) -> float:
    """CPU seconds of a session's processes (with their reaped children), from /proc."""
    ticks = sum(sum(int(v) for v in fields[11:15]) for fields in _session(sid).values())  # u/s/cu/cs time
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop_with_parent() -> None:
    """In the child: SIGTERM when pytest dies (killed by a timeout), so no Ray cluster is left behind."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture
def ray_cluster(tmp_path_factory: pytest.TempPathFactory, external_cpu: Any) -> Any:
    """``ray start --head`` on 127.0.0.1 with 1 CPU (one trial slot); stopped in teardown."""
    import shutil
    import tempfile

    # Ray would otherwise advertise the machine's network address; this keeps it on loopback
    # (read when ray is first imported, here and in `ray start`)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if importlib.util.find_spec("ray") is None:  # not imported here: the sweep process is a fork
        pytest.skip("the ray extra: pip install 'visionkit[ray]'")
    temp = Path(tempfile.mkdtemp(prefix="vkray", dir="/tmp"))  # short: Ray's socket paths have a limit
    port = _free_port()
    log = (tmp_path_factory.mktemp("ray") / "ray.log").open("w")
    ray_bin = Path(sys.executable).parent / "ray"
    args = ["start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1"]
    args += ["--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats"]
    # nothing the sweep does not use: no log monitor (the sweep has log_to_driver off) and no
    # autoscaler monitor (a fixed cluster); ~2 CPU s less
    args += ["--include-log-monitor=false", "--no-monitor"]
    args += ["--temp-dir", str(temp), "--object-store-memory", "100000000"]
    # free ports instead of Ray's fixed defaults, so another cluster on this machine does not collide
    args += [
        "--ray-client-server-port",
        str(_free_port()),
        "--dashboard-agent-listen-port",
        str(_free_port()),
    ]
    proc = subprocess.Popen(
        [str(ray_bin), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown stops exactly these processes
        preexec_fn=_stop_with_parent,
    )
    started = time.monotonic()
    deadline = started + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if "Ray runtime started" in Path(log.name).read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, Path(log.name).read_text()[-2000:]
    info = {"address": f"127.0.0.1:{port}", "pgid": proc.pid, "started": started}
    yield info
    info["cpu_s"] = _session_cpu_seconds(proc.pid)
    external_cpu(info["cpu_s"])  # the cluster's daemons and workers are no children pytest waits for
    try:  # the processes this fixture started: its session, by their ids
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    for pid in _session(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    log.close()
    shutil.rmtree(temp, ignore_errors=True)
    print(
        f"\nray cluster: {info['cpu_s']:.1f} CPU s, {time.monotonic() - started:.1f} s wall", file=sys.stderr
    )


def test_ray_backend_runs_the_sweep_on_a_local_cluster_as_many_at_once_as_it_has_room_for(
    ray_cluster: dict[str, Any], tree: Path, tmp_path: Path, vk: Cli, external_cpu: Any
) -> None:
    """A real cluster (``ray start``) with room for one trial: the driver submits one, and the next
    when it ends; both run in the cluster's worker, never in the driver. (Two workers at once cost
    ~14 CPU s each, most of it importing torch, Lightning and timm: over the per-test budget in a
    full run. The room is read from the cluster: ``room for N trial(s)`` with N its CPUs / --trial-cpus.)"""
    space = write_space(tmp_path / "space.yaml", SPACE)
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "--space", space, "--trials", "2", "--sweep-dir", sweep_dir, "--data", tree]
    args += ["--epochs", "1", "--backend", "ray", "--address", ray_cluster["address"], "--trial-cpus", "1"]
    driver = vk.start(*args, *SMALL, cwd=tmp_path, env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    done = driver.wait()
    assert done.returncode == 0, done.stderr + done.stdout
    assert "room for 1 trial(s) at once" in done.stdout
    trials = study_of(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    workers = {t.user_attrs["worker"] for t in trials}
    # the Ray workers' CPU seconds (they end with the cluster, so /proc cannot count them there)
    used = {
        w: max(t.user_attrs["worker_cpu_s"] for t in trials if t.user_attrs["worker"] == w) for w in workers
    }
    external_cpu(sum(used.values()))
    print(f"\nray workers: {sum(used.values()):.1f} CPU s", file=sys.stderr)
    # one slot: the trials ran one after the other in the same worker (Ray reuses it), not the driver
    assert len(workers) == 1 and not any(w.endswith(f":{driver.pid}") for w in workers)
    first, second = sorted(trials, key=lambda t: t.number)
    assert first.datetime_complete is not None and second.datetime_start is not None
    assert first.datetime_complete <= second.datetime_start
    for t in trials:
        assert (sweep_dir / "trials" / str(t.number) / "summary.json").is_file()
    assert (sweep_dir / "best.yaml").is_file() and (sweep_dir / "summary.csv").read_text().count("\n") == 3
