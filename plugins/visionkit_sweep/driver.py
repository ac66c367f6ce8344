"""The sweep itself: check everything, open the study, run the trials (here or on Ray), report.

``SWEEP_DIR/sweep.yaml`` records what ``--resume`` needs: the space, the base config (the
``train`` options resolved, task defaults filled in), the sampler, the pruner, the storage
and the study's name. The loop is Optuna's ask-and-tell: this process asks the sampler for
each trial's values and records every outcome; a trial reports its epochs to the storage
itself (so the pruner sees them) wherever it runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from visionkit_core.errors import ConfigError, UsageError, require
from visionkit_core.run.config import RunConfig, apply_mapping

STATE_FILE = "sweep.yaml"
STATE_VERSION = 1
BACKENDS = ("local", "ray")
_RESUME_KEEPS = ("space", "search_sampler", "pruner", "study_name")


@dataclass
class SweepRequest:
    """The command line of ``visionkit sweep`` (``base``: the resolved train options, None with --resume)."""

    base: RunConfig | None
    space: Path | None = None
    trials: int | None = None
    sweep_dir: Path | None = None
    search_sampler: str | None = None
    pruner: str | None = None
    pruner_startup_trials: int = 5
    storage: str | None = None
    study_name: str | None = None
    enqueue: list[str] | None = None
    resume: Path | None = None
    backend: str | None = None
    address: str | None = None
    trial_cpus: float | None = None
    trial_gpus: float | None = None
    train_flags_given: list[str] = field(default_factory=list)


@dataclass
class SweepResult:
    sweep_dir: Path
    best: int | None
    lines: list[str]


def _choice(value: str | None, choices: tuple[str, ...], flag: str, default: str) -> str:
    value = default if value is None else value
    if value not in choices:
        raise UsageError(f"{flag} {value!r} is not one of: {', '.join(choices)}")
    return value


def _check_flags(req: SweepRequest) -> tuple[str, str, str]:
    sampler = _choice(req.search_sampler, ("tpe", "random", "grid"), "--sampler", "tpe")
    pruner = _choice(req.pruner, ("median", "hyperband", "none"), "--pruner", "median")
    backend = _choice(req.backend, BACKENDS, "--backend", "local")
    if backend != "ray":
        for flag, value in (
            ("--address", req.address),
            ("--trial-cpus", req.trial_cpus),
            ("--trial-gpus", req.trial_gpus),
        ):
            if value is not None:
                raise UsageError(f"{flag} is for --backend ray; add --backend ray or drop {flag}")
    for flag, value in (("--trial-cpus", req.trial_cpus), ("--trial-gpus", req.trial_gpus)):
        if value is not None and value < 0:
            raise UsageError(f"{flag} must be >= 0, got {value}")
    require("optuna", "sweep", "visionkit sweep")
    if backend == "ray":
        require("ray", "ray", "visionkit sweep --backend ray")
    return sampler, pruner, backend


def _absolute_paths(config: RunConfig) -> RunConfig:
    """Data and weight files as absolute paths: trials may run in another working directory (Ray)."""
    changes = {}
    for key in ("data", "weights", "init_from"):
        value = getattr(config, key)
        if value and Path(value).expanduser().exists():
            changes[key] = str(Path(value).expanduser().resolve())
    return dataclasses.replace(config, **changes)


def _load_state(sweep_dir: Path) -> dict[str, Any]:
    import yaml

    path = sweep_dir / STATE_FILE
    if not path.is_file():
        raise UsageError(
            f"--resume {str(sweep_dir)!r}: no {STATE_FILE} there, so it is not a sweep directory; "
            "give the --sweep-dir of an earlier `visionkit sweep`"
        )
    try:
        state = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({err}); it is written by visionkit sweep") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UsageError(f"{path}: not a sweep state file of this visionkit (version {STATE_VERSION})")
    return state


def _new_state(
    req: SweepRequest, sampler: str, pruner: str, echo: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    from visionkit_sweep.space import load_space

    if req.space is None:
        raise UsageError("--space SPACE.yaml is required (or --resume SWEEP_DIR to continue a sweep)")
    if req.trials is None:
        raise UsageError("--trials N is required: how many trials the study runs in all")
    assert req.base is not None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_dir = Path(req.sweep_dir) if req.sweep_dir else Path("sweeps") / stamp
    if (sweep_dir / STATE_FILE).exists():
        raise UsageError(
            f"--sweep-dir {str(sweep_dir)!r} already holds a sweep; continue it with --resume {sweep_dir}, "
            "or choose another --sweep-dir"
        )
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise UsageError(f"--sweep-dir {str(sweep_dir)!r} is a file; choose a directory")
    base = req.base
    if base.run_dir:
        echo(
            f"visionkit: run_dir {base.run_dir!r} from the config is not used: "
            f"trials go to {sweep_dir}/trials/<n>"
        )
    base = _absolute_paths(dataclasses.replace(base, run_dir=None, resume=None))
    space = load_space(req.space)
    return sweep_dir, {
        "version": STATE_VERSION,
        "study_name": req.study_name or sweep_dir.resolve().name,
        "storage": req.storage,
        "sampler": sampler,
        "pruner": pruner,
        "pruner_startup_trials": req.pruner_startup_trials,
        "trials": req.trials,
        "space": {p.key: p.to_dict() for p in space},
        "base": base.to_dict(),
    }


def _resume_state(req: SweepRequest) -> tuple[Path, dict[str, Any]]:
    from visionkit_core.cli.options import TRAIN_OPTIONS

    given = [TRAIN_OPTIONS[n][1][0].split("/")[0] for n in req.train_flags_given]
    given += [
        {"search_sampler": "--sampler"}.get(n, f"--{n.replace('_', '-')}")
        for n in _RESUME_KEEPS
        if getattr(req, n) is not None
    ]
    if req.pruner_startup_trials != 5:
        given.append("--pruner-startup-trials")
    if req.sweep_dir is not None:
        given.append("--sweep-dir")
    if given:
        raise UsageError(
            f"--resume continues a sweep with the space and options it started with; drop {', '.join(given)} "
            "(--trials, --enqueue, --storage and the --backend options may change)"
        )
    assert req.resume is not None
    state = _load_state(Path(req.resume))
    if req.trials is not None:
        state["trials"] = req.trials
    if req.storage is not None:
        state["storage"] = req.storage
    elif state.get("storage") and "***" in str(state["storage"]):
        raise UsageError(
            "this sweep's --storage URL has a password, which is not stored; give --storage again"
        )
    return Path(req.resume), state


def _storage_url(state: dict[str, Any], sweep_dir: Path) -> str:
    return str(state.get("storage") or f"sqlite:///{(sweep_dir / 'study.db').resolve()}")


def _save_state(sweep_dir: Path, state: dict[str, Any]) -> None:
    import yaml

    from visionkit_sweep.study import safe_url

    saved = dict(state)
    if saved.get("storage"):
        saved["storage"] = safe_url(str(saved["storage"]))  # never a password on disk
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / STATE_FILE).write_text(yaml.safe_dump(saved, sort_keys=False), encoding="utf-8")


def _check_against_plugins(state: dict[str, Any], space: list[Any], plugins: Any) -> tuple[RunConfig, Any]:
    """Resolve the base config and every probe value of the space against the plugins' factories."""
    from visionkit_core.run.assemble import validate_components
    from visionkit_sweep.space import check_keys, component_configs

    base = apply_mapping(RunConfig(), state["base"], "the sweep's base config")
    resolved = validate_components(base, plugins)
    base = resolved.config
    source = "SPACE.yaml"
    check_keys(space, base, source)
    for label, config in component_configs(space, base, source):
        try:
            validate_components(config, plugins)
        except UsageError as err:
            raise ConfigError(f"{label}: {err}") from None
    return base, resolved.task_spec


