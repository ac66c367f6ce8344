"""Figures and images for evaluation callbacks: headless matplotlib, atomic PNG/CSV, logger upload.

The names are public from ``visionkit_core`` too (``from visionkit_core import save_png``).

matplotlib is used through its object API with the Agg canvas (no pyplot state, no global
backend switch), so plots work headless and never disturb a user's interactive session.
Nothing heavy is imported until a function is called.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit_core.training.checkpoint import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from visionkit_core.plugin.contract import MediaSample


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees a half-written file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getbuffer())
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def png_bytes(array: np.ndarray) -> bytes:
    """An ``(H, W)`` or ``(H, W, 3)`` uint8 array encoded as PNG (8-bit, or 16-bit for uint16)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, array: np.ndarray) -> None:
    """``array`` as a PNG file at ``path``, written atomically."""
    atomic_write_bytes(path, png_bytes(array))


def to_display(pl_module: Any, images: torch.Tensor) -> np.ndarray:
    """Model-input ``(N, C, H, W)`` images -> ``(N, H, W, C)`` (or ``(N, H, W)``) float32 in [0, 1].

    uint8 images are scaled by 1/255; float images go through ``pl_module.denormalize`` when
    the module has it, otherwise each is scaled to its own min-max range.
    """
    import torch

    denormalize = getattr(pl_module, "denormalize", None)
    if images.dtype == torch.uint8:
        shown = images.detach().float().cpu() / 255.0
    elif callable(denormalize):
        shown = denormalize(images)
        scale_255 = shown.dtype == torch.uint8
        shown = shown.detach().float().cpu()
        if scale_255 or shown.max() > 1.5:
            shown = shown / 255.0
    else:
        shown = images.detach().float().cpu()
        lo = shown.amin(dim=(1, 2, 3), keepdim=True)
        hi = shown.amax(dim=(1, 2, 3), keepdim=True)
        shown = (shown - lo) / (hi - lo).clamp_min(1e-8)
    shown = shown.clamp(0.0, 1.0).permute(0, 2, 3, 1)
    if shown.shape[-1] not in (3, 4):  # grey, or channels matplotlib cannot show: first one as grey
        shown = shown[..., 0]
    result: np.ndarray = shown.numpy()
    return result


