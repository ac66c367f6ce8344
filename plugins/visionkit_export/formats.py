"""Export targets beyond the graph itself: OpenVINO IR and INT8 quantisation.

INT8 uses each runtime's own post-training quantisation: onnxruntime's ``quantize_static`` (QDQ,
per-channel weights) and NNCF's ``quantize`` for OpenVINO, both calibrated on real images.
Exported files are run back with :func:`visionkit_core.kit.exported.load_exported`.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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