def _open(sweep: Any, sweep_dir: Path) -> None:
    """Open (or create) the study; a folder made for a study that cannot be opened is removed."""
    made = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        sweep.open()
    except BaseException:
        if made and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()
        raise


def run_sweep(req: SweepRequest, echo: Callable[[str], None] = print) -> SweepResult:
    """Start or continue a sweep and report it (see the module docstring)."""
    import yaml

    from visionkit_core.plugin.manager import get_plugins, use_plugins
    from visionkit_sweep.space import check_point, parse_space

    sampler_name, pruner_name, backend = _check_flags(req)
    if req.resume is not None:
        sweep_dir, state = _resume_state(req)
    else:
        sweep_dir, state = _new_state(req, sampler_name, pruner_name, echo)
    space = parse_space(state["space"], "SPACE.yaml")
    plugins = get_plugins()
    with use_plugins(plugins):
        base, spec = _check_against_plugins(state, space, plugins)
        state["base"] = base.to_dict()
        points = []
        for i, text in enumerate(req.enqueue or []):
            try:
                point = yaml.safe_load(text)
            except yaml.YAMLError:
                point = text
            points.append(check_point(point, space, base, f"--enqueue #{i + 1} {text!r}"))
        grid = None
        if state["sampler"] == "grid":
            grid = {p.key: p.grid() for p in space}
        if backend == "ray":
            from visionkit_sweep.ray_backend import check_reachable

            check_reachable(req.address)
        from visionkit_sweep.loop import Sweep

        sweep = Sweep(
            sweep_dir=sweep_dir,
            state=state,
            storage_url=_storage_url(state, sweep_dir),
            space=space,
            base=base,
            monitor=spec.monitor,
            mode=spec.mode,
            grid=grid,
            echo=echo,
        )
        started = time.perf_counter()
        _open(sweep, sweep_dir)
        _save_state(sweep_dir, state)  # only now: a sweep that could not start leaves nothing to resume
        for point in points:
            sweep.study.enqueue_trial(point, skip_if_exists=True)
        interrupted: BaseException | None = None
        try:
            if backend == "ray":
                from visionkit_sweep.ray_backend import run_on_ray

                run_on_ray(sweep, req.address, req.trial_cpus or 1.0, req.trial_gpus or 0.0)
            else:
                sweep.run_local()
        except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C (Lightning turns it into exit 1)
            interrupted = stop
        if interrupted:
            try:
                lines = sweep.report(time.perf_counter() - started)
            except Exception as err:  # the signal may have cut a storage write short
                lines = [f"visionkit: no summary written ({' '.join(str(err).split())[:200]})"]
            for line in lines:
                echo(line)
            echo(f"The sweep was interrupted; continue it with: visionkit sweep --resume {sweep_dir}")
            raise interrupted
        lines = sweep.report(time.perf_counter() - started)
        return SweepResult(sweep_dir, sweep.best_number, lines)
