"""Export targets beyond the graph itself: OpenVINO IR, INT8 quantisation, and running any artefact.

Every exported artefact can be loaded back as a torch callable (:func:`load_exported`) that takes
and returns tensors like the task's :class:`~visionkit_core.plugin.contract.ExportSpec` module, so
the export comparison and ``export --check`` treat ONNX Runtime, TorchScript and OpenVINO alike.
INT8 uses each runtime's own post-training quantisation: onnxruntime's ``quantize_static`` (QDQ,
per-channel weights) and NNCF's ``quantize`` for OpenVINO, both calibrated on real images.
"""

from __future__ import annotations

import shutil
import tempfile
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


def onnx_to_openvino(
    onnx_path: Path, xml_path: Path, calibration: list[tuple[np.ndarray, ...]] | None
) -> None:
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin``); with ``calibration``, NNCF INT8."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf

        dataset = nncf.Dataset(calibration, lambda item: list(item))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = nncf.quantize(model, dataset, subset_size=len(calibration))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def quantize_onnx(
    fp32: Path, out: Path, input_names: Sequence[str], calibration: list[tuple[np.ndarray, ...]]
) -> None:
    """onnxruntime static INT8 quantisation (QDQ, per-channel weights) calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else dict(zip(input_names, item, strict=True))

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # optional optimisation: quantise the plain graph when it cannot run
            shutil.copyfile(fp32, prepared)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