def prediction_grid(images: Sequence[np.ndarray], captions: Sequence[str], correct: Sequence[bool]) -> Figure:
    """A grid of images titled with their captions (green when correct, red when wrong)."""
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(2.2 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(captions[i], fontsize=8, color="tab:green" if correct[i] else "tab:red")
    return fig


def _hwc_uint8(image: Any) -> np.ndarray:
    """A CHW tensor or HWC / HW array, uint8 or float in [0, 1], as an ``(H, W, 3)`` uint8 array."""
    import numpy as np

    if hasattr(image, "detach"):  # a torch tensor: channels first
        image = image.detach().cpu()
        image = image.permute(1, 2, 0) if image.ndim == 3 else image
        image = image.numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _plain(value: Any) -> Any:
    """A tensor (any device) or array as nested Python lists / numbers; None stays None."""
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return value.tolist() if hasattr(value, "tolist") else value


def _array(value: Any) -> np.ndarray | None:
    """A tensor (any device) or array-like as a numpy array; None stays None."""
    import numpy as np

    if value is None:
        return None
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


def name_of(index: int, class_names: Sequence[str] | None) -> str:
    """Class ``index``'s name, or the index as text where ``class_names`` has none."""
    return str(class_names[index]) if class_names and 0 <= index < len(class_names) else str(index)


def _keypoints(sample: Mapping[str, Any]) -> list[list[list[float]]] | None:
    """``[[x, y, visible], ...]`` per object of a Sample's ``keypoints`` (``(N, K, 2)`` with
    ``visibility`` ``(N, K)``, or ``(N, K, 3)`` with the third column as visibility)."""
    points = _plain(sample.get("keypoints"))
    if points is None:
        return None
    visibility = _plain(sample.get("visibility"))
    out = []
    for i, obj in enumerate(points):
        row = []
        for k, point in enumerate(obj):
            if visibility is not None:
                visible = float(visibility[i][k] > 0)
            else:
                visible = float(point[2] > 0) if len(point) > 2 else 1.0
            row.append([float(point[0]), float(point[1]), visible])
        out.append(row)
    return out


def media_sample_of(
    image: Any,
    truth: Mapping[str, Any] | None,
    pred: Mapping[str, Any] | None,
    class_names: Sequence[str] | None,
    caption: str = "",
) -> MediaSample:
    """One :class:`~visionkit_core.MediaSample` of an image and its truth and prediction
    :class:`~visionkit_core.plugin.contract.Sample` (either may be None), for any kind of task:

    - ``label``: captioned ``pred: <name> / true: <name>``, ``correct`` when they agree;
    - ``multi_hot``: captioned with the two label sets (space-separated names, ``-`` for none),
      ``correct`` when they are equal (a prediction with only ``probs`` is cut at 0.5);
    - ``mask``: ``true_mask`` / ``pred_mask``, captioned with the pixel accuracy (255 ignored);
    - objects (``boxes``, ``labels``, ``scores``): boxes, labels and scores, captioned with both
      counts; ``keypoints`` become ``true_keypoints`` / ``pred_keypoints``. Show only the
      predicted objects you want drawn (select them from ``pred`` first).

    ``image`` is a CHW tensor or an HWC array, uint8 or float in ``[0, 1]`` (what the model saw,
    denormalised); ``caption``, when given, replaces the one made here. Samples are per image
    (index a batched Sample first); tensors may be on any device.
    """
    from visionkit_core.plugin.contract import MediaSample

    truth, pred = _as_sample(truth, "multi_hot"), _as_sample(pred, "probs")
    if "label" in truth and "label" not in pred and "probs" in pred:
        probs = _plain(pred["probs"])
        pred = {**pred, "label": max(range(len(probs)), key=probs.__getitem__)}
    sample = MediaSample(image=_hwc_uint8(image))
    if "label" in truth or "label" in pred:
        text = _label_fields(sample, truth, pred, class_names)
    elif "multi_hot" in truth or "multi_hot" in pred or "probs" in pred:
        text = _multi_hot_fields(sample, truth, pred, class_names)
    elif "mask" in truth or "mask" in pred:
        text = _mask_fields(sample, truth, pred)
    else:
        text = _object_fields(sample, truth, pred)
    sample.caption = caption or text
    return sample


def _as_sample(value: Any, vector_key: str) -> Mapping[str, Any]:
    """A Sample of ``value``: itself, ``{}`` for None, or a bare tensor/array of the deprecated
    ``(images, labels)`` form: a class index as ``label``, a vector as ``vector_key``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    return {"label" if len(getattr(value, "shape", ())) == 0 else vector_key: value}


def _label_fields(sample: Any, truth: Mapping[str, Any], pred: Mapping[str, Any], names: Any) -> str:
    found = {"pred": _plain(pred.get("label")), "true": _plain(truth.get("label"))}
    if None not in found.values():
        sample.correct = int(found["pred"]) == int(found["true"])
    return " / ".join(f"{k}: {name_of(int(v), names)}" for k, v in found.items() if v is not None)


def _multi_hot_fields(sample: Any, truth: Mapping[str, Any], pred: Mapping[str, Any], names: Any) -> str:
    chosen = pred.get("multi_hot")
    if chosen is None and "probs" in pred:
        chosen = pred["probs"] >= 0.5
    found = {"pred": _plain(chosen), "true": _plain(truth.get("multi_hot"))}
    shown = {
        k: [name_of(i, names) for i, on in enumerate(v) if on] for k, v in found.items() if v is not None
    }
    if len(shown) == 2:
        sample.correct = set(shown["pred"]) == set(shown["true"])
    return " / ".join(f"{k}: {' '.join(chosen_names) or '-'}" for k, chosen_names in shown.items())


def _mask_fields(sample: Any, truth: Mapping[str, Any], pred: Mapping[str, Any]) -> str:
    import numpy as np

    true, predicted = (_array(s.get("mask")) for s in (truth, pred))
    sample.true_mask = None if true is None else true.astype(np.uint8)
    sample.pred_mask = None if predicted is None else predicted.astype(np.uint8)
    if true is None or predicted is None:
        return ""
    valid = true != 255
    accuracy = float((true[valid] == predicted[valid]).mean()) if valid.any() else math.nan
    return f"pixel acc {accuracy:.2f}"


def _object_fields(sample: Any, truth: Mapping[str, Any], pred: Mapping[str, Any]) -> str:
    counts = []
    for side, found in (("true", truth), ("pred", pred)):
        if "boxes" not in found:
            continue
        boxes = [[float(v) for v in box] for box in _plain(found["boxes"])]
        setattr(sample, f"{side}_boxes", boxes)
        setattr(sample, f"{side}_labels", [int(v) for v in _plain(found.get("labels", []))])
        setattr(sample, f"{side}_keypoints", _keypoints(found))
        if side == "pred" and "scores" in found:
            sample.pred_scores = [float(v) for v in _plain(found["scores"])]
        counts.append(f"{len(boxes)} {'true' if side == 'true' else 'predicted'}")
    return ", ".join(counts)


def log_figure(trainer: Any, name: str, fig: Figure, png: Path) -> None:
    """Send ``fig`` to each TensorBoard / wandb logger as ``plots/<name>``; other loggers skip it."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(f"plots/{name}", fig, global_step=trainer.global_step, close=False)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=f"plots/{name}", images=[str(png)], step=trainer.global_step)


def never_fail(what: str, write: Callable[..., object], *args: Any) -> None:
    """Call ``write``; on an error warn instead: plots must never fail a finished training run."""
    try:
        write(*args)
    except Exception as err:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"could not write the {what}: {type(err).__name__}: {err}")


__all__ = [
    "log_figure",
    "media_sample_of",
    "name_of",
    "never_fail",
    "new_figure",
    "prediction_grid",
    "save_png",
    "to_display",
    "write_csv",
]
