"""Export a checkpoint of any task to ONNX, TorchScript or OpenVINO (optionally INT8), checked first.

The task says what to export (:class:`~visionkit_core.plugin.contract.ExportSpec`: module,
example and check inputs, names, dynamic axes); this module exports it, reloads the file
with the target runtime, compares every output on the check input (another batch size and,
where the axes are dynamic, another image size) and only then moves the file into place.
The sidecar ``<output>.json`` holds the task, data-derived values and preprocessing, so the
model can be served without visionkit. INT8 artefacts differ from PyTorch by design: their
proof is ``export --check`` (:mod:`visionkit_export.check`), which scores them with
the task's own metric on the validation split.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionkit_core.errors import UsageError, VisionkitError, require

FORMATS = ("onnx", "torchscript", "openvino")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "openvino": ".xml"}


class ExportError(VisionkitError):
    """The exported model does not reproduce PyTorch's outputs."""


@dataclass
class ExportResult:
    """What ``export`` wrote: the artefact, its largest output difference from PyTorch, and INT8 facts."""

    path: Path
    diff: float
    int8: bool = False
    calibration_images: int = 0

    def __iter__(self) -> Iterator[Any]:
        """``path, diff = export_checkpoint(...)``, as before INT8 existed."""
        return iter((self.path, self.diff))


def check_export_dependencies(fmt: str, int8: bool = False) -> None:
    """Refuse early, with the pip command, when a format is unknown or a package it needs is missing."""
    from_refused = {"tensorrt": "TensorRT", "coreml": "Core ML"}
    if fmt in from_refused:
        reason = {
            "tensorrt": "it needs an NVIDIA GPU and the tensorrt package; export onnx and build an engine "
            "with `trtexec --onnx=MODEL.onnx` on the target machine",
            "coreml": "it needs coremltools on macOS; export onnx or torchscript and convert it with "
            "coremltools on a Mac",
        }[fmt]
        raise UsageError(f"--format {fmt}: {from_refused[fmt]} export is not supported here: {reason}")
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if int8 and fmt == "torchscript":
        raise UsageError("--int8 works with --format onnx (onnxruntime) or openvino (NNCF), not torchscript")
    if fmt in ("onnx", "openvino"):
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "export", f"{fmt} export (and its check with onnxruntime)")
    if fmt == "openvino":
        require("openvino", "export", "OpenVINO export")
        if int8:
            require("nncf", "export", "OpenVINO INT8 quantisation")


