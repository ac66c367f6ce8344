"""The visionkit plugin contract: every hook a plugin may implement.

Compatibility policy: hookspecs only ever *gain* arguments and are never renamed or
removed; a plugin may implement any subset of a hook's arguments (pluggy passes only the
ones it names). ``HOOKSPEC_VERSION`` is bumped (minor) whenever a hook or argument is
added; ``visionkit plugins list`` shows it. Argument types are imported for type checking
only, so importing this module never imports torch, lightning, timm or wandb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import typer
    from lightning.pytorch.callbacks import Callback

    from visionkit_core.plugin.contract import TaskSpec
    from visionkit_core.plugin.registry import Registrar
    from visionkit_core.run.config import RunConfig

PROJECT = "visionkit"
HOOKSPEC_VERSION = "1.2"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------
# Registration: called once per process, when the registry is first needed.
# Register factories (callables or "module:attr" strings), never instances.
# -------------------------------------------------------------------------------------


@hookspec
def visionkit_register_backbones(registry: Registrar) -> None:
    """Register backbone networks.

    A backbone factory is called as ``factory(num_classes=..., pretrained=..., **options)``
    and returns a ``torch.nn.Module`` mapping ``(N, 3, H, W)`` float images to
    ``(N, num_classes)`` logits. It may set ``model.visionkit_preprocessing`` to a dict with
    ``mean``/``std``/``interpolation`` to override ImageNet defaults. Its other keyword
    arguments are the options users set with ``--set backbone.KEY=VALUE``.
    Use ``registry.add_namespace(ns, resolve, list_names)`` for a dynamic namespace.

    Feature backbones: a factory that also takes ``features_only`` and ``out_indices``
    returns, with ``features_only=True``, a module giving a list of ``(N, C_i, H / s_i,
    W / s_i)`` feature maps (the levels ``out_indices`` picks; ``None``: all) and carrying
    ``visionkit_feature_info``: one :class:`~visionkit_core.plugin.contract.FeatureLevel`
    ``(channels=C_i, reduction=s_i)`` per map. Tasks build it with
    ``visionkit_core.kit.build_feature_backbone``.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.

    Not ``firstresult``. Since 1.0.
    """


@hookspec
def visionkit_register_tasks(registry: Registrar) -> None:
    """Register tasks: ``LightningModule`` classes (or factories) that wrap a backbone.

    A task factory is called with ``backbone`` (qualified name), ``num_classes``,
    ``class_names``, ``lr``, ``pretrained``, ``weights`` and ``backbone_options`` (and its own
    options from ``--set task.KEY=VALUE``), receiving only the ones it accepts.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.

    Not ``firstresult``. Since 1.0.
    """


@hookspec
def visionkit_register_datasets(registry: Registrar) -> None:
    """Register datasets: ``LightningDataModule`` factories.

    A dataset factory is called with ``root`` (the ``--data`` value, or ``None`` for a
    named dataset), ``batch_size``, ``image_size`` (``None``: the dataset's default), ``val_split``,
    ``seed``, ``num_workers`` (``None``: choose) and ``on_bad_image`` (``"skip"``/``"error"``), plus
    its own options from ``--set data.KEY=VALUE``, receiving only the ones it accepts. The
    returned datamodule provides ``data_info() -> DataInfo`` (what the task receives: class names,
    ignore index, ...) and ``data_spec() -> DataSpec`` (splits; tuple or dict batches, where the
    images are); see :class:`~visionkit_core.plugin.contract.VisionData`. A datamodule written for
    1.0 with only ``class_names() -> list[str]`` still works.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.

    Not ``firstresult``. Since 1.0.
    """


@hookspec
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Register Lightning callbacks selectable with ``--callback NAME``.

    A callback factory receives its options (``--set callback.NAME.KEY=VALUE``) plus, if
    it accepts them, ``run_dir`` (a ``pathlib.Path``) and ``class_names``.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.

    Not ``firstresult``. Since 1.0.
    """


@hookspec
def visionkit_register_loggers(registry: Registrar) -> None:
    """Register Lightning loggers selectable with ``--logger NAME``.

    A logger factory receives its options (``--set logger.NAME.KEY=VALUE``) plus, if it
    accepts them, ``run_dir`` (a ``pathlib.Path``) and ``run_name``.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.

    Not ``firstresult``. Since 1.0.
    """


# -------------------------------------------------------------------------------------
# Data: called when ``--data PATH`` names a file or folder.
# -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def visionkit_claim_data(path: Path, task: str | None) -> str | None:
    """Claim a ``--data PATH`` layout: return the name of the dataset that reads it, or ``None``.

    Called with the existing file or folder the user gave; look at its layout cheaply (a
    few ``stat`` calls, no decoding) and return a dataset name your plugin registered
    (``"imagefolder"``, ``"acme:shards"``) when you recognise it. The first non-``None``
    answer wins: use ``tryfirst=True`` to claim a layout another plugin would also claim.

    :param path: the ``--data`` path, expanded (``~``) but not resolved.
    :param task: the qualified name of the run's task (``"visionkit:detection"``,
        ``"acme:pose"``), or ``None`` where no task is known (``visionkit data check DIR``
        without ``--task``). One layout can serve several tasks (a COCO folder: detection,
        instance segmentation, keypoints): claim it for your task with ``tryfirst=True``
        and leave other tasks' runs alone (added in 1.2).

    ``firstresult``. Since 1.1.
    """


# -------------------------------------------------------------------------------------
# Trainers: called for every Trainer visionkit builds (fit, validate, test, predict).
# -------------------------------------------------------------------------------------


@hookspec
def visionkit_default_callbacks(stage: str, run_dir: Path | None, task: TaskSpec) -> list[Callback]:  # type: ignore[empty-body]
    """Return the callbacks every Trainer of ``stage`` gets (``fit``: checkpoints, LR monitor, curves).

    :param stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
    :param run_dir: the run directory (``None`` outside ``fit``).
    :param task: the :class:`~visionkit_core.plugin.contract.TaskSpec` of the run's task:
        ``task.monitor`` and ``task.mode`` are what the best checkpoint tracks.

    A ``fit`` callback with a ``visionkit_summary(trainer) -> dict`` method adds those plain
    values to ``summary.json`` (the built-in throughput callback gives ``train_images_per_s``).

    Not ``firstresult``: every plugin's list is added, in hook calling order. Since 1.1.
    """


@hookspec(firstresult=True)
def visionkit_progress_bar(stage: str) -> Callback | None:
    """Return the progress display for a Trainer of ``stage``, or ``None`` to leave it to others.

    The first non-``None`` answer wins (use ``tryfirst=True`` to replace the built-in one);
    when no plugin answers, the Trainer shows no progress bar.

    :param stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

    ``firstresult``. Since 1.1.
    """


# -------------------------------------------------------------------------------------
# Command line: called while the CLI is built, before arguments are parsed.
# -------------------------------------------------------------------------------------


@hookspec
def visionkit_add_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``visionkit`` CLI (``app.command()`` / ``app.add_typer()``).

    Keep heavy imports inside the command functions: this hook runs for ``--help``.

    :param app: the root ``typer.Typer`` application.

    Not ``firstresult``. Since 1.0.
    """


# -------------------------------------------------------------------------------------
# Run assembly: called once per run, just before the Trainer is constructed.
# -------------------------------------------------------------------------------------


@hookspec
def visionkit_configure_trainer(trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
    """Adjust the keyword arguments of ``lightning.Trainer`` in place.

    :param trainer_kwargs: the dict that will be passed to ``Trainer(**trainer_kwargs)``;
        ``callbacks`` is a list you may append to; ``logger`` is a list, or ``False`` when
        the run has no logger.
    :param run: the resolved, read-only :class:`~visionkit_core.run.config.RunConfig`.

    Not ``firstresult``. Since 1.0.
    """
