"""Prediction files and the export graph of the classification task.

The writers read each :class:`~visionkit_core.Prediction`'s value, a Sample with ``probs``
(``(C,)``), or the bare probability tensor older tasks gave.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from visionkit_core import ExportSpec, Prediction, atomic_write_bytes
from visionkit_core.kit.export import image_input


def probabilities(pred: Prediction) -> torch.Tensor:
    """The ``(C,)`` float probabilities of a prediction: its Sample's ``probs`` (or the bare tensor)."""
    value = pred.value["probs"] if isinstance(pred.value, Mapping) else pred.value
    return torch.as_tensor(value).float()


def topk_rows(predictions: list[Prediction], class_names: list[str], topk: int) -> list[dict[str, Any]]:
    """``{"path", "top": [[class, prob], ...]}`` per image, most probable first."""
    k = max(1, min(topk, len(class_names)))
    rows = []
    for pred in predictions:
        values, indices = probabilities(pred).topk(k)
        top = [[class_names[int(j)], round(float(v), 6)] for v, j in zip(values, indices, strict=True)]
        rows.append({"path": pred.path, "top": top})
    return rows


def write_topk(
    predictions: list[Prediction], class_names: list[str], topk: int, output: Path | None
) -> list[str]:
    """Write CSV (path, class_1, prob_1, ...) or JSON to ``output``; without it, return a table."""
    rows = topk_rows(predictions, class_names, topk)
    if output is None:
        width = max([len(r["path"]) for r in rows] + [4])
        return [f"{r['path']:<{width}}  " + "  ".join(f"{n} {p:.3f}" for n, p in r["top"]) for r in rows]
    if output.suffix.lower() == ".json":
        data = json.dumps(rows, indent=2) + "\n"
    else:
        k = max((len(r["top"]) for r in rows), default=0)
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(["path", *[h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")]])
        for r in rows:
            writer.writerow([r["path"], *[x for name, p in r["top"] for x in (name, f"{p:.6f}")]])
        data = buffer.getvalue()
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, data.encode("utf-8"))
    return [f"Wrote {len(rows)} predictions to {output}"]


def label_set_rows(
    predictions: list[Prediction], class_names: list[str], thresholds: list[float]
) -> list[dict[str, Any]]:
    """``{"path", "labels": [names at or over their threshold], "scores": {name: prob}}`` per image."""
    rows = []
    for pred in predictions:
        probs = [float(p) for p in probabilities(pred).tolist()]
        chosen = [n for n, p, t in zip(class_names, probs, thresholds, strict=True) if p >= t]
        chosen.sort(key=lambda n: -probs[class_names.index(n)])
        scores = {n: round(p, 6) for n, p in zip(class_names, probs, strict=True)}
        rows.append({"path": pred.path, "labels": chosen, "scores": scores})
    return rows


def write_label_sets(
    predictions: list[Prediction], class_names: list[str], thresholds: list[float], output: Path | None
) -> list[str]:
    """Write CSV (path, labels space-separated, one probability column per class) or JSON; or a table."""
    rows = label_set_rows(predictions, class_names, thresholds)
    if output is None:
        width = max([len(r["path"]) for r in rows] + [4])
        return [
            f"{r['path']:<{width}}  "
            + ("  ".join(f"{n} {r['scores'][n]:.3f}" for n in r["labels"]) or "(no label over its threshold)")
            for r in rows
        ]
    if output.suffix.lower() == ".json":
        doc = {"thresholds": dict(zip(class_names, thresholds, strict=True)), "predictions": rows}
        data = json.dumps(doc, indent=2) + "\n"
    else:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(["path", "labels", *class_names])
        for r in rows:
            writer.writerow(
                [r["path"], " ".join(r["labels"]), *(f"{r['scores'][n]:.6f}" for n in class_names)]
            )
        data = buffer.getvalue()
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, data.encode("utf-8"))
    return [f"Wrote {len(rows)} label sets to {output}"]


class _Exported(torch.nn.Module):
    """The backbone with normalisation inside: float ``[0, 1]`` NCHW images -> logits."""

    def __init__(self, task: Any) -> None:
        super().__init__()
        self.inner = task.model
        self.register_buffer("mean", task.norm_mean.detach().clone().float())
        self.register_buffer("std", task.norm_std.detach().clone().float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner((images - self.mean) / self.std)  # type: ignore[no-any-return]


def export_spec(task: Any, image_size: int) -> ExportSpec:
    """The export graph, inputs of two batch sizes, and the sidecar a server needs."""
    gen = torch.Generator().manual_seed(0)
    pre = task.preprocessing
    return ExportSpec(
        module=_Exported(task),
        example_input=torch.rand(2, 3, image_size, image_size, generator=gen),
        check_input=torch.rand(3, 3, image_size, image_size, generator=gen),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        task_forward=lambda exported, x: exported(task.denormalize(x)),  # forward takes normalised images
        sidecar={
            "class_names": list(task.class_names),
            "input": image_input(
                pre,
                resize_shorter_side_to=round(image_size / float(pre.get("crop_pct", 0.875))),
                center_crop=[image_size, image_size],
                interpolation=pre.get("interpolation", "bilinear"),
            ),
            "output": {"name": "logits", "shape": ["batch", len(task.class_names)], "softmax": False},
        },
    )
