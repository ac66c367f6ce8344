"""The visionkit plugin contract: every hook a plugin may implement.

Hookspecs only ever *gain* arguments and are never renamed or removed; a plugin may implement
any subset of a hook's arguments. ``HOOKSPEC_VERSION`` is bumped (minor) whenever a hook or
argument is added. Argument types are imported for type checking only, so importing this
module never imports torch, lightning, timm or wandb.
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


# Registration: called once per process, when the registry is first needed. Register factories
# (callables or "module:attr" strings), never instances.


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
    ``visionkit_core.kit.build_feature_backbone``. Not ``firstresult``. Since 1.0.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.
    """


@hookspec
def visionkit_register_tasks(registry: Registrar) -> None:
    """Register tasks: ``LightningModule`` classes (or factories) that wrap a backbone.

    A task factory is called with ``backbone`` (qualified name), ``num_classes``, ``class_names``,
    ``lr``, ``pretrained``, ``weights`` and ``backbone_options`` (and its own options from
    ``--set task.KEY=VALUE``), receiving only the ones it accepts. Not ``firstresult``. Since 1.0.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.
    """


@hookspec
def visionkit_register_datasets(registry: Registrar) -> None:
    """Register datasets: ``LightningDataModule`` factories.

    A dataset factory is called with ``root`` (the ``--data`` value, or ``None`` for a named
    dataset), ``batch_size``, ``image_size`` (``None``: the dataset's default), ``val_split``,
    ``seed``, ``num_workers`` (``None``: choose) and ``on_bad_image`` (``"skip"``/``"error"``),
    plus its own options from ``--set data.KEY=VALUE``, receiving only the ones it accepts. The
    datamodule provides ``data_info() -> DataInfo`` and ``data_spec() -> DataSpec`` (see
    :class:`~visionkit_core.plugin.contract.VisionData`); one written for 1.0 with only
    ``class_names() -> list[str]`` still works. Not ``firstresult``. Since 1.0.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.
    """


@hookspec
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Register Lightning callbacks selectable with ``--callback NAME``.

    A callback factory receives its options (``--set callback.NAME.KEY=VALUE``) plus, if it
    accepts them, ``run_dir`` (a ``pathlib.Path``) and ``class_names``. Not ``firstresult``.
    Since 1.0.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.
    """


@hookspec
def visionkit_register_loggers(registry: Registrar) -> None:
    """Register Lightning loggers selectable with ``--logger NAME``.

    A logger factory receives its options (``--set logger.NAME.KEY=VALUE``) plus, if it
    accepts them, ``run_dir`` (a ``pathlib.Path``) and ``run_name``. Not ``firstresult``.
    Since 1.0.

    :param registry: a :class:`~visionkit_core.plugin.registry.Registrar` bound to your plugin.
    """


@hookspec(firstresult=True)
def visionkit_claim_data(path: Path, task: str | None) -> str | None:
    """Claim a ``--data PATH`` layout: return the name of the dataset that reads it, or ``None``.

    Called when ``--data`` names an existing file or folder: look at its layout cheaply (a few
    ``stat`` calls, no decoding) and return a dataset name your plugin registered when you
    recognise it. ``firstresult``: the first non-``None`` answer wins (``tryfirst=True`` to
    claim before others). Since 1.1.

    :param path: the ``--data`` path, expanded (``~``) but not resolved.
    :param task: the qualified name of the run's task (``"visionkit:detection"``), or ``None``
        where no task is known (``visionkit data check DIR`` without ``--task``). One layout can
        serve several tasks (a COCO folder): claim it for yours with ``tryfirst=True`` and leave
        other tasks' runs alone (added in 1.2).
    """


@hookspec
def visionkit_default_callbacks(stage: str, run_dir: Path | None, task: TaskSpec) -> list[Callback]:  # type: ignore[empty-body]
    """Return the callbacks every Trainer of ``stage`` gets (``fit``: checkpoints, LR monitor, curves).

    A ``fit`` callback with a ``visionkit_summary(trainer) -> dict`` method adds those plain
    values to ``summary.json`` (the built-in throughput callback gives ``train_images_per_s``).
    Not ``firstresult``: every plugin's list is added, in hook calling order. Since 1.1.

    :param stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
    :param run_dir: the run directory (``None`` outside ``fit``).
    :param task: the :class:`~visionkit_core.plugin.contract.TaskSpec` of the run's task:
        ``task.monitor`` and ``task.mode`` are what the best checkpoint tracks.
    """


@hookspec(firstresult=True)
def visionkit_progress_bar(stage: str) -> Callback | None:
    """Return the progress display for a Trainer of ``stage``, or ``None`` to leave it to others.

    ``firstresult``: the first non-``None`` answer wins (``tryfirst=True`` to replace the
    built-in one); when no plugin answers, the Trainer shows no progress bar. Since 1.1.

    :param stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
    """


@hookspec
def visionkit_add_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``visionkit`` CLI (``app.command()`` / ``app.add_typer()``).

    Called while the CLI is built, ``--help`` included: keep heavy imports inside the commands.
    Not ``firstresult``. Since 1.0.

    :param app: the root ``typer.Typer`` application.
    """


@hookspec
def visionkit_configure_trainer(trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
    """Adjust the keyword arguments of ``lightning.Trainer`` in place, just before it is built.

    Not ``firstresult``: every plugin is called, in hook calling order. Since 1.0.

    :param trainer_kwargs: the dict passed to ``Trainer(**trainer_kwargs)``; ``callbacks`` is
        a list you may append to; ``logger`` is a list, or ``False`` when the run has none.
    :param run: the resolved, read-only :class:`~visionkit_core.run.config.RunConfig`.
    """
