"""The root Typer app and the built-in commands; plugins add theirs (``Plugins.add_commands``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from visionkit_core.errors import UsageError
from visionkit_core.plugin.manager import Plugins, get_plugins

# the options of the commands that use a checkpoint (``export`` uses them too)
CkptOption = Annotated[
    Path, typer.Option("--ckpt", help="A checkpoint written by `visionkit train`.", show_default=False)
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data", "-d", help="Data folder or dataset name (default: the checkpoint's training data)."
    ),
]
BatchOption = Annotated[
    int | None, typer.Option("--batch-size", help="Batch size (default: the checkpoint's).")
]
WorkersOption = Annotated[
    int | None, typer.Option("--num-workers", help="DataLoader workers (default: automatic).")
]
AcceleratorOption = Annotated[str, typer.Option("--accelerator", help="auto | cpu | gpu.")]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="JSON file for the metrics (default: <run>/<command>.json)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

_EVALUATE_HELP = {
    "validate": "Metrics of a checkpoint on the validation split (printed and written as JSON).",
    "test": "Metrics of a checkpoint on the test split (DATA/test/), printed and written as JSON.",
}


def _version_callback(value: bool) -> None:
    if not value:
        return
    from visionkit_core import HOOKSPEC_VERSION, __version__

    typer.echo(f"visionkit {__version__} (hookspec {HOOKSPEC_VERSION})")
    for info in get_plugins().infos.values():
        tag = " (built-in)" if info.builtin else ""
        typer.echo(f"  {info.name}: {info.distribution} {info.version}{tag} [{info.status}]")
    raise typer.Exit()


def build_app(plugins: Plugins) -> typer.Typer:
    """Create the CLI with the built-in command groups and every plugin's commands."""
    from visionkit_core.cli.options import config_and_resume, config_from_options, with_train_options

    app = typer.Typer(
        name="visionkit",
        help="Train computer-vision models with PyTorch Lightning, assembled from plugins.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_version_callback, is_eager=True, help="Show versions and exit."
            ),
        ] = False,
        strict_plugins: Annotated[
            bool, typer.Option("--strict-plugins", help="Fail if any plugin fails to load.")
        ] = False,
        no_plugin: Annotated[
            list[str] | None, typer.Option("--no-plugin", help="Do not load this plugin (repeatable).")
        ] = None,
    ) -> None:
        """visionkit: plugin-based computer-vision training on Lightning."""

    @app.command(
        "train",
        help="Train a model. With no options: the built-in resnet18 classifier on the embedded digits "
        "dataset; with --task and no --data: that task's demo. The data options mean the same for "
        "every task: --data is read by the dataset plugin that recognises its layout, --image-size and "
        "--epochs default to that dataset's own values.",
    )
    @with_train_options
    def train(**options: Any) -> None:
        _train(*config_and_resume(options))

    for stage, text in _EVALUATE_HELP.items():
        app.command(stage, help=text)(_evaluate_command(stage))
    app.command("predict")(_predict)
    config = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)
    app.add_typer(config, name="config")

    @config.command("show")
    @with_train_options
    def show(**options: Any) -> None:
        """Print the resolved config as YAML (feed it back with --config to reproduce it)."""
        from visionkit_core.run.resolve import validate_components

        resolved = config_from_options(options)
        validate_components(resolved, get_plugins())
        typer.echo(resolved.to_yaml(), nl=False)

    listing = typer.Typer(help="Inspect installed plugins, or start a new one.", no_args_is_help=True)
    listing.command("list")(_list_plugins)
    app.add_typer(listing, name="plugins")  # ``plugins check|new`` come from the devtools plugin
    for kind in ("backbone", "dataset", "task", "logger", "callback"):  # visionkit models|datasets|... list
        noun = f"{kind}s"
        app.add_typer(_component_group(kind, noun), name="models" if kind == "backbone" else noun)
    plugins.add_commands(app)
    plugins.report_errors()
    return app


