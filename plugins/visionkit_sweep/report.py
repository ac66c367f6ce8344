"""What a sweep leaves behind: summary.csv and summary.md, best.yaml, and plots/*.png.

Everything is read back from the study (the storage), so a resumed or shared sweep reports
every trial, whichever process ran it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from visionkit_core.kit.media import save_png, write_csv
from visionkit_core.run.config import RunConfig
from visionkit_sweep.study import RETRY_ATTR, retried
from visionkit_sweep.trial import trial_config

_STATE = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def rows(trials: Sequence[FrozenTrial], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial that started: number, state, metric, values, wall time, epochs, note."""
    again = retried(trials)
    out = []
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        state = _STATE.get(t.state, t.state.name.lower())
        note = str(t.user_attrs.get("reason") or "")
        if t.number in again:
            state, note = "interrupted", f"the sweep stopped while it ran; re-run as trial {again[t.number]}"
        elif RETRY_ATTR in t.user_attrs:
            note = f"re-run of trial {t.user_attrs[RETRY_ATTR]}" + (f"; {note}" if note else "")
        value = t.value if t.values else None
        out.append(
            {
                "trial": t.number,
                "state": state,
                "metric": value,
                **{k: t.params.get(k) for k in keys},
                "wall_s": t.user_attrs.get("wall_s"),
                "epochs": t.user_attrs.get("epochs"),
                "run_dir": t.user_attrs.get("run_dir", ""),
                "note": note,
            }
        )
    return out


def write_tables(
    sweep_dir: Path, table: list[dict[str, Any]], keys: Sequence[str], monitor: str
) -> list[str]:
    """summary.csv and summary.md; returns the Markdown table's lines."""
    header = ["trial", *keys, monitor, "state", "wall_s", "epochs", "run_dir", "note"]
    fields = ["trial", *keys, "metric", "state", "wall_s", "epochs", "run_dir", "note"]
    write_csv(
        sweep_dir / "summary.csv", header, [[r[f] if r[f] is not None else "" for f in fields] for r in table]
    )
    shown = [*header[:-2], "note"]
    md = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in table:
        cells = [_fmt(r[f]) for f in fields if f != "run_dir"]
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    (sweep_dir / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return md


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if not complete:
        return None
    return study.best_trial


def write_best(sweep_dir: Path, best: FrozenTrial, base: RunConfig, monitor: str) -> Path:
    """best.yaml: the best trial's config, which ``visionkit train --config best.yaml`` trains again."""
    config = trial_config(base, dict(best.params), "", best.number)
    config.run_dir = None
    header = (
        f"# best trial {best.number} of the sweep in {sweep_dir}: {monitor} {best.value:.6g}\n"
        f"# its run: {sweep_dir / 'trials' / str(best.number)}\n"
        "# train it again: visionkit train --config best.yaml [--run-dir DIR]\n"
    )
    path = sweep_dir / "best.yaml"
    path.write_text(header + config.to_yaml(), encoding="utf-8")
    return path


def write_plots(study: optuna.Study, sweep_dir: Path) -> tuple[list[Path], list[str]]:
    """Optimisation history, parameter importance and parallel coordinates (Optuna's matplotlib
    plots, Agg canvas); a plot the study cannot support yet is skipped with the reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    plots = {
        "optimization_history": vis.plot_optimization_history,
        "param_importances": vis.plot_param_importances,
        "parallel_coordinate": vis.plot_parallel_coordinate,
    }
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" is said once, below
    written, skipped = [], []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for name, plot in plots.items():
        path = sweep_dir / "plots" / f"{name}.png"
        if name == "param_importances" and len(complete) < 2:
            skipped.append(f"{name}: needs at least 2 complete trials")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = plot(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                written.append(save_png(fig, path))
                plt.close(fig)
        except Exception as err:  # e.g. every trial had the same values: nothing to rank
            skipped.append(f"{name}: {' '.join(str(err).split())[:200]}")
    return written, skipped
