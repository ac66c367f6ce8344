"""The served model: a checkpoint's task, or an exported artefact in the place of its forward.

Predictions go through what ``visionkit predict`` uses: the checkpoint's dataset turns image
files into samples (``predict_dataset``, original sizes recorded), the task's ``predict_step``
predicts and its ``write_predictions`` writes the same JSON (or files) as ``predict -o``. An
exported model (``--model``) is run by its runtime in the place of the task's forward
(``ExportSpec.task_forward``, as ``export --check`` does), so its answers have the same shape.
"""

from __future__ import annotations

import base64
import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core import Prediction, UsageError, call_with_accepted


@dataclass
class Job:
    """One request: its images (name, bytes) and options; samples and values once decoded and predicted."""

    images: list[tuple[str, bytes]]
    options: dict[str, Any]
    error: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    folder: Any = None  # the request's temporary folder (removed after its answer is written)


class Served:
    """A task ready to predict: the model, its dataset's ``predict_dataset`` and what /info shows."""

    def __init__(self, ckpt: Path | None = None, model: Path | None = None) -> None:
        from visionkit_core.workflows.inference import load_checkpoint
        from visionkit_core.workflows.predict import predict_dataset_for

        if ckpt is not None:
            loaded = load_checkpoint(ckpt)
            self.task, self.spec = loaded.model.eval(), loaded.spec
            self.preprocessing, self.class_names = loaded.preprocessing, loaded.class_names
            self.make_dataset = lambda files: predict_dataset_for(loaded, files)
            self.source = {"checkpoint": str(ckpt), "format": "pytorch"}
        else:
            assert model is not None
            self._from_export(model)
        self.options = {"topk": 5, "threshold": None, "overlay": False}

    def _from_export(self, model: Path) -> None:
        """Rebuild the task from the sidecar (untrained weights), then run the artefact in its forward."""
        from types import SimpleNamespace

        from visionkit_core.kit.exported import load_exported, substitute
        from visionkit_core.plugin.contract import DataInfo, task_spec_of
        from visionkit_core.plugin.manager import get_plugins
        from visionkit_core.workflows.predict import predict_dataset_for

        side = json.loads(Path(f"{model}.json").read_text())
        components = side.get("components") or {}
        if "hyper_parameters" not in side or "task" not in components:
            raise UsageError(
                f"sidecar {model!s}.json predates `visionkit serve --model` (no hyper_parameters); "
                "export the checkpoint again"
            )
        factory = get_plugins().registry.resolve("task", components["task"]["name"]).load()
        info = DataInfo.from_dict(side["data_info"])
        hparams = {**info.task_kwargs(), **side["hyper_parameters"]}
        task = call_with_accepted(factory, {"pretrained": False, "weights": None}, hparams)
        if isinstance(getattr(task, "preprocessing", None), dict):
            task.preprocessing = {**task.preprocessing, **dict(side["preprocessing"])}
        spec = task.eval().export_spec(int(side["preprocessing"].get("image_size") or side["image_size"]))
        runtime = load_exported(model, side["format"], side["input_names"], side["output_names"])
        substitute(task, spec, runtime)
        self.task, self.spec = task, task_spec_of(factory)
        self.preprocessing, self.class_names = dict(side["preprocessing"]), list(info.class_names)
        loaded = SimpleNamespace(
            meta={"components": components}, path=model, preprocessing=self.preprocessing
        )
        self.make_dataset = lambda files: predict_dataset_for(loaded, files)
        self.source = {"model": str(model), "format": side["format"], "int8": bool(side.get("int8"))}

    def info(self) -> dict[str, Any]:
        """Task, classes, preprocessing, versions: what GET /info shows."""
        from importlib import metadata

        versions = {}
        for dist in ("visionkit", "torch", "lightning", "litserve", "onnxruntime", "openvino"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        assert self.spec is not None
        return {
            "task": self.spec.name,
            "classes": self.class_names,
            "preprocessing": self.preprocessing,
            "outputs": list(self.spec.predict_outputs),
            **self.source,
            "versions": versions,
        }

    def decode(self, job: Job) -> Job:
        """Write the images to a temporary folder and build their samples; unreadable ones fail the job."""
        job.folder = tempfile.TemporaryDirectory(prefix="visionkit-serve-")
        files = []
        for i, (name, data) in enumerate(job.images):
            path = Path(job.folder.name) / f"{i:03d}" / name
            path.parent.mkdir()
            path.write_bytes(data)
            files.append(path)
        dataset = self.make_dataset(files)
        job.samples = [dataset[i] for i in range(len(files))]
        bad = [name for (name, _), s in zip(job.images, job.samples, strict=True) if not s.get("ok", True)]
        if bad:
            job.error = f"not a readable image: {', '.join(bad)}"
        self.collate = getattr(dataset, "collate_fn", None)
        return job

    def predict(self, jobs: list[Job]) -> None:
        """One forward pass over the samples of every good job (dynamic batching)."""
        import torch
        from torch.utils.data import default_collate

        from visionkit_core.workflows.predict import per_input

        good = [j for j in jobs if j.error is None]
        samples = [s for j in good for s in j.samples]
        if not samples:
            return
        batch = (self.collate or default_collate)(samples)
        with torch.inference_mode():  # per call: grad mode is per thread (and not the process's to change)
            out = self.task.predict_step(self.task.on_after_batch_transfer(batch, 0), 0)
        values = per_input(out)
        start = 0
        for job in good:
            job.values, start = values[start : start + len(job.samples)], start + len(job.samples)

    def answer(self, job: Job) -> Any:
        """What ``visionkit predict -o`` writes for the job's images: JSON, CSV rows or files (base64)."""
        assert job.folder is not None and self.spec is not None
        try:
            out_dir = Path(job.folder.name) / "out"
            preds = [
                Prediction(
                    name, value, tuple(int(x) for x in s["size"]) if s.get("size") is not None else None
                )
                for (name, _), value, s in zip(job.images, job.values, job.samples, strict=True)
            ]
            options = {**self.options, **job.options}
            outputs = self.spec.predict_outputs
            if ".json" in outputs or ".csv" in outputs:
                target = out_dir / ("predictions.json" if ".json" in outputs else "predictions.csv")
                self.task.write_predictions(preds, target, options)
                if target.suffix == ".json":
                    return json.loads(target.read_text())
                return list(csv.DictReader(target.open(newline="")))
            answers = []
            for i, pred in enumerate(preds):  # a folder per image: every file it wrote is its answer
                folder = out_dir / str(i)
                self.task.write_predictions([pred], folder, options)
                files = {p.name: base64.b64encode(p.read_bytes()).decode() for p in sorted(folder.iterdir())}
                answers.append({"path": pred.path, "files": files})
            return answers
        finally:
            job.folder.cleanup()
