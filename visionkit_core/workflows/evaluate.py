"""validate / test: a checkpoint's metrics on a split, for any task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.plugin.manager import Plugins, get_plugins


def eval_trainer(
    stage: str, accelerator: str, plugins: Plugins | None = None, spec: Any = None, **kwargs: Any
) -> Any:
    """A one-device Trainer for ``stage`` with the plugins' default callbacks and progress display."""
    import torch
    from lightning.pytorch.callbacks import ProgressBar

    from visionkit_core.run.assemble import make_trainer, trainer_callbacks
    from visionkit_core.training.runtime import quiet_lightning

    quiet_lightning()
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    callbacks = trainer_callbacks(plugins or get_plugins(), stage, None, spec) if spec is not None else []
    return make_trainer(
        {
            "accelerator": accelerator,
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "enable_progress_bar": any(isinstance(cb, ProgressBar) for cb in callbacks),
            "callbacks": callbacks,
            **kwargs,
        }
    )


def evaluate(
    stage: str,
    ckpt: Path,
    data: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    output: Path | None = None,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Run ``stage`` (``validate`` or ``test``) on a checkpoint; write and return the metrics document."""
    from visionkit_core.run.report import SKIPPED_LISTED, bad_samples_of, skipped_name
    from visionkit_core.training.checkpoint import write_json
    from visionkit_core.workflows.inference import check_split, datamodule_for, load_checkpoint, run_dir_of

    split = {"validate": "val", "test": "test"}[stage]
    loaded = load_checkpoint(ckpt)
    dm = datamodule_for(loaded, data, batch_size=batch_size, num_workers=num_workers)
    check_split(dm, data or loaded.config.data or "?", split)
    trainer = eval_trainer(stage, accelerator, spec=loaded.spec)
    run = trainer.validate if stage == "validate" else trainer.test
    results = run(loaded.model, datamodule=dm, verbose=False)
    metrics = {k: round(float(v), 6) for k, v in sorted(results[0].items())} if results else {}
    out = output or run_dir_of(ckpt) / f"{stage}.json"
    skipped = sorted(skipped_name(b) for b in bad_samples_of(dm))
    doc = {
        "checkpoint": str(ckpt),
        "data": data or loaded.config.data,
        "split": split,
        "task": loaded.spec.name,
        "monitor": loaded.spec.monitor.replace("val/", f"{split}/", 1),
        "metrics": metrics,
        "skipped_images": len(skipped),
        "skipped_files": skipped[:SKIPPED_LISTED],
        "output": str(out),
    }
    write_json(Path(out), doc)
    return doc