def export_checkpoint(
    ckpt: Path,
    fmt: str,
    output: Path | None = None,
    *,
    int8: bool = False,
    calibration_images: int = 300,
    data: str | None = None,
) -> ExportResult:
    """Export, reload with the target runtime and compare on the check input (fp32: within the task's
    tolerance, else nothing is written); ``int8`` quantises on ``calibration_images`` train images."""
    import torch

    from visionkit_core.kit.exported import load_exported
    from visionkit_core.training.checkpoint import write_json
    from visionkit_core.workflows.inference import load_checkpoint

    check_export_dependencies(fmt, int8)
    if int8 and calibration_images < 1:
        raise UsageError(f"--calibration-images must be at least 1, got {calibration_images}")
    loaded = load_checkpoint(ckpt)
    spec = export_spec_of(loaded, fmt)
    module = spec.module.eval()
    for param in module.parameters():
        param.requires_grad_(False)  # an inference graph: no autograd state in the exported model
    check = _as_tuple(spec.check_input)
    with torch.no_grad():
        expected = [t.detach().numpy() for t in _as_tuple(module(*check))]
    calibration = None
    if int8:
        calibration = calibration_inputs(loaded, spec, data, calibration_images)
    out = output or ckpt.with_name(ckpt.stem + (".int8" if int8 else "") + SUFFIX[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        _write(fmt, module, spec, tmp, calibration)
        got = _as_tuple(load_exported(tmp, fmt, spec.input_names, spec.output_names)(*check))
        if len(got) != len(expected):
            raise ExportError(f"exported {fmt} model gives {len(got)} outputs, PyTorch {len(expected)}")
        diff = max(
            float(abs(g.numpy() - e).max()) if e.size else 0.0 for g, e in zip(got, expected, strict=True)
        )
        if not int8 and not diff <= spec.tolerance:  # INT8 differs by design: --check judges it
            raise ExportError(
                f"exported {fmt} model differs from PyTorch by {diff:.3g} (> {spec.tolerance}); "
                "nothing was written"
            )
        for src, dst in _files(fmt, tmp, out):
            os.replace(src, dst)
    finally:
        for src, _ in _files(fmt, tmp, out):
            if src.exists():
                src.unlink()
    n_cal = len(calibration or [])
    extra = {"int8": int8, "calibration_images": n_cal}
    write_json(out.with_name(out.name + ".json"), {**sidecar(loaded, fmt, spec), **extra})
    return ExportResult(out, diff, int8, n_cal)


def export_spec_of(loaded: Any, fmt: str) -> Any:
    """The task's :class:`ExportSpec` at the checkpoint's input size, or a usage error."""
    spec_of = getattr(loaded.model, "export_spec", None)
    formats = loaded.spec.export_formats
    allowed = fmt in formats or (fmt == "openvino" and "onnx" in formats)  # IR is made from the ONNX graph
    if not allowed or not callable(spec_of):
        supported = ", ".join(formats) if callable(spec_of) else "none"
        raise UsageError(
            f"task {loaded.spec.name!r} cannot be exported to {fmt} (it supports: {supported}); "
            "use the checkpoint with `visionkit predict` instead"
        )
    return spec_of(loaded.image_size)


def _files(fmt: str, tmp: Path, out: Path) -> list[tuple[Path, Path]]:
    pairs = [(tmp, out)]
    if fmt == "openvino":  # the weights beside the IR
        pairs.append((tmp.with_suffix(".bin"), out.with_suffix(".bin")))
    return pairs


def _write(fmt: str, module: Any, spec: Any, path: Path, calibration: list[Any] | None) -> None:
    """Write ``module`` as ``fmt`` to ``path`` (INT8 when ``calibration`` is given)."""
    import tempfile

    from visionkit_export import formats

    example = _as_tuple(spec.example_input)
    if fmt == "torchscript":
        _export_torchscript(module, example, path)
        return
    if fmt == "onnx" and calibration is None:
        _export_onnx(module, example, path, spec)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        _export_onnx(module, example, fp32, spec)
        try:
            if fmt == "onnx":
                assert calibration is not None
                formats.quantize_onnx(fp32, path, spec.input_names, calibration)
            else:
                formats.onnx_to_openvino(fp32, path, calibration)
        except Exception as err:  # the converter's or quantiser's own words, without its traceback
            lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
            detail = "; ".join(lines[:6])[:500] or type(err).__name__
            step = "INT8 quantisation" if calibration is not None else "conversion"
            raise ExportError(
                f"{fmt} {step} failed ({type(err).__name__}: {detail}); "
                "try another --format or image size, or serve the checkpoint with PyTorch"
            ) from None


def sidecar(loaded: Any, fmt: str, spec: Any) -> dict[str, Any]:
    """What a server needs besides the model file: task, data-derived values, inputs and outputs."""
    return {
        "format": fmt,
        "task": loaded.spec.name,
        "class_names": loaded.class_names,
        "data_info": loaded.data_info.to_dict(),
        "preprocessing": loaded.preprocessing,
        "input_names": list(spec.input_names),
        "output_names": list(spec.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes.items()},
        "backbone": loaded.meta.get("backbone"),
        "visionkit_version": loaded.meta.get("visionkit_version"),
        "image_size": loaded.image_size,
        # what `visionkit serve --model` rebuilds the task's pre- and postprocessing from
        "components": loaded.meta.get("components", {}),
        "hyper_parameters": _plain(dict(loaded.model.hparams)),
        **spec.sidecar,
    }


def _plain(hparams: dict[str, Any]) -> dict[str, Any]:
    """The JSON-representable hyperparameters (a task is rebuilt from them, as from a checkpoint's)."""
    import json

    plain = {}
    for key, value in hparams.items():
        if str(key).startswith("_") or key in ("pretrained", "weights"):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        plain[str(key)] = value
    return plain


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(value)
    if isinstance(value, dict):
        return tuple(value.values())
    return (value,)


def _export_onnx(module: Any, example: tuple[Any, ...], path: Path, spec: Any) -> None:
    import torch

    dims = {name: spec.dynamic_axes.get(name, {}) for name in spec.input_names}
    dynamic_shapes = tuple(
        {axis: torch.export.Dim.DYNAMIC for axis in dims[name]} or None for name in spec.input_names
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                example,
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ExportError(
                f"torch.onnx could not export this model ({type(err).__name__}: {first[:300]}); "
                "try --format torchscript, or use the checkpoint with `visionkit predict`"
            ) from None
    assert program is not None
    program.save(str(path))


def _export_torchscript(module: Any, example: tuple[Any, ...], path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(module)
        except Exception:
            scripted = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(scripted, str(path))


# -- INT8 calibration: the same substitution as ``export --check``, with a recorder in place of
# the runtime, collects training images exactly as the exported graph receives them


def calibration_inputs(loaded: Any, spec: Any, data: str | None, count: int) -> list[tuple[Any, ...]]:
    """``count`` training images as the exported graph receives them (one numpy tuple per image)."""
    from visionkit_core.kit.exported import substitute
    from visionkit_core.workflows.evaluate import eval_trainer
    from visionkit_core.workflows.inference import datamodule_for

    dm = datamodule_for(loaded, data, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    per_batch = getattr(loader, "batch_size", None) or 1
    recorded: list[tuple[Any, ...]] = []

    def record(*inputs: Any) -> Any:
        for i in range(len(inputs[0])):
            recorded.append(tuple(t[i : i + 1].detach().cpu().float().numpy() for t in inputs))
        return spec.module(*inputs)

    substitute(loaded.model, spec, record)
    try:
        trainer = eval_trainer(
            "validate", "cpu", limit_val_batches=math.ceil(count / per_batch), enable_progress_bar=False
        )
        trainer.validate(loaded.model, dataloaders=loader, verbose=False)
    finally:
        del loaded.model.forward  # the task's own forward again
    if not recorded:
        raise UsageError("no training images to calibrate INT8 on; give --data with a train split")
    return recorded[:count]
