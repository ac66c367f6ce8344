"""Export a checkpoint to ONNX or TorchScript, verified against PyTorch before success.

The exported graph takes float32 RGB images in ``[0, 1]``, NCHW, already resized and
centre-cropped as the sidecar JSON describes; normalisation (mean/std) is inside the graph,
and the output is logits. The sidecar ``<output>.json`` holds class names and preprocessing
so the model can be served without visionkit.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from visionkit_core.errors import UsageError, VisionkitError

TOLERANCE = 1e-4


class ExportError(VisionkitError):
    """The exported model does not reproduce PyTorch's outputs."""


def _wrapped(model: Any) -> Any:
    import torch

    class Exported(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner.model
            self.register_buffer("mean", inner.norm_mean.detach().clone().float())
            self.register_buffer("std", inner.norm_std.detach().clone().float())

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner((images - self.mean) / self.std)  # type: ignore[no-any-return,operator]

    exported = Exported(model).eval()
    for param in exported.parameters():
        param.requires_grad_(False)  # an inference graph: no autograd state in the exported model
    return exported


def sidecar(meta: dict[str, Any], image_size: int, fmt: str, input_name: str = "images") -> dict[str, Any]:
    pre = meta["preprocessing"]
    return {
        "format": fmt,
        "class_names": list(meta["class_names"]),
        "input": {
            "name": input_name,
            "layout": "NCHW",
            "dtype": "float32",
            "channels": "RGB",
            "value_range": [0.0, 1.0],
            "resize_shorter_side_to": round(image_size / float(pre.get("crop_pct", 0.875))),
            "center_crop": [image_size, image_size],
            "interpolation": pre.get("interpolation", "bilinear"),
            "normalization": "inside the model",
            "mean": pre["mean"],
            "std": pre["std"],
        },
        "output": {"name": "logits", "shape": ["batch", len(meta["class_names"])], "softmax": False},
        "backbone": meta.get("backbone"),
        "visionkit_version": meta.get("visionkit_version"),
    }


def export_checkpoint(ckpt: Path, fmt: str, output: Path | None = None, seed: int = 0) -> tuple[Path, float]:
    """Export, reload with the target runtime, compare on a sample batch; return (path, max abs diff)."""
    import torch

    from visionkit_core.workflows.inference import load_checkpoint

    if fmt not in ("onnx", "torchscript"):
        raise UsageError(f"--format {fmt!r}: use onnx or torchscript")
    loaded = load_checkpoint(ckpt)
    size = loaded.image_size
    out = output or ckpt.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _wrapped(loaded.model)
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand(2, 3, size, size, generator=gen)
    check = torch.rand(3, 3, size, size, generator=gen)  # another batch size: the batch axis is dynamic
    with torch.no_grad():
        expected = model(check).numpy()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "onnx":
            _export_onnx(model, example, tmp)
            got = _run_onnx(tmp, check.numpy())
        else:
            _export_torchscript(model, example, tmp)
            got = torch.jit.load(str(tmp), map_location="cpu")(check).detach().numpy()  # type: ignore[no-untyped-call]
        diff = float(abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise ExportError(
                f"exported {fmt} model differs from PyTorch by {diff:.3g} (> {TOLERANCE}); "
                "nothing was written"
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    side = out.with_name(out.name + ".json")
    side.write_text(
        json.dumps(sidecar(loaded.meta | {"class_names": loaded.class_names}, size, fmt), indent=2) + "\n"
    )
    return out, diff


def _export_onnx(model: Any, example: Any, path: Path) -> None:
    import importlib.util

    import torch

    has_onnxscript = importlib.util.find_spec("onnxscript") is not None  # the dynamo exporter needs it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if has_onnxscript:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["images"],
                output_names=["logits"],
                dynamo=True,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
        else:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["logits"],
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )


def _run_onnx(path: Path, images: Any) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError(
            "ONNX export is verified with onnxruntime: pip install 'visionkit[export]'"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


def _export_torchscript(model: Any, example: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(model)
        except Exception:
            scripted = torch.jit.trace(model, example, check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(scripted, str(path))
