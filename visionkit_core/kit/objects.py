"""Objects: what every task that finds objects (boxes, with masks or keypoints on them) shares.

- :class:`Objects`, the typed per-image structure targets and predictions travel in (torchvision's
  detection dicts: ``boxes`` xyxy pixels, ``labels`` class indices, ``scores``, and ``masks`` /
  ``keypoints`` where the task has them), through task, metric, plots, media and predict writers;
- :func:`to_original`: predictions on the letterboxed square -> the original image's pixels;
- :class:`ObjectTask`, the task base over a torchvision-style detector (``self.model`` gives its
  losses for ``(images, targets)`` while training and per-image :class:`Objects` in eval mode):
  images to float on the device, training and evaluation steps, predict in original pixels,
  media samples, ``write_predictions``'s threshold, gradient clipping, option checks;
- :class:`ObjectPlots`: training curves, per-class AP bars and a grid of validation samples;
- predict writers' parts: :func:`objects_json` (best first, over a threshold), :func:`write_json`,
  :func:`unique_stems`, :func:`write_drawn`, :func:`draw_objects`, :func:`media_sample`, and
  :func:`write_instances`, the whole writer of an instance task (JSON, a folder, ``--overlay``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor

from visionkit_core import ConfigError, MediaSample, Prediction, UsageError, atomic_write_bytes, write_csv
from visionkit_core.kit.evaluation import EvaluationCallback, history_columns
from visionkit_core.kit.media import media_sample_of
from visionkit_core.kit.plots import cell, media_grid, per_class_bars
from visionkit_core.kit.task import TaskBase
from visionkit_core.plugin.contract import Sample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Box and mask colours, per class index.
COLOURS = "#e6194b #3cb44b #4363d8 #f58231 #911eb4 #42d4f4 #f032e6 #bfef45 #469990 #9a6324 #800000".split()


#: One image's objects: the contract's :class:`~visionkit_core.plugin.contract.Sample` (its object keys).
Objects = Sample


def as_float(image: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` -> float ``[0, 1]``."""
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def to_uint8(image: Tensor) -> Tensor:
    """A float ``[0, 1]`` CHW image -> uint8 on the CPU (for drawing)."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def to_original(det: Objects, size: Sequence[int], image_size: int) -> Objects:
    """Objects on the letterboxed ``image_size`` square -> the original ``(h, w)`` image's pixels:
    boxes and keypoints scaled and clipped, masks cropped from the padding, resized and thresholded;
    an object whose box lay in the padding (no width or height left) goes."""
    h, w = int(size[0]), int(size[1])
    scale = image_size / max(h, w)
    out: dict[str, Tensor] = {
        "scores": det["scores"].detach().float().cpu(),
        "labels": det["labels"].detach().cpu(),
    }
    boxes = det["boxes"].detach().float().cpu() / scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    out["boxes"] = boxes
    if "masks" in det:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        m = det["masks"].detach().float().cpu()[:, :1, :nh, :nw]
        if len(m):
            m = torch.nn.functional.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        out["masks"] = (m[:, 0] > 0.5).to(torch.uint8) if len(m) else torch.zeros(0, h, w, dtype=torch.uint8)
    if "keypoints" in det:
        kp = det["keypoints"].detach().float().cpu().clone()
        kp[..., :2] /= scale
        kp[..., 0] = kp[..., 0].clamp(0, w)  # a point in the letterbox padding lies off the image
        kp[..., 1] = kp[..., 1].clamp(0, h)
        out["keypoints"] = kp
        if "keypoints_scores" in det:
            out["keypoints_scores"] = det["keypoints_scores"].detach().float().cpu()
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {k: v[keep] for k, v in out.items()}  # type: ignore[return-value]


# -- the task base -------------------------------------------------------------------------------


class ObjectTask(TaskBase):
    """The base of tasks over a torchvision-style detector in ``self.model``.

    Batches are ``(images, truth)`` lists (uint8 images, one :class:`Objects` per image); validation
    leaves ``last_eval_output = (images, truth, preds)``, the model's input and the truth and
    predicted Objects of each image, for :class:`ObjectPlots`. A subclass builds ``self.model``
    and gives :meth:`update_metrics` / :meth:`log_metrics` (per phase),
    :meth:`draw_samples` (media samples of images, targets and predictions) and
    :meth:`write_objects` (``visionkit predict``'s files); :meth:`model_target` and
    :meth:`train_inputs` adapt what the detector trains on.
    """

    #: added to class indices for the model (1: torchvision's R-CNNs keep 0 for the background).
    label_offset = 0
    #: the gradient norm clipped to unless ``--gradient-clip`` says otherwise (detectors' losses
    #: spike early in training from scratch).
    gradient_clip = 10.0
    #: ``predict`` writes objects scoring at least this unless ``--threshold`` says otherwise.
    default_threshold = 0.5
    #: media samples show predicted objects scoring at least this.
    show_threshold = 0.5
    #: what the evaluation plots call the per-class metric, its CSV column, and the sample grid's file.
    ap_name, ap_column, samples_figure = "AP", "ap", "samples"

    def check_options(self, at_least: Mapping[str, float] = {}) -> None:
        """Check the saved hyperparameters: class names that match ``num_classes``, at least one
        class, each option of ``at_least`` (``{option: least value}``), ``score_thresh`` in
        ``[0, 1)`` and ``nms_thresh`` in ``(0, 1]``."""
        h = self.hparams
        self.check_class_names(h["num_classes"], h.get("class_names"))
        if h["num_classes"] < 1:
            name = getattr(getattr(type(self), "visionkit_task", None), "name", type(self).__name__)
            raise UsageError(f"{name} needs at least one object class in the annotations")
        for option, low in at_least.items():
            if h[option] < low:
                raise ConfigError(f"--set task.{option}={h[option]}: must be at least {low:g}")
        if not (0.0 <= h["score_thresh"] < 1.0 and 0.0 < h["nms_thresh"] <= 1.0):
            raise ConfigError("--set task.score_thresh must be in [0, 1) and task.nms_thresh in (0, 1]")

    def set_model_normalization(self) -> None:
        """Hand :attr:`preprocessing`'s mean and std to the detector, which normalises its inputs."""
        self.model.transform.image_mean = list(self.preprocessing["mean"])  # type: ignore[union-attr]
        self.model.transform.image_std = list(self.preprocessing["std"])  # type: ignore[union-attr]

    # -- for subclasses ----------------------------------------------------------------------------
    def update_metrics(self, phase: str, preds: list[Objects], targets: Sequence[Objects]) -> None:
        """Feed one evaluation batch to the metric of ``phase`` (``val``/``test``)."""
        raise NotImplementedError

    def log_metrics(self, phase: str) -> None:
        """Compute, log and reset the metric of ``phase`` at the end of its epoch."""
        raise NotImplementedError

    def draw_samples(
        self, images: Sequence[Tensor], targets: Sequence[Objects], preds: Sequence[Objects]
    ) -> list[MediaSample]:
        """MediaSamples of float ``[0, 1]`` images with their targets and predictions."""
        raise NotImplementedError

    def write_objects(
        self, predictions: list[Prediction], output: Path | None, threshold: float, options: Mapping[str, Any]
    ) -> list[str]:
        """``visionkit predict``'s files (``output``), or one summary line per image."""
        raise NotImplementedError

    def curve_metrics(self) -> tuple[str, ...]:
        """The metrics :class:`ObjectPlots` records and draws: the TaskSpec's first three."""
        return tuple(type(self).visionkit_task.metrics[:3])  # type: ignore[attr-defined]

    def model_target(self, target: Objects) -> dict[str, Tensor]:
        """What the detector trains on: non-crowd objects, labels shifted by :attr:`label_offset`."""
        keep = (
            target["iscrowd"] == 0
            if "iscrowd" in target
            else torch.ones_like(target["labels"], dtype=torch.bool)
        )
        return {"boxes": target["boxes"][keep], "labels": target["labels"][keep] + self.label_offset}

    def train_inputs(
        self, images: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """The training batch as the detector gets it (a subclass may rescale it)."""
        return images, targets

    # -- Lightning ---------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 images -> float [0, 1] (the detector normalises them)."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), list):
            return {**batch, "image": [as_float(im) for im in batch["image"]]}
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], list):
            return [as_float(im) for im in batch[0]], batch[1]
        return batch

    def forward(self, images: Sequence[Tensor]) -> list[Objects]:
        """Objects of float [0, 1] images (input pixels), ``labels`` as class indices."""
        was_training = self.model.training
        self.model.eval()  # torchvision's detectors detect in eval mode only (training needs targets)
        try:
            out = self.model(list(images))
        finally:
            self.model.train(was_training)
        return [{**d, "labels": d["labels"] - self.label_offset} for d in out]  # type: ignore[typeddict-item]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = self.train_inputs(list(batch[0]), [self.model_target(t) for t in batch[1]])
        losses = self.model(images, targets)
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        for key, value in losses.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        return loss  # type: ignore[return-value]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_step(self, phase: str, batch: Any) -> None:
        images, targets = batch
        preds = self(images)
        self.last_eval_output = (images, targets, preds)  # for the plots: no second forward
        self.update_metrics(phase, preds, targets)

    def on_validation_epoch_end(self) -> None:
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_metrics("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[Objects | None]:
        """Per input: its objects in the original image's pixels (None: unreadable)."""
        images = batch["image"] if isinstance(batch, dict) else batch
        sizes = batch.get("size") if isinstance(batch, dict) else None
        oks = batch.get("ok") if isinstance(batch, dict) else None
        result: list[Objects | None] = []
        for i, det in enumerate(self(images)):
            if oks is not None and not bool(oks[i]):
                result.append(None)
                continue
            size = tuple(sizes[i]) if sizes is not None else tuple(images[i].shape[-2:])
            result.append(to_original(det, size, int(images[i].shape[-1])))
        return result

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The Trainer's clipping when set (``--gradient-clip``), else a norm of :attr:`gradient_clip`."""
        if gradient_clip_val is None:
            gradient_clip_val, gradient_clip_algorithm = self.gradient_clip, "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- the contract's task methods -----------------------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        """:class:`ObjectPlots`: curves, per-class AP bars and a sample grid."""
        return [ObjectPlots(Path(run_dir), self)]

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        """Up to ``limit`` images of ``batch`` with their true and predicted objects drawn."""
        images, targets = [as_float(im) for im in batch[0][:limit]], batch[1][:limit]
        with torch.no_grad():
            preds = self(images)
        return self.draw_samples(images, targets, preds)

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        """``--threshold`` (default :attr:`default_threshold`) checked, then :meth:`write_objects`."""
        given = options.get("threshold")
        threshold = self.default_threshold if given is None else float(given)
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"--threshold {threshold}: a score threshold is between 0 and 1")
        return self.write_objects(predictions, output, threshold, options)


class ObjectPlots(EvaluationCallback):
    """An :class:`ObjectTask`'s plots under ``<run_dir>/plots/``: ``training_curves.png`` and
    ``history.csv`` (train loss and :meth:`ObjectTask.curve_metrics`, every epoch), at the end of
    fit ``<task.samples_figure>.png`` (validation images of the last epoch from the task's own
    forward: its ``last_eval_output``, drawn by :meth:`ObjectTask.draw_samples`) and
    ``per_class_ap.png`` / ``.csv`` (the task's ``last_ap["val"]``: ``{class: AP}``, -1 for a class
    in neither truth nor prediction)."""

    default_samples = 8

    def __init__(self, run_dir: str | Path, task: ObjectTask, num_samples: int | None = None) -> None:
        super().__init__(run_dir, num_samples)
        keys = task.curve_metrics()
        self.columns = history_columns(*keys)
        self.panels = (("loss", ("train/loss",)), ("mAP", tuple(keys)))

    def media(self, pl_module: Any, stored: Any, limit: int) -> list[Any]:
        images, targets, preds = stored
        return pl_module.draw_samples(images[:limit], targets[:limit], preds[:limit])  # type: ignore[no-any-return]

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        ap = {n: (v if v >= 0 else None) for n, v in getattr(pl_module, "last_ap", {}).get("val", {}).items()}
        figures = {}
        if ap:
            rows = [[n, cell(v)] for n, v in ap.items()]
            write_csv(self.plots_dir / "per_class_ap.csv", ["class", pl_module.ap_column], rows)
            present = [v for v in ap.values() if v is not None]
            mean = sum(present) / len(present) if present else 0.0
            title = f"Per-class {pl_module.ap_name} (mean {mean:.3f})"
            figures["per_class_ap"] = per_class_bars(
                ap, f"{pl_module.ap_name}@[.5:.95] (last validation)", title
            )
        if self.samples:
            figures[pl_module.samples_figure] = media_grid(self.samples, list(pl_module.class_names))
        return figures


# -- predict writers and media ------------------------------------------------------------------------


def objects_json(
    pred: Objects,
    class_names: Sequence[str],
    threshold: float,
    extra: Callable[[int], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The JSON objects of one image scoring at least ``threshold``, best first: ``label``, ``score``,
    ``box``, then what ``extra(i)`` adds for object ``i`` (its mask, its keypoints)."""
    scores = pred["scores"].tolist()
    out = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if scores[i] < threshold:
            continue
        label = int(pred["labels"][i])
        entry = {
            "label": class_names[label] if 0 <= label < len(class_names) else str(label),
            "score": round(float(scores[i]), 6),
            "box": [round(float(v), 3) for v in pred["boxes"][i].tolist()],
        }
        out.append({**entry, **(extra(i) if extra else {})})
    return out


def summary_lines(entries: Sequence[Mapping[str, Any]], key: str = "instances") -> list[str]:
    """One line per image: ``path: N <key>: label score, ...`` (the first ten)."""
    return [
        f"{e['path']}: {len(e[key])} {key} "
        + ", ".join(f"{i['label']} {i['score']:.2f}" for i in e[key][:10])
        for e in entries
    ]


def write_json(path: Path, entries: Any, indent: int = 1) -> None:
    """``entries`` as JSON at ``path``, written atomically (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(entries, indent=indent) + "\n").encode("utf-8"))


def unique_stems(paths: Iterable[str]) -> Iterator[str]:
    """Each path's file stem, numbered ``stem-2``, ``stem-3``... when two inputs (from different
    folders) share one, so that no output overwrites another."""
    used: dict[str, int] = {}
    for path in paths:
        stem = Path(path).stem
        used[stem] = used.get(stem, 0) + 1
        yield stem if used[stem] == 1 else f"{stem}-{used[stem]}"


def write_drawn(
    entries: Sequence[Mapping[str, Any]],
    folder: Path,
    draw: Callable[[Tensor, Mapping[str, Any]], Tensor],
    suffix: str = "",
) -> int:
    """``folder/<stem><suffix>.png`` per JSON entry (``{"path": ...}``): the original image read
    again and drawn on by ``draw(image, entry)`` (uint8 CHW); an unreadable image is passed over.
    Returns how many were written."""
    from visionkit_core.kit.data import decode_image
    from visionkit_core.kit.media import write_png
    from visionkit_core.kit.skips import DECODE_ERRORS

    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for entry, stem in zip(entries, unique_stems(e["path"] for e in entries), strict=True):
        try:
            image = decode_image(entry["path"])
        except DECODE_ERRORS:
            continue
        write_png(folder / f"{stem}{suffix}.png", draw(image, entry).permute(1, 2, 0).numpy())
        written += 1
    return written


def write_instances(
    preds: Sequence[Prediction],
    output: Path | None,
    threshold: float,
    options: Mapping[str, Any],
    class_names: Sequence[str],
    extra: Callable[[Objects], Callable[[int], Mapping[str, Any]]],
    write_images: Callable[[list[Prediction], list[dict[str, Any]], Path, str], int],
    images: str = "drawn images",
) -> list[str]:
    """A ``write_objects`` for tasks whose objects are instances (masks, keypoints): one JSON entry
    per image, ``{"path": ..., "instances": [...]}`` (:func:`objects_json`, with ``extra(pred)(i)``
    for object ``i``), only instances scoring at least ``threshold``.

    ``output`` a ``.json`` file: the entries, and with ``--overlay`` the images into
    ``<FILE stem>_drawn/`` next to it; a folder: ``predictions.json`` and the images in it; ``None``:
    one summary line per image (``--overlay`` without ``--output`` is a usage error).
    ``write_images(kept, entries, folder, suffix)`` writes the images of the predictions that have
    a value (``kept``, in the order of ``entries``) into ``folder``, ``<stem><suffix>.png`` where its
    images are one per input (``suffix``: ``""`` next to a .json file, ``"_drawn"`` beside
    predictions.json), and returns how many images it wrote; ``images`` names them in the lines
    returned."""
    if output is None and options.get("overlay"):
        raise UsageError("--overlay needs --output FILE.json or DIR (the drawn images go next to it)")
    kept = [p for p in preds if p.value is not None]
    entries = [
        {"path": p.path, "instances": objects_json(p.value, class_names, threshold, extra(p.value))}
        for p in kept
    ]
    if output is None:
        return summary_lines(entries)
    total = sum(len(e["instances"]) for e in entries)
    found = f"{len(entries)} images, {total} instances (score >= {threshold:g})"
    if output.suffix.lower() == ".json":
        write_json(output, entries)
        lines = [f"{found} -> {output}"]
        if options.get("overlay"):
            folder = output.with_name(f"{output.stem}_drawn")
            lines.append(f"{write_images(kept, entries, folder, '')} {images} -> {folder}")
        return lines
    write_json(output / "predictions.json", entries)
    written = write_images(kept, entries, output, "_drawn")
    return [f"{found} -> {output}/predictions.json, {written} {images} in {output}"]


def draw_objects(
    image: Tensor,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    labels: Sequence[int],
    masks: Tensor | None = None,
    colour: str | None = None,
) -> Tensor:
    """``image`` (uint8 CHW) with ``masks`` (bool ``(N, H, W)``) filled and ``boxes`` drawn and
    captioned, in each class's colour (or ``colour``); the image itself when there is nothing to draw."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    colours = [colour or COLOURS[c % len(COLOURS)] for c in labels]
    if masks is not None and len(masks):
        image = draw_segmentation_masks(image, masks.bool(), alpha=0.45, colors=colours)
    if not len(boxes):
        return image
    width = max(1, round(max(image.shape[-2:]) / 200))
    xyxy = torch.tensor([list(b) for b in boxes], dtype=torch.float32)
    return draw_bounding_boxes(image, xyxy, labels=list(captions), colors=colours, width=width)


def media_sample(
    picture: Tensor, target: Objects, pred: Objects, keep: Tensor, correct: bool | None = None
) -> MediaSample:
    """A MediaSample of ``picture`` (uint8 CHW, drawn on as the task likes) with the true boxes and
    the predicted ones ``keep`` selects, captioned with both counts (the kit's ``media_sample_of``)."""
    keep = keep.detach().cpu()
    shown = {k: pred[k].detach().cpu()[keep] for k in ("boxes", "labels", "scores")}
    sample = media_sample_of(picture, {"boxes": target["boxes"], "labels": target["labels"]}, shown, None)
    sample.correct = correct
    return sample
