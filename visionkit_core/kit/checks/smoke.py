"""The smoke runs of ``visionkit plugins check``: tiny real runs through the core's own code.

- backbone: built with ``num_classes=3``; one forward of a ``(1, 3, 32, 32)`` batch gives ``(1, 3)``;
  one that takes ``features_only`` also gives the feature maps it declares (``smoke:features``).
- dataset: built with ``batch_size=4, image_size=32``; ``data_info()``, ``data_spec()`` and
  ``preprocessing()`` answer; one train and one val batch hold 3-channel images and, in a tuple
  batch, a truth :class:`~visionkit_core.plugin.contract.Sample` (or a list of them; a bare
  tensor, hookspec 1.1's ``(images, labels)``, passes with a deprecation note);
  ``predict_dataset(files, preprocessing)`` reads two PNGs.
- task: :func:`~visionkit_core.run.assemble.run_train` trains one batch (32 px, batch 4) of its
  ``default_data`` (or ``--data``) with its ``default_backbone``; from that checkpoint alone,
  validate, test (when the data has a test split), predict two PNGs and export every format
  of ``TaskSpec.export_formats`` with ``visionkit export``.

Each phase is one :class:`CheckResult` naming it (``smoke:predict``). Output of the runs is
captured; a failure reports the exception and where it was raised. A phase named in ``skip``
(``plugins check --skip smoke:export-onnx``) is not run and reported as skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit_core.kit.checks.report import CheckResult, describe_error

if TYPE_CHECKING:
    from visionkit_core.plugin.manager import Plugins
    from visionkit_core.plugin.registry import Component

IMAGE_SIZE = 32
BATCH_SIZE = 4
#: Lightning limits that keep a smoke run to one batch per stage.
ONE_BATCH = {"limit_train_batches": 1, "limit_val_batches": 1, "limit_test_batches": 1}
_EXTENSIONS = {"onnx": ".onnx", "torchscript": ".pt"}
_CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")


#: The smoke phases by name (``smoke:export-FORMAT`` too, one per format of a task's
#: ``TaskSpec.export_formats``): what ``skip`` may name.
PHASES = (
    "smoke:forward",
    "smoke:features",
    "smoke:setup",
    "smoke:batch",
    "smoke:predict-dataset",
    "smoke:train",
    "smoke:validate",
    "smoke:test",
    "smoke:predict",
    "smoke:init-from",
    "smoke:resume",
)
SKIPPED = "not run (--skip)"


class Skip(Exception):
    """A phase that cannot run here (no data, an optional extra missing); not a failure."""


def phase(comp: Component, check: str, run: Callable[[], str], skip: Collection[str] = ()) -> CheckResult:
    """Run one phase quietly; its result is ok (with ``run``'s message), skip or FAIL."""
    if check in skip:
        return _skipped(comp, check, SKIPPED)
    started = time.perf_counter()
    captured = io.StringIO()
    status, message = "ok", ""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), _quiet_logs():
            with contextlib.redirect_stderr(captured):
                warnings.simplefilter("ignore")
                message = run()
    except Skip as skip:
        status, message = "skip", str(skip)
    except BaseException as err:  # SystemExit from a plugin is a failure too
        if isinstance(err, KeyboardInterrupt):
            raise
        status, message = "FAIL", describe_error(err)
    took = time.perf_counter() - started
    return CheckResult(comp.origin.plugin, comp.kind, comp.qualname, check, status, message, took)  # type: ignore[arg-type]


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Lightning's INFO notices ("GPU available: False") would bury the check lines."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def one_eval_batch(plugins: Plugins) -> Iterator[None]:
    """Validate and test on one batch: a plugin (through the public ``visionkit_default_callbacks``
    hook) whose callback sets the Trainer's batch limits when a validate/test run is set up."""
    from lightning.pytorch.callbacks import Callback

    from visionkit_core.plugin.hookspecs import hookimpl

    class OneBatch(Callback):
        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if stage in ("validate", "test"):
                trainer.limit_val_batches = trainer.limit_test_batches = 1

    class Limits:
        @hookimpl
        def visionkit_default_callbacks(self, stage: str) -> list[Any]:
            return [OneBatch()] if stage in ("validate", "test") else []

    name = "visionkit-plugins-check-limits"
    plugins.pm.register(Limits(), name=name)
    try:
        yield
    finally:
        plugins.pm.unregister(name=name)


