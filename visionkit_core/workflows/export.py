"""Export a checkpoint of any task to ONNX or TorchScript, verified against PyTorch before success.

The task says what to export (:class:`~visionkit_core.plugin.contract.ExportSpec`: module,
example and check inputs, names, dynamic axes); this module exports it, reloads the file
with the target runtime, compares every output on the check input (another batch size and,
where the axes are dynamic, another image size) and only then moves the file into place.
The sidecar ``<output>.json`` holds the task, data-derived values and preprocessing, so the
model can be served without visionkit.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from visionkit_core.errors import UsageError, VisionkitError, require

FORMATS = ("onnx", "torchscript")


class ExportError(VisionkitError):
    """The exported model does not reproduce PyTorch's outputs."""


def check_export_dependencies(fmt: str) -> None:
    """Refuse early, with the pip command, when a package the format needs is missing."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use onnx or torchscript")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "export", "ONNX export (and its check with onnxruntime)")


def export_checkpoint(ckpt: Path, fmt: str, output: Path | None = None) -> tuple[Path, float]:
    """Export, reload with the target runtime, compare on the check input; return (path, max abs diff)."""
    import torch

    from visionkit_core.training.checkpoint import write_json
    from visionkit_core.workflows.inference import load_checkpoint

    check_export_dependencies(fmt)
    loaded = load_checkpoint(ckpt)
    spec_of = getattr(loaded.model, "export_spec", None)
    if fmt not in loaded.spec.export_formats or not callable(spec_of):
        supported = ", ".join(loaded.spec.export_formats) if callable(spec_of) else "none"
        raise UsageError(
            f"task {loaded.spec.name!r} cannot be exported to {fmt} (it supports: {supported}); "
            "use the checkpoint with `visionkit predict` instead"
        )
    spec = spec_of(loaded.image_size)
    module = spec.module.eval()
    for param in module.parameters():
        param.requires_grad_(False)  # an inference graph: no autograd state in the exported model
    example, check = _as_tuple(spec.example_input), _as_tuple(spec.check_input)
    with torch.no_grad():
        expected = [t.detach().numpy() for t in _as_tuple(module(*check))]
    out = output or ckpt.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "onnx":
            _export_onnx(module, example, tmp, spec)
            got = _run_onnx(tmp, spec.input_names, spec.output_names, check)
        else:
            _export_torchscript(module, example, tmp)
            scripted = torch.jit.load(str(tmp), map_location="cpu")  # type: ignore[no-untyped-call]
            got = [t.detach().numpy() for t in _as_tuple(scripted(*check))]
        if len(got) != len(expected):
            raise ExportError(f"exported {fmt} model gives {len(got)} outputs, PyTorch {len(expected)}")
        diff = max(float(abs(g - e).max()) if e.size else 0.0 for g, e in zip(got, expected, strict=True))
        if not diff <= spec.tolerance:
            raise ExportError(
                f"exported {fmt} model differs from PyTorch by {diff:.3g} (> {spec.tolerance}); "
                "nothing was written"
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    write_json(out.with_name(out.name + ".json"), sidecar(loaded, fmt, spec))
    return out, diff


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
        **spec.sidecar,
    }


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


def _run_onnx(path: Path, input_names: list[str], output_names: list[str], inputs: tuple[Any, ...]) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in zip(input_names, inputs, strict=True)}
    return session.run(list(output_names), feed)


def _export_torchscript(module: Any, example: tuple[Any, ...], path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(module)
        except Exception:
            scripted = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(scripted, str(path))
