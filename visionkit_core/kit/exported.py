"""Exported models run back in PyTorch: any artefact ``visionkit export`` wrote, as a torch module.

:func:`load_exported` loads an ONNX, TorchScript or OpenVINO file with its runtime behind the
interface of the task's :class:`~visionkit_core.plugin.contract.ExportSpec` module (tensors in,
tensor(s) out); :func:`substitute` puts it where the task's forward ran its network, so the
task's own steps, metrics and prediction writers run unchanged on it (``export --check``,
``visionkit serve --model``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionkit_core.errors import UsageError


class ExportedModel(nn.Module):
    """An exported artefact behind the ExportSpec module's interface: tensors in, tensor(s) out."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        input_names: Sequence[str],
        output_names: Sequence[str],
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.path, self.fmt = Path(path), fmt
        self.input_names, self.output_names = list(input_names), list(output_names)
        if fmt not in ("onnx", "torchscript", "openvino"):
            raise ValueError(f"unknown exported format {fmt!r}")
        try:
            self._load(threads)
        except Exception as err:  # a corrupt or foreign file: the runtime's first words, no traceback
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise UsageError(
                f"{str(path)!r} is not a {fmt} model its runtime can load ({type(err).__name__}: {first}); "
                "give a file `visionkit export --format " + fmt + "` wrote"
            ) from None

    def _load(self, threads: int | None) -> None:
        path, fmt = self.path, self.fmt
        if fmt == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        elif fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the format still loads
                self._scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        elif fmt == "openvino":
            import openvino as ov

            # f32 arithmetic where the IR is f32 (CPUs with bf16 units would otherwise round to bf16)
            config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._compiled = ov.Core().compile_model(str(path), "CPU", config)

    def forward(self, *inputs: torch.Tensor) -> Any:
        if self.fmt == "torchscript":
            with torch.no_grad():
                return self._scripted(*inputs)
        arrays = [t.detach().cpu().float().numpy() for t in inputs]
        if self.fmt == "onnx":
            feed = dict(zip(self.input_names, arrays, strict=True))
            outs = self._session.run(self.output_names, feed)
        else:
            result = self._compiled(arrays)
            outs = [result[out] for out in self._compiled.outputs]
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors


def load_exported(
    path: Path, fmt: str, input_names: Sequence[str], output_names: Sequence[str], threads: int | None = None
) -> ExportedModel:
    """Load ``path`` with its runtime (onnxruntime, torch.jit, OpenVINO) as a torch module
    (``threads``: the runtime's intra-op threads; default: its own choice)."""
    return ExportedModel(path, fmt, input_names, output_names, threads)


def substitute(model: Any, spec: Any, exported: Any) -> None:
    """Make ``model.forward`` run ``exported`` where the task's own forward ran its network
    (``del model.forward`` restores the task's own)."""
    import functools

    if spec.task_forward is not None:
        model.forward = functools.partial(spec.task_forward, exported)
    else:
        model.forward = exported