def _skipped(comp: Component, check: str, why: str) -> CheckResult:
    return CheckResult(comp.origin.plugin, comp.kind, comp.qualname, check, "skip", why)


# -- backbones -----------------------------------------------------------------------------


def smoke_backbone(
    plugins: Plugins, comp: Component, data: str | None, tmp: Path, skip: Collection[str] = ()
) -> list[CheckResult]:
    """Build ``comp`` with a 3-way head and run one forward pass."""

    def run() -> str:
        import torch

        from visionkit_core.run.build import build_backbone

        model = build_backbone(comp.qualname, num_classes=3, plugins=plugins).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if shape != (1, 3):
            raise AssertionError(
                f"a (1, 3, 32, 32) batch must give (1, 3) logits with num_classes=3, got {shape}"
            )
        params = sum(p.numel() for p in model.parameters())
        return f"(1, 3, 32, 32) -> (1, 3) logits, {params / 1e6:.2f}M parameters"

    def features() -> str:  # a backbone declaring features_only: its maps are the levels it declares
        from visionkit_core.kit.backbones import FeatureBackbone, check_feature_maps, feature_levels
        from visionkit_core.run.build import call_with_accepted

        module = call_with_accepted(comp.load(), {"num_classes": 0, "features_only": True}, {})
        return check_feature_maps(FeatureBackbone(module, feature_levels(module, comp.qualname)), IMAGE_SIZE)

    from visionkit_core.kit.backbones import gives_features

    results = [phase(comp, "smoke:forward", run, skip)]
    if gives_features(comp.load()):
        results.append(phase(comp, "smoke:features", features, skip))
    return results


# -- datasets ------------------------------------------------------------------------------


def dataset_root(plugins: Plugins, comp: Component, data: str | None, tmp: Path) -> str | None:
    """The ``root`` to build ``comp`` with: ``--data`` or a generated ImageFolder tree when it is
    the dataset claiming them, else ``None`` (a named dataset); a required root with neither skips."""
    from visionkit_core.run.convert import option_specs

    found = option_specs(comp.load())
    spec = found[0].get("root") if found else None
    if spec is None:
        return None  # a named dataset: its own data
    if data is not None:
        from visionkit_core.run.resolve import resolve_data

        chosen, root = resolve_data(data, plugins)
        if chosen.qualname == comp.qualname and root is not None:
            return root
    tree = tmp / "imagefolder"
    if not tree.exists():
        from visionkit_core.kit.checks.images import make_imagefolder

        make_imagefolder(tree, classes=("a", "b"), per_class=6, splits=("train", "val", "test"))
    claimed = plugins.claim_data(tree)
    if claimed is not None and plugins.registry.resolve("dataset", claimed).qualname == comp.qualname:
        return str(tree)
    if not spec.required:
        return None
    raise Skip(
        f"needs a data folder in its layout: run `visionkit plugins check {comp.origin.plugin} --data DIR`"
    )


def build_datamodule(comp: Component, root: str | None) -> Any:
    """The datamodule ``comp`` makes for a smoke run (tiny images, small batches, no workers)."""
    from visionkit_core.run.build import call_with_accepted

    provided = {
        "root": root,
        "batch_size": BATCH_SIZE,
        "image_size": IMAGE_SIZE,
        "val_split": 0.25,
        "seed": 0,
        "num_workers": 0,
        "on_bad_image": "skip",
    }
    return call_with_accepted(comp.load(), provided, {})


