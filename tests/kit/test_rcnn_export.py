"""kit.rcnn_export's fixed-shape Keypoint R-CNN decoding against torchvision's, in PyTorch and onnxruntime.

(ExportedRCNN itself is checked end to end by the instance-segmentation and keypoints export tests.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as torchvision_decoding

from visionkit_core.kit.rcnn_export import KEYPOINT_WINDOW, heatmaps_to_keypoints


def boxes(count: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    """``count`` xyxy boxes with sides in ``[low, high)`` (fractional, as predicted ones are)."""
    sides = torch.rand(count, 2, generator=gen) * (high - low) + low
    corner = torch.rand(count, 2, generator=gen) * 50
    return torch.cat([corner, corner + sides], 1)


def peaked(count: int, points: int, gen: torch.Generator) -> Tensor:
    """Heatmaps with one clear peak each (as a trained head gives), over noise."""
    yy, xx = torch.meshgrid(torch.arange(56.0), torch.arange(56.0), indexing="ij")
    centre = torch.rand(count, points, 2, 1, 1, generator=gen) * 56
    bump = 8 * torch.exp(-((yy - centre[:, :, 0]) ** 2 + (xx - centre[:, :, 1]) ** 2) / 8)
    return bump + 0.5 * torch.randn(count, points, 56, 56, generator=gen)


def assert_same(maps: Tensor, rois: Tensor) -> None:
    xy, scores = torchvision_decoding(maps, rois)
    got = heatmaps_to_keypoints(maps, rois)
    assert got.shape == (*maps.shape[:2], 3)
    assert torch.allclose(got[..., :2], xy[..., :2], atol=1e-4)
    assert torch.allclose(got[..., 2], scores, atol=1e-4)


def test_boxes_up_to_the_window_decode_as_torchvision_even_from_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    # from under a pixel (clamped to 1) to the window: maps shrunk and enlarged; noise has peaks everywhere
    assert_same(torch.randn(60, 5, 56, 56, generator=gen) * 3, boxes(60, 0.3, KEYPOINT_WINDOW, gen))


def test_larger_boxes_decode_as_torchvision_around_a_clear_peak() -> None:
    gen = torch.Generator().manual_seed(1)
    # the window is placed inside the box, at its edges too
    assert_same(peaked(60, 5, gen), boxes(60, KEYPOINT_WINDOW, 700, gen))
    corners = peaked(4, 2, gen)
    corners[:, 0, 0, 0] = corners[:, 1, -1, -1] = 50.0  # peaks at the heatmaps' first and last pixels
    assert_same(corners, boxes(4, 300, 500, gen))


def test_onnxruntime_decodes_as_pytorch(tmp_path: Path) -> None:
    import onnxruntime as ort

    class Decode(torch.nn.Module):
        def forward(self, maps: Tensor, rois: Tensor) -> Tensor:
            return heatmaps_to_keypoints(maps, rois)

    gen = torch.Generator().manual_seed(2)
    maps = torch.cat([torch.randn(8, 3, 56, 56, generator=gen), peaked(8, 3, gen)])
    rois = torch.cat([boxes(8, 1, KEYPOINT_WINDOW, gen), boxes(8, KEYPOINT_WINDOW, 600, gen)])
    path = tmp_path / "decode.onnx"
    batch = torch.export.Dim("rois")  # dynamic: traced on 2 boxes, run on 16
    program = torch.onnx.export(
        Decode(), (maps[:2], rois[:2]), dynamo=True, dynamic_shapes=({0: batch}, {0: batch}), verbose=False
    )
    assert program is not None
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    (got,) = session.run(None, dict(zip(names, [maps.numpy(), rois.numpy()], strict=True)))
    assert torch.allclose(torch.from_numpy(got), heatmaps_to_keypoints(maps, rois), atol=1e-4)
