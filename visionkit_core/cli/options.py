"""The ``train`` options, declared once and shared by ``train`` and ``config show``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from visionkit_core.cli.completion import complete_data, completer

F = TypeVar("F", bound=Callable[..., Any])

_DATA = "Data"
_MODEL = "Model"
_TRAIN = "Training"
_HW = "Hardware"
_RUN = "Run"
_CFG = "Configuration"
_RECIPE = "Recipe"


def _opt(
    decls: list[str], help: str, panel: str, typ: Any, **kw: Any
) -> tuple[Any, list[str], str, str, dict[str, Any]]:
    return (typ, decls, help, panel, kw)


# name -> (type, flag spellings, help, help panel, extra Option kwargs). Every default is None so
# that only flags the user actually gave override --config and --set.
TRAIN_OPTIONS: dict[str, tuple[Any, list[str], str, str, dict[str, Any]]] = {
    "backbone": _opt(
        ["--backbone", "-b"],
        "Backbone (default: the task's own): resnet18, timm:convnext_tiny, torchvision:resnet50, "
        "ns:name; dense tasks take any backbone that gives feature maps.",
        _MODEL,
        str | None,
        autocompletion=completer("backbone"),
    ),
    "task": _opt(
        ["--task"],
        "Task (default: classification): multilabel, segmentation, detection, instance-segmentation, "
        "keypoints, or a plugin's (`visionkit tasks list`).",
        _MODEL,
        str | None,
        autocompletion=completer("task"),
    ),
    "data": _opt(
        ["--data", "-d"],
        "A data folder or file in a layout the task reads (ImageFolder, masks, VOC, COCO, YOLO, CSV; "
        "`visionkit datasets list`), or a dataset name (default: the task's demo).",
        _DATA,
        str | None,
        autocompletion=complete_data,
    ),
    "val_split": _opt(
        ["--val-split"],
        "Fraction of the training data held out for validation when DATA has no val split "
        "(default 0.2; stratified by class for classification).",
        _DATA,
        float | None,
    ),
    "epochs": _opt(
        ["--epochs", "-e"],
        "Number of epochs (default: the demo's own, e.g. 3 for digits; else 10).",
        _TRAIN,
        int | None,
    ),
    "batch_size": _opt(["--batch-size"], "Batch size per device (default 64).", _TRAIN, int | None),
    "lr": _opt(["--lr"], "Peak learning rate of AdamW (default 2e-3).", _TRAIN, float | None),
    "image_size": _opt(
        ["--image-size"],
        "Square input size in pixels (default: the dataset's own; summary.json records it).",
        _DATA,
        int | None,
    ),
    "seed": _opt(["--seed"], "Random seed (default 42).", _TRAIN, int | None),
    "deterministic": _opt(
        ["--deterministic/--no-deterministic"],
        "Use deterministic algorithms (bit-exact reruns).",
        _TRAIN,
        bool | None,
    ),
    "accelerator": _opt(["--accelerator"], "auto | cpu | gpu.", _HW, str | None),
    "devices": _opt(["--devices"], "Device count, list like 0,1, or auto.", _HW, str | None),
    "strategy": _opt(["--strategy"], "auto | ddp | fsdp (Lightning strategies).", _HW, str | None),
    "num_nodes": _opt(["--num-nodes"], "Number of nodes (with torchrun or SLURM).", _HW, int | None),
    "precision": _opt(
        ["--precision"],
        "auto (32 on CPU, bf16-mixed on capable GPUs) | 32 | 16-mixed | bf16-mixed.",
        _HW,
        str | None,
    ),
    "pretrained": _opt(
        ["--pretrained/--no-pretrained"],
        "Start from the backbone's published weights (needs them downloaded or cached).",
        _MODEL,
        bool | None,
    ),
    "weights": _opt(
        ["--weights"], "Local backbone weights: .safetensors or a PyTorch state dict.", _MODEL, str | None
    ),
    "loggers": _opt(
        ["--logger"],
        "Logger, repeatable: csv (default), tensorboard, wandb, or a plugin's.",
        _RUN,
        list[str] | None,
        autocompletion=completer("logger"),
    ),
    "callbacks": _opt(
        ["--callback"],
        "Extra callback, repeatable: wandb-images, early-stopping, or a plugin's.",
        _RUN,
        list[str] | None,
        autocompletion=completer("callback"),
    ),
    "run_dir": _opt(["--run-dir"], "Run directory (default runs/<timestamp>-<backbone>).", _RUN, str | None),
    "num_workers": _opt(
        ["--num-workers"], "DataLoader workers (default: from the CPU count).", _DATA, int | None
    ),
    "config_files": _opt(
        ["--config", "-c"], "YAML config file, repeatable; later files win.", _CFG, list[Path] | None
    ),
    "sets": _opt(
        ["--set", "-s"],
        "KEY=VALUE override, repeatable, e.g. backbone.drop_path_rate=0.1.",
        _CFG,
        list[str] | None,
    ),
    "resume": _opt(
        ["--resume"],
        "Continue a run exactly: 'last' (the run in --run-dir) or a checkpoint path.",
        _RUN,
        str | None,
    ),
    "init_from": _opt(["--init-from"], "Start a new run from a checkpoint's weights only.", _RUN, str | None),
    "on_bad_image": _opt(
        ["--on-bad-image"],
        "skip (default: warn, count, continue) | error (stop before training).",
        _DATA,
        str | None,
    ),
    "sync_batchnorm": _opt(
        ["--sync-batchnorm/--no-sync-batchnorm"],
        "Synchronise BatchNorm statistics across devices.",
        _HW,
        bool | None,
    ),
    "activation_checkpointing": _opt(
        ["--activation-checkpointing/--no-activation-checkpointing"],
        "With --strategy fsdp: recompute the backbone blocks' activations in backward to save memory.",
        _HW,
        bool | None,
    ),
    "compile": _opt(
        ["--compile/--no-compile"],
        "torch.compile the model (off by default; pays off on GPUs).",
        _HW,
        bool | None,
    ),
    "augment": _opt(
        ["--augment"],
        "Training augmentation: none | basic (default: random resized crop + flip) | randaugment | "
        "trivialaugment | autoaugment (torchvision v2, on top of basic).",
        _RECIPE,
        str | None,
    ),
    "mixup": _opt(
        ["--mixup"], "MixUp on each training batch with Beta(ALPHA, ALPHA); 0: off.", _RECIPE, float | None
    ),
    "cutmix": _opt(
        ["--cutmix"],
        "CutMix on each training batch with Beta(ALPHA, ALPHA); with --mixup, one of the two per batch.",
        _RECIPE,
        float | None,
    ),
    "label_smoothing": _opt(
        ["--label-smoothing"], "Label smoothing of the loss (0 to <1).", _RECIPE, float | None
    ),
    "class_weights": _opt(
        ["--class-weights"],
        "Loss weights: none (default) | balanced (from the training class counts).",
        _RECIPE,
        str | None,
    ),
    "sampler": _opt(
        ["--sampler"],
        "Training order: default (shuffle) | balanced (each class drawn equally often; DDP-aware).",
        _RECIPE,
        str | None,
    ),
    "cache": _opt(
        ["--cache"],
        "Decoded training images kept in memory: auto (the dataset's default; detection and "
        "segmentation: up to 512 MiB) | ram (up to half the free memory) | none.",
        _RECIPE,
        str | None,
    ),
    "ema": _opt(
        ["--ema/--no-ema"],
        "Keep an exponential moving average of the weights (Lightning's "
        "EMAWeightAveraging); validation and the checkpoint use it.",
        _RECIPE,
        bool | None,
    ),
    "ema_decay": _opt(["--ema-decay"], "Decay of --ema (default 0.999).", _RECIPE, float | None),
    "freeze_backbone": _opt(
        ["--freeze-backbone/--no-freeze-backbone"],
        "Train only the head at first (Lightning's BackboneFinetuning).",
        _RECIPE,
        bool | None,
    ),
    "unfreeze_at_epoch": _opt(
        ["--unfreeze-at-epoch"],
        "With --freeze-backbone: unfreeze the backbone at this epoch (0-based; default: never).",
        _RECIPE,
        int | None,
    ),
    "accumulate_grad_batches": _opt(
        ["--accumulate-grad-batches"], "Optimizer step every N batches (default 1).", _RECIPE, int | None
    ),
    "gradient_clip": _opt(
        ["--gradient-clip"], "Clip the gradient norm to this value.", _RECIPE, float | None
    ),
}


def with_train_options(func: F) -> F:
    """Give ``func(**kwargs)`` the full set of train options as its Typer signature."""
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                typ, typer.Option(*decls, help=help, rich_help_panel=panel, show_default=False, **kw)
            ],
        )
        for name, (typ, decls, help, panel, kw) in TRAIN_OPTIONS.items()
    ]
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return func


def config_from_options(options: dict[str, Any]) -> Any:
    """Resolve a RunConfig from parsed train options (defaults < --config < --set < flags)."""
    return config_and_resume(options)[0]


def config_and_resume(options: dict[str, Any]) -> tuple[Any, Any]:
    """The RunConfig of parsed train options and, with ``--resume``, the :class:`ResumePoint` read
    for it (the run continues with its own config; flags given now still override it)."""
    import typer

    from visionkit_core.run.config import RunConfig, apply_mapping, resolve

    flags = dict(options)
    config_files = flags.pop("config_files", None) or []
    sets = flags.pop("sets", None) or []
    for key in ("loggers", "callbacks"):
        if not flags.get(key):
            flags[key] = None
    base, point = None, None
    if flags.get("resume"):
        from visionkit_core.training.resume import find_resume_checkpoint
        from visionkit_core.workflows.inference import run_dir_of

        point = find_resume_checkpoint(flags["resume"], flags.get("run_dir"))
        for note in point.notes:
            typer.echo(f"visionkit: {note}", err=True)
        base = apply_mapping(RunConfig(), point.meta["config"], f"checkpoint {str(point.path)!r}")
        # the checkpoint holds the weights: nothing is downloaded or re-read when resuming
        base.pretrained, base.weights, base.init_from = False, None, None
        flags["resume"] = str(point.path)
        flags["run_dir"] = str(run_dir_of(point.path)) if flags.get("run_dir") is None else flags["run_dir"]
    return resolve(config_files, sets, flags, base=base), point