def smoke_dataset(
    plugins: Plugins, comp: Component, data: str | None, tmp: Path, skip: Collection[str] = ()
) -> list[CheckResult]:
    """Build the datamodule, read its declarations, take one batch, read two files for predict."""
    state: dict[str, Any] = {}

    def setup() -> str:
        from visionkit_core.errors import UsageError
        from visionkit_core.plugin.contract import DataInfo, DataSpec
        from visionkit_core.run.convert import option_specs

        root = dataset_root(plugins, comp, data, tmp)
        try:
            dm = build_datamodule(comp, root)
            dm.prepare_data()
            dm.setup("fit")
        except UsageError as err:
            found = option_specs(comp.load())
            if root is None and found is not None and "root" in found[0]:
                # an optional root the dataset cannot do without: a folder of its layout is needed
                first = (str(err).strip().splitlines() or [""])[0]
                hint = f"run `visionkit plugins check {comp.origin.plugin} --data DIR`"
                raise Skip(f"{first}; {hint}") from None
            raise
        info, spec, prep = dm.data_info(), dm.data_spec(), dm.preprocessing()
        if not isinstance(info, DataInfo):
            raise TypeError(f"data_info() must return a visionkit_core.DataInfo, got {type(info).__name__}")
        if not isinstance(spec, DataSpec):
            raise TypeError(f"data_spec() must return a visionkit_core.DataSpec, got {type(spec).__name__}")
        try:
            json.dumps(prep)
        except TypeError as err:
            raise TypeError(
                f"preprocessing() must be plain values (it goes into checkpoints): {err}"
            ) from None
        state.update(dm=dm, spec=spec, prep=prep)
        return f"{len(info.class_names)} classes, splits {', '.join(spec.splits)}, {spec.batch} batches"

    def batches() -> str:
        dm, spec = state["dm"], state["spec"]
        shapes, truths = [], set()
        for stage in ("train", "val"):
            batch = next(iter(getattr(dm, f"{stage}_dataloader")()))
            hook = getattr(dm, "on_before_batch_transfer", None)  # a LightningDataModule's
            batch = hook(batch, 0) if callable(hook) else batch
            shapes.append(f"{stage} {_image_shape(batch[spec.image_key])}")
            if spec.batch == "tuple" and isinstance(batch, (list, tuple)) and len(batch) > 1:
                truths.add(_truth_kind(batch[1]))
        return "; ".join([", ".join(shapes), *sorted(truths)])

    def predict_files() -> str:
        from visionkit_core.kit.checks.images import write_images

        make = getattr(type(state["dm"]), "predict_dataset", None)
        if make is None:
            raise AttributeError(
                "the datamodule class has no classmethod predict_dataset(files, preprocessing)"
            )
        files = write_images(tmp / f"{_safe(comp.qualname)}-inputs", 2)
        dataset = make(files, state["prep"])
        sample = dataset[0]
        missing = {"image", "ok", "size"} - set(sample)
        if missing:
            raise KeyError(f"predict_dataset samples must hold image, ok and size; missing {sorted(missing)}")
        return f"{len(dataset)} files -> samples of {_image_shape(sample['image'])}"

    results = [phase(comp, "smoke:setup", setup, skip)]
    for check, run in (("smoke:batch", batches), ("smoke:predict-dataset", predict_files)):
        if results[0].status != "ok":
            results.append(_skipped(comp, check, f"setup {'failed' if not results[0].ok else 'skipped'}"))
        else:
            results.append(phase(comp, check, run, skip))
    return results


def _truth_kind(truth: Any) -> str:
    """What a tuple batch's truth is: a Sample (its keys) or a list of them; a bare tensor (hookspec
    1.1's ``(images, labels)``) is deprecated; anything else is a task's own (noted)."""
    import torch

    if isinstance(truth, dict):
        return f"truth Sample {{{', '.join(map(str, truth))}}}"
    if isinstance(truth, (list, tuple)) and truth and all(isinstance(t, dict) for t in truth):
        return f"truth {len(truth)} Samples"
    if isinstance(truth, torch.Tensor):
        return (
            "truth a bare tensor: deprecated, give (images, Sample) batches, e.g. {'label': labels} "
            "(docs/plugins.md)"
        )
    return f"truth a {type(truth).__name__}: not a Sample (the task's own; docs/plugins.md)"