def _train(config: Any, resume: Any) -> None:
    from visionkit_core.run.argv import redacted_argv
    from visionkit_core.training.distributed import ARGV_ENV

    # loggers such as wandb record sys.argv: redact secret --set values in it; the ranks Lightning's
    # launcher starts from sys.argv read the real command line from the environment (cli.main)
    redacted = redacted_argv(sys.argv)
    if redacted != sys.argv:
        os.environ.setdefault(ARGV_ENV, json.dumps(sys.argv[1:]))
        sys.argv[:] = redacted
    from visionkit_core.run.assemble import run_train

    result = run_train(config, resume=resume)
    if not result.is_global_zero:
        return  # rank 0 reports for the whole run
    summary = result.summary
    # per-class values (val/recall/<class>) stay in summary.json: one line must stay readable
    shown = {k: v for k, v in summary["metrics"].items() if k.startswith("val/") and k.count("/") == 1}
    typer.echo("")
    typer.echo("Final " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    if summary.get("skipped_images"):
        typer.echo(f"Skipped images:  {summary['skipped_images']} (listed in summary.json)")
        for path in (summary.get("skipped_files") or [])[:20]:
            typer.echo(f"  {path}")
        if summary["skipped_images"] > 20:
            typer.echo(f"  ... and {summary['skipped_images'] - 20} more")
    typer.echo(f"Run directory:   {result.run_dir}")
    typer.echo(f"Best checkpoint: {summary['best_checkpoint']}")
    if summary.get("interrupted"):
        typer.echo("Training was interrupted; continue with --resume last", err=True)
        sys.exit(1)


def _evaluate_command(stage: str) -> Callable[..., None]:
    def command(
        ckpt: CkptOption,
        data: DataOption = None,
        batch_size: BatchOption = None,
        num_workers: WorkersOption = None,
        output: OutputOption = None,
        accelerator: AcceleratorOption = "auto",
    ) -> None:
        from visionkit_core.workflows.evaluate import evaluate

        doc = evaluate(stage, ckpt, data, batch_size, num_workers, output, accelerator)
        typer.echo(json.dumps(doc["metrics"], indent=2))
        if doc["skipped_images"]:
            shown = ", ".join(doc["skipped_files"][:10])
            typer.echo(f"Skipped {doc['skipped_images']} unreadable samples: {shown}", err=True)
        typer.echo(f"Written: {doc['output']}")

    return command


def _predict(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Image files and/or folders (searched recursively).", show_default=False),
    ],
    ckpt: CkptOption,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write: FILE.csv / FILE.json (classification, detection) or a folder "
            "(segmentation masks); default: a table on stdout.",
        ),
    ] = None,
    topk: Annotated[int, typer.Option("--topk", "-k", help="Classes to report per image.")] = 5,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Score threshold (detection boxes, multi-label sets).")
    ] = None,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write colour overlays / drawn boxes with the output.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 32,
    num_workers: WorkersOption = None,
    accelerator: AcceleratorOption = "auto",
) -> None:
    """Predict with a checkpoint; needs no other flag (the checkpoint describes model, data and task)."""
    if topk < 1:
        raise UsageError(f"--topk must be at least 1, got {topk}")
    from visionkit_core.workflows.predict import predict

    options = {"topk": topk, "threshold": threshold, "overlay": overlay}
    result = predict(ckpt, inputs, output, options, batch_size, num_workers, accelerator)
    for path in result.unreadable:
        typer.echo(f"warning: skipped unreadable image {path!r}", err=True)
    for line in result.lines:
        typer.echo(line, err=output is not None)
    if result.unreadable and not result.predicted:
        sys.exit(1)


def _list_plugins(as_json: JsonOption = False) -> None:
    """List every plugin: distribution, version, hooks, registered names, load errors."""
    from visionkit_core import HOOKSPEC_VERSION, __version__

    plugins = get_plugins()
    plugins.registry  # noqa: B018 - fills each plugin's "registered"
    infos = list(plugins.infos.values())
    if as_json:
        doc = {"visionkit_version": __version__, "hookspec_version": HOOKSPEC_VERSION}
        typer.echo(json.dumps({**doc, "plugins": [i.as_dict() for i in infos]}, indent=2))
        return
    typer.echo(f"visionkit {__version__}, hookspec {HOOKSPEC_VERSION}")
    for info in infos:
        tag = " [built-in]" if info.builtin else ""
        typer.echo(f"\n{info.name}{tag}  ({info.distribution} {info.version})  {info.status}")
        if info.hooks:
            typer.echo(f"  hooks:      {', '.join(info.hooks)}")
        if info.registered:
            typer.echo(f"  registered: {', '.join(info.registered)}")
        for err in info.errors:
            typer.echo(f"  error:      {err}")


def _component_group(kind: str, noun: str) -> typer.Typer:
    """``visionkit <group> list``: the registered components of ``kind``."""
    app = typer.Typer(help=f"Inspect registered {noun}.", no_args_is_help=True)

    @app.command(
        "list", help=f"List {noun}: static names, and dynamic namespaces (expanded with --namespace)."
    )
    def list_components(
        namespace: Annotated[
            str | None,
            typer.Option("--namespace", "-n", help="Only this namespace (lists dynamic ones in full)."),
        ] = None,
        pattern: Annotated[
            str | None, typer.Option("--filter", "-f", help="fnmatch pattern, e.g. 'convnext*'.")
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        registry = get_plugins().registry
        comps = registry.listing(kind, namespace, pattern)
        providers = [p for p in registry.providers(kind) if namespace is None]
        if as_json:
            named = [(c.qualname, c) for c in comps] + [(f"{p.namespace}:*", p) for p in providers]
            rows = [
                {
                    "name": n,
                    "plugin": c.origin.plugin,
                    "distribution": c.origin.distribution,
                    "description": c.description,
                }
                for n, c in named
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        width = max([len(c.qualname) for c in comps] + [len(p.namespace) + 2 for p in providers] + [8])
        for c in comps:
            desc = f"  {c.description}" if c.description and namespace is None else ""
            typer.echo(f"{c.qualname:<{width}}  [{c.origin.plugin}]{desc}")
        for p in providers:
            typer.echo(
                f"{p.namespace + ':*':<{width}}  [{p.origin.plugin}]  {p.description} "
                f"(list with --namespace {p.namespace})"
            )
        if not comps and not providers:
            typer.echo(f"no {noun} match", err=True)

    return app
