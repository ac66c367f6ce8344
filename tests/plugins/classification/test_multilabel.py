"""The multilabel task: trains on a labels manifest, reports val/map, keeps tuned thresholds, predicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_image_tree
from recipe_data import write_multilabel_manifest
from visionkit_classification.multilabel import MultiLabelClassifier, precision_recall_at, tuned_thresholds

from visionkit_core import UsageError
from visionkit_core.plugin.manager import get_plugins, use_plugins
from visionkit_core.run.assemble import run_train
from visionkit_core.run.config import resolve
from visionkit_core.workflows.evaluate import evaluate
from visionkit_core.workflows.predict import predict

COMMON = {"epochs": 4, "image_size": 16, "batch_size": 8, "backbone": "timm:test_resnet", "lr": 0.01}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One multi-label run on 48 train / 12 val colour-quadrant images (3 labels)."""
    tmp = tmp_path_factory.mktemp("multilabel")
    manifest = write_multilabel_manifest(tmp / "data", n=60)
    flags = {**COMMON, "task": "multilabel", "data": str(manifest), "run_dir": str(tmp / "run")}
    config = resolve(flags=flags)
    result = run_train(config, echo=lambda _: None)
    return {"tmp": tmp, "manifest": manifest, "run": result.run_dir, "summary": result.summary}


def test_a_labels_manifest_trains_and_reports_val_map(trained: dict[str, Any]) -> None:
    summary = trained["summary"]
    metrics = summary["metrics"]
    assert summary["task"] == "visionkit:multilabel" and summary["monitor"]["metric"] == "val/map"
    assert metrics["val/map"] > 0.8, metrics  # colour quadrants: well above chance (~0.5)
    assert {"val/f1_micro", "val/f1_macro", "val/f1_macro_tuned", "val/loss"} <= set(metrics)
    assert {f"val/recall/{c}" for c in ("blue", "green", "red")} <= set(metrics)
    assert "best-" in Path(summary["best_checkpoint"]).name and "val_map" in summary["best_checkpoint"]


def test_tuned_thresholds_are_stored_in_every_checkpoint(trained: dict[str, Any]) -> None:
    ckpt = torch.load(trained["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    thresholds = ckpt["hyper_parameters"]["thresholds"]
    assert len(thresholds) == 3 and all(0.0 <= t <= 1.0 for t in thresholds)
    assert ckpt["visionkit"]["task"] == "multilabel"
    assert ckpt["visionkit"]["data_info"]["extra"]["multilabel"] is True


def test_validate_on_the_checkpoint_reproduces_val_map(trained: dict[str, Any]) -> None:
    with use_plugins(get_plugins()):
        doc = evaluate("validate", trained["run"] / "checkpoints" / "last.ckpt", accelerator="cpu")
    assert doc["metrics"]["val/map"] == pytest.approx(trained["summary"]["metrics"]["val/map"], abs=1e-4)


def test_predict_returns_label_sets_as_json_and_csv(trained: dict[str, Any], tmp_path: Path) -> None:
    truth = _val_sets(trained["manifest"])
    ckpt = trained["run"] / "checkpoints" / "last.ckpt"
    with use_plugins(get_plugins()):
        predict(ckpt, list(truth), tmp_path / "p.json", accelerator="cpu")
        predict(ckpt, list(truth), tmp_path / "p.csv", accelerator="cpu")
        predict(ckpt, list(truth), tmp_path / "all.json", {"threshold": 0.0}, accelerator="cpu")
    doc = json.loads((tmp_path / "p.json").read_text())
    stored = torch.load(ckpt, weights_only=True)["hyper_parameters"]["thresholds"]
    assert list(doc["thresholds"].values()) == stored
    for p in doc["predictions"]:  # a label is in the set exactly when its score reaches its threshold
        assert set(p["labels"]) == {n for n, s in p["scores"].items() if s >= doc["thresholds"][n]}
    exact = [set(p["labels"]) == truth[Path(p["path"])] for p in doc["predictions"]]
    assert sum(exact) >= 0.75 * len(exact), doc["predictions"]  # the validation images, val/map ~1
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert rows[0].keys() == {"path", "labels", "blue", "green", "red"}
    assert [sorted(r["labels"].split()) for r in rows] == [sorted(p["labels"]) for p in doc["predictions"]]
    every = json.loads((tmp_path / "all.json").read_text())["predictions"]  # threshold override: all labels
    assert all(sorted(p["labels"]) == ["blue", "green", "red"] for p in every)


def _val_sets(manifest: Path) -> dict[Path, set[str]]:
    rows = csv.DictReader(manifest.open())
    return {manifest.parent / r["path"]: set(r["labels"].split()) for r in rows if r["split"] == "val"}


def test_plots_show_per_class_ap_and_examples(trained: dict[str, Any]) -> None:
    plots = trained["run"] / "plots"
    assert {"per_class_ap.png", "per_class_ap.csv", "examples.png", "training_curves.png"} <= {
        p.name for p in plots.iterdir()
    }
    rows = list(csv.DictReader((plots / "per_class_ap.csv").open()))
    assert [r["class"] for r in rows] == ["blue", "green", "red"]
    assert all(0.0 <= float(r["ap"]) <= 1.0 and int(r["positives"]) > 0 for r in rows)


def test_the_classification_task_refuses_multi_label_data(trained: dict[str, Any], tmp_path: Path) -> None:
    config = resolve(flags={**COMMON, "data": str(trained["manifest"]), "run_dir": str(tmp_path / "r")})
    with pytest.raises(UsageError, match=r"multi-label .* --task multilabel"):
        run_train(config, echo=lambda _: None)


def test_the_multilabel_task_refuses_single_label_data(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "tree", ["a", "b"], per_class=2, size=16)
    flags = {**COMMON, "task": "multilabel", "data": str(root), "run_dir": str(tmp_path / "r")}
    config = resolve(flags=flags)
    with pytest.raises(UsageError, match="task 'multilabel' needs multilabel from the data"):
        run_train(config, echo=lambda _: None)


def test_thresholds_are_tuned_to_the_best_f1_per_class() -> None:
    # class 0: positives score 0.99+, a negative 0.98: the cut falls between them;
    # class 1: no positives, keeps its threshold
    probs = torch.tensor([[0.999, 0.1], [0.995, 0.2], [0.98, 0.3], [0.4, 0.9]])
    targets = torch.tensor([[True, False], [True, False], [False, False], [False, False]])
    out = tuned_thresholds(probs, targets, torch.tensor([0.5, 0.7]))
    assert out.tolist() == pytest.approx([0.9875, 0.7])
    precision, recall = precision_recall_at(probs, targets, out)
    assert precision.tolist() == [1.0, 0.0] and recall.tolist() == [1.0, 0.0]


def test_export_sidecar_says_sigmoid_and_carries_the_thresholds() -> None:
    with use_plugins(get_plugins()):
        model = MultiLabelClassifier(
            backbone="timm:test_resnet", num_classes=2, class_names=["x", "y"], thresholds=[0.2, 0.6]
        )
    spec = model.export_spec(16)
    assert spec.sidecar["output"]["sigmoid"] is True
    assert spec.sidecar["output"]["thresholds"] == {"x": 0.2, "y": 0.6}