def _image_shape(images: Any) -> str:
    import torch

    if isinstance(images, (list, tuple)) and images and isinstance(images[0], torch.Tensor):
        bad = [tuple(im.shape) for im in images if im.ndim != 3 or im.shape[0] != 3]
        if bad:
            raise ValueError(f"images must be (3, H, W) tensors, got {bad[0]}")
        return f"{len(images)} x (3, H, W) {images[0].dtype}"
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (or a list of tensors), got {type(images).__name__}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must be (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    return f"{tuple(images.shape)} {images.dtype}"


# -- tasks ---------------------------------------------------------------------------------


def smoke_task(
    plugins: Plugins, comp: Component, data: str | None, tmp: Path, skip: Collection[str] = ()
) -> list[CheckResult]:
    """Train one batch, then validate, test, predict and export from the checkpoint alone."""
    from visionkit_core.plugin.contract import task_spec_of

    spec = task_spec_of(comp.load())
    if spec is None:
        return [_skipped(comp, "smoke:train", "no TaskSpec (see the contract check)")]
    data_name = data or spec.default_data
    if data_name is None:
        why = (
            f"no default_data in its TaskSpec: run `visionkit plugins check {comp.origin.plugin} --data DIR`"
        )
        return [_skipped(comp, "smoke:train", why)]
    work = tmp / _safe(comp.qualname)
    state: dict[str, Any] = {}

    def fit(run: str, *, validate: bool = True, **changes: Any) -> dict[str, Any]:
        """One smoke fit (one batch an epoch) into ``work/run``; its summary. ``validate=False``: no
        validation (init-from and resume check the weights and the loop state, smoke:train the rest)."""
        from visionkit_core.plugin.manager import use_plugins
        from visionkit_core.run.assemble import run_train
        from visionkit_core.run.config import RunConfig

        trainer = dict(ONE_BATCH) if validate else {**ONE_BATCH, "limit_val_batches": 0}

        config = RunConfig(
            task=comp.qualname,
            backbone=spec.default_backbone,  # type: ignore[arg-type] # None: the core's choice
            data=data_name,
            epochs=1,
            batch_size=BATCH_SIZE,
            image_size=IMAGE_SIZE,
            seed=0,
            accelerator="cpu",
            devices="1",
            loggers=[],
            callbacks=[],
            num_workers=0,
            run_dir=str(work / run),
            options={"trainer": trainer},
        )
        with use_plugins(plugins):
            return run_train(
                dataclasses.replace(config, **changes), plugins=plugins, echo=lambda _: None
            ).summary

    def train() -> str:
        summary = fit("run")
        ckpt = summary.get("last_checkpoint") or summary.get("best_checkpoint")
        if not ckpt or not Path(ckpt).is_file():
            raise FileNotFoundError(
                f"the run wrote no checkpoint (summary: {summary.get('last_checkpoint')})"
            )
        state["ckpt"] = Path(ckpt)
        metric = summary.get("metrics", {}).get(spec.monitor)
        shown = f", {spec.monitor} {metric:.3f}" if isinstance(metric, (int, float)) else ""
        return f"1 batch of {data_name} with {summary.get('backbone', spec.default_backbone)}{shown}"

    def resume() -> str:
        """``--resume last --epochs 2`` continues the smoke run (extending it, as users do)."""
        import torch

        summary = fit("run", validate=False, resume="last", epochs=2)
        saved = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
        if saved.get("epoch") != 1:
            raise AssertionError(f"the resumed run ended at epoch {saved.get('epoch')}, not 1 (of 0..1)")
        return f"--resume last --epochs 2: continued to epoch 2, global step {saved.get('global_step')}"

    def init_from() -> str:
        """``--init-from CKPT`` reaches the task: trained at lr 0, its parameters are the checkpoint's."""
        import torch

        from visionkit_core.errors import UsageError

        try:
            summary = fit("init-from", validate=False, init_from=str(state["ckpt"]), lr=0.0)
        except UsageError as err:
            if comp.qualname in str(err) or comp.name in str(err):
                return f"refused, naming the task: {str(err).splitlines()[0][:100]}"
            raise AssertionError(f"--init-from refused without naming the task: {err}") from None
        given = torch.load(state["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
        got = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        names = [k for k, v in given.items() if v.is_floating_point() and "running_" not in k and k in got]
        moved = [k for k in names if not torch.equal(given[k], got[k])]
        if not names or len(moved) > len(names) // 2:
            raise AssertionError(
                f"--init-from did not reach the task: {len(moved)} of {len(names)} tensors differ from "
                f"the checkpoint's after a step at lr 0 (e.g. {moved[:3]}); pass `weights` to "
                "TaskBase.load_weights_into"
            )
        return f"--init-from: {len(names) - len(moved)}/{len(names)} tensors from the checkpoint"

    def evaluate(stage: str) -> Callable[[], str]:
        def run() -> str:
            from visionkit_core.plugin.manager import use_plugins
            from visionkit_core.workflows.evaluate import evaluate as run_stage

            with use_plugins(plugins), one_eval_batch(plugins):
                if stage == "test" and "test" not in _splits(plugins, data_name):
                    raise Skip(f"{data_name} has no test split")
                doc = run_stage(
                    stage,
                    state["ckpt"],
                    batch_size=BATCH_SIZE,
                    num_workers=0,
                    output=work / f"{stage}.json",
                    accelerator="cpu",
                )
            metrics = doc.get("metrics", doc) if isinstance(doc, dict) else {}
            keys = sorted(k for k in metrics if isinstance(k, str) and "/" in k)
            return f"{len(keys)} metrics ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"

        return run

    def predict() -> str:
        from visionkit_core.kit.checks.images import write_images
        from visionkit_core.plugin.manager import use_plugins
        from visionkit_core.workflows.predict import predict as run_predict

        files = write_images(work / "inputs", 2)
        kind = spec.predict_outputs[0] if spec.predict_outputs else ".json"
        output = work / ("predictions" if kind == "dir" else f"predictions{kind}")
        with use_plugins(plugins):
            result = run_predict(
                state["ckpt"], files, output=output, batch_size=2, num_workers=0, accelerator="cpu"
            )
        if result.predicted != len(files):
            raise AssertionError(f"predicted {result.predicted} of {len(files)} readable files")
        if not output.exists():
            raise FileNotFoundError(f"write_predictions wrote nothing to {output.name}")
        return f"{len(files)} files -> {output.name}"

    def export(fmt: str) -> Callable[[], str]:
        def run() -> str:  # through `visionkit export`, the command a plugin (visionkit_export) adds
            import typer

            from visionkit_core.errors import MissingDependencyError
            from visionkit_core.plugin.manager import use_plugins

            app = typer.Typer(callback=lambda: None)  # a group, whatever commands the plugins add
            plugins.add_commands(app)
            if "export" not in {command.name for command in app.registered_commands}:
                raise Skip("no plugin adds `visionkit export` (visionkit_export is not loaded)")
            target = work / f"model{_EXTENSIONS.get(fmt, '.' + fmt)}"
            args = ["export", "--ckpt", str(state["ckpt"]), "--format", fmt, "--output", str(target)]
            try:
                with use_plugins(plugins), contextlib.redirect_stdout(io.StringIO()) as out:
                    app(args=args, prog_name="visionkit", standalone_mode=False)
            except MissingDependencyError as err:
                raise Skip(str(err)) from None
            said = (out.getvalue().splitlines() or [""])[0]  # Exported onnx to PATH (max abs difference ...)
            return f"{target.name}, {said.rpartition('(')[2].rstrip(')')}"

        return run

    phases: list[tuple[str, Callable[[], str]]] = [
        ("smoke:train", train),
        ("smoke:validate", evaluate("validate")),
        ("smoke:test", evaluate("test")),
        ("smoke:predict", predict),
        ("smoke:init-from", init_from),
        ("smoke:resume", resume),
    ]
    phases += [(f"smoke:export-{fmt}", export(fmt)) for fmt in spec.export_formats]
    results: list[CheckResult] = []
    for check, run in phases:
        if check != "smoke:train" and "ckpt" not in state and check not in skip:
            why = "was skipped" if "smoke:train" in skip else "did not pass"
            results.append(_skipped(comp, check, f"no checkpoint: smoke:train {why}"))
            continue
        results.append(phase(comp, check, run, skip))
    return results


def _splits(plugins: Plugins, data: str) -> tuple[str, ...]:
    from visionkit_core.run.resolve import resolve_data

    comp, root = resolve_data(data, plugins)
    return tuple(build_datamodule(comp, root).data_spec().splits)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
