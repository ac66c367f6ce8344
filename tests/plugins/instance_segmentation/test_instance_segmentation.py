"""The instance-segmentation task end to end: train, resume, validate (1 and 2 processes), predict, export,
data check. One module fixture trains through the CLI on a 32 px COCO tree with real problems in it (bad
annotations, a missing and an unreadable image); the tests below reuse its run and checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cli_server
import numpy as np
import pytest
import torch
from instance_trees import NAMES, make_coco_tree, make_yolo_tree
from PIL import Image

VK = [sys.executable, "-m", "visionkit_core"]
WITHOUT = ("SLURM_", "_VISIONKIT")  # a run under a test runner started by SLURM is no SLURM job
SIZE = 32


def vk(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``visionkit ARGS`` as a process of its own, forked by the shared CLI server (tests/cli_server.py)."""
    return cli_server.visionkit(*args, cwd=cwd, without=WITHOUT, timeout=timeout)


def train_args(data: Path, run_dir: str, epochs: int) -> list[str]:
    return [
        "train",
        "--task",
        "instance-segmentation",
        "--data",
        str(data),
        "--image-size",
        str(SIZE),
        "--batch-size",
        "4",
        "--epochs",
        str(epochs),
        "--deterministic",
        "--run-dir",
        run_dir,
        "--logger",
        "csv",
        "--logger",
        "tensorboard",
        "--set",
        "task.fpn_channels=16",
    ]


def break_coco(data: Path) -> dict[int, tuple[str, str]]:
    """Spoil three train annotations and two images: annotation id -> (the reason ``data check`` gives,
    the image it spoils)."""
    path = data / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    anns = doc["annotations"]
    anns[0]["segmentation"] = [[1, 1, 5, 5]]
    anns[3]["category_id"] = 9
    anns[6]["segmentation"] = [[1, 1, 60, 1, 30, 20]]
    doc["images"].append({"id": 77, "file_name": "missing.png", "width": SIZE, "height": SIZE})
    path.write_text(json.dumps(doc))
    (data / "train" / "train_007.png").write_bytes(b"not an image")
    files = {image["id"]: image["file_name"] for image in doc["images"]}
    reasons = {
        0: "polygon 0 has 2 points (a polygon needs at least 3)",
        3: "unknown category id 9",
        6: f"polygon extends outside the {SIZE}x{SIZE} image",
    }
    return {anns[i]["id"]: (why, files[anns[i]["image_id"]]) for i, why in reasons.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("instseg")
    data = make_coco_tree(root / "coco", {"train": 16, "val": 5, "test": 2}, size=SIZE, rle_every=4)
    broken = break_coco(data)
    out = vk(*train_args(data, "run", 2), cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = root / "run"
    return {
        "root": root,
        "data": data,
        "broken": broken,
        "run": run_dir,
        "stderr": out.stderr,
        "ckpt": run_dir / "checkpoints" / "last.ckpt",
        "summary": json.loads((run_dir / "summary.json").read_text()),
    }


def test_a_coco_tree_trains_judged_by_val_mask_map(run: dict[str, Any]) -> None:
    s = run["summary"]
    assert s["task"] == "visionkit:instance-segmentation" and s["dataset"] == "visionkit:coco-instances"
    assert s["class_names"] == NAMES and s["epochs"] == 2
    for key in ("val/mask_map", "val/mask_map_50", "val/mask_map_75", "val/map", "val/map_50"):
        assert 0.0 <= s["metrics"][key] <= 1.0
    assert s["monitor"]["metric"] == "val/mask_map" and "val_mask_map=" in Path(s["best_checkpoint"]).name


def test_bad_annotations_and_images_are_skipped_and_counted(run: dict[str, Any]) -> None:
    skipped = {Path(p).name for p in run["summary"]["skipped_files"]}
    assert skipped == {name for _, name in run["broken"].values()} | {"missing.png", "train_007.png"}
    assert "train_007.png" in run["stderr"]  # named while training
    assert "unusable annotations" in run["stderr"] and "visionkit data check" in run["stderr"]


def test_plots_history_and_per_class_ap(run: dict[str, Any]) -> None:
    plots = run["run"] / "plots"
    for name in ("instance_samples.png", "per_class_ap.png", "training_curves.png"):
        assert (plots / name).stat().st_size > 1000, name
    history = (plots / "history.csv").read_text().splitlines()
    assert (
        history[0].startswith("epoch,train/loss,val/mask_map,val/mask_map_50,val/map") and len(history) == 3
    )
    assert [line.split(",")[0] for line in (plots / "per_class_ap.csv").read_text().splitlines()[1:]] == NAMES


def test_a_killed_run_resumes_exactly(run: dict[str, Any]) -> None:
    """SIGKILL once the first epoch's checkpoint is written, then --resume last: the uninterrupted metrics."""
    proc = cli_server.start(*train_args(run["data"], "cut", 2), cwd=run["root"], without=WITHOUT)
    last = run["root"] / "cut" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run["root"] / "cut" / "summary.json").exists()  # it really did not finish
    resumed = vk("train", "--resume", "last", "--run-dir", "cut", cwd=run["root"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads((run["root"] / "cut" / "summary.json").read_text())
    assert after["global_step"] == run["summary"]["global_step"] and after["epochs"] == 2
    for key in ("val/mask_map", "val/mask_map_50", "val/map", "train/loss_epoch"):
        assert after["metrics"][key] == run["summary"]["metrics"][key], key


def test_validate_and_test_from_the_checkpoint_alone(run: dict[str, Any], tmp_path: Path) -> None:
    from visionkit_core.workflows.evaluate import evaluate

    val = evaluate("validate", run["ckpt"], output=tmp_path / "v.json", accelerator="cpu")
    for key in ("val/mask_map", "val/mask_map_50", "val/map"):
        assert val["metrics"][key] == pytest.approx(run["summary"]["metrics"][key], abs=1e-6)
    test = evaluate("test", run["ckpt"], output=tmp_path / "t.json", accelerator="cpu")
    assert test["monitor"] == "test/mask_map" and 0.0 <= test["metrics"]["test/mask_map_50"] <= 1.0


DDP_VALIDATE = """
import json, sys
import lightning as L
import torch
from visionkit_core.workflows.inference import datamodule_for, load_checkpoint
torch.set_num_threads(1)
loaded = load_checkpoint(sys.argv[1])
two = sys.argv[3] == "2"
trainer = L.Trainer(accelerator="cpu", devices=2 if two else 1, strategy="ddp" if two else "auto",
                    logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
metrics = trainer.validate(loaded.model, datamodule=datamodule_for(loaded, None), verbose=False)[0]
if trainer.is_global_zero:
    with open(sys.argv[2], "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()}, f)
"""


def test_two_process_ddp_validation_gives_the_one_process_metrics(
    run: dict[str, Any], tmp_path: Path
) -> None:
    script = tmp_path / "ddp_validate.py"
    script.write_text(DDP_VALIDATE)
    results = {}
    for devices in ("2", "1"):
        out = subprocess.run(
            [sys.executable, str(script), str(run["ckpt"]), str(tmp_path / f"{devices}.json"), devices],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        results[devices] = json.loads((tmp_path / f"{devices}.json").read_text())
    assert {"val/mask_map", "val/mask_map_50", "val/map"} <= set(results["1"])
    for key, value in results["1"].items():  # 5 val images: ranks get 3 and 2, none counted twice
        assert results["2"][key] == pytest.approx(value, abs=1e-6), key
    assert results["1"]["val/mask_map"] == pytest.approx(run["summary"]["metrics"]["val/mask_map"], abs=1e-6)


def _photo(path: Path, size: tuple[int, int]) -> Path:
    from visionkit_instance_segmentation.scenes import render_scene

    Image.fromarray(render_scene(3, SIZE)[0]).resize((size[1], size[0])).save(path)
    return path


def test_predict_writes_coco_rle_in_original_pixels_and_instance_pngs(
    run: dict[str, Any], tmp_path: Path
) -> None:
    from faster_coco_eval import mask as mask_utils

    wide = _photo(tmp_path / "wide.png", (40, 96))
    out = vk(
        "predict",
        "--ckpt",
        str(run["ckpt"]),
        str(wide),
        "--output",
        str(tmp_path / "p.json"),
        "--threshold",
        "0",
        "--overlay",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    entries = json.loads((tmp_path / "p.json").read_text())
    # --overlay: the instance-id and drawn PNGs next to the .json file
    assert Image.open(tmp_path / "p_drawn" / "wide_drawn.png").size == (96, 40)
    assert [e["path"] for e in entries] == [str(wide)]
    found = entries[0]["instances"]
    assert found and set(found[0]) == {"label", "score", "box", "rle"}
    for item in found:
        assert item["label"] in NAMES and item["rle"]["size"] == [40, 96]
        mask = mask_utils.decode({"size": item["rle"]["size"], "counts": item["rle"]["counts"].encode()})
        assert mask.shape == (40, 96)
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 40
    folder = tmp_path / "out"
    out = vk(
        "predict",
        "--ckpt",
        str(run["ckpt"]),
        str(wide),
        "--output",
        str(folder),
        "--threshold",
        "0",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ids = np.asarray(Image.open(folder / "wide.png"))
    assert ids.shape == (40, 96) and ids.max() <= len(found)
    assert Image.open(folder / "wide_drawn.png").size == (96, 40)
    assert json.loads((folder / "predictions.json").read_text()) == entries


def test_onnx_export_is_verified_in_onnxruntime_and_gives_the_instances_of_predict(
    run: dict[str, Any], tmp_path: Path
) -> None:
    import onnxruntime as ort
    from visionkit_instance_segmentation.export import ExportedMaskRCNN, as_detections
    from visionkit_instance_segmentation.scenes import render_scene

    from visionkit_core.workflows.inference import load_checkpoint

    path = tmp_path / "m.onnx"
    out = vk("export", "--ckpt", str(run["ckpt"]), "--format", "onnx", "--output", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert (
        sidecar["output_names"] == ["boxes", "scores", "labels", "masks"] and sidecar["class_names"] == NAMES
    )
    images = torch.stack([torch.from_numpy(render_scene(50 + i, SIZE)[0]).permute(2, 0, 1) for i in range(3)])
    batch = images.float() / 255
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": batch.numpy()})
    assert outputs[0].shape == (3, 50, 4) and outputs[3].shape == (3, 50, 28, 28)
    task = load_checkpoint(run["ckpt"]).model.eval()
    module = ExportedMaskRCNN(task, SIZE).eval()
    with torch.no_grad():
        reference, graph = task(list(batch)), as_detections(module(batch), SIZE)
    for ref, got in zip(reference, graph, strict=True):  # the fixed-shape graph is torchvision's inference
        assert len(ref["scores"]) > 0
        for key in ("boxes", "scores", "labels", "masks"):
            assert torch.allclose(ref[key].float(), got[key].float(), atol=1e-5), key
    exported = as_detections(tuple(torch.from_numpy(o) for o in outputs), SIZE)  # type: ignore[arg-type]
    for ref, got in zip(reference, exported, strict=True):
        # onnxruntime gives the best instances too. (This barely trained network scores many proposals
        # exactly alike; which of those top-k keeps is the runtime's choice: further down, lists differ.)
        for i in range(3):
            same = (got["labels"] == ref["labels"][i]) & (
                (got["boxes"] - ref["boxes"][i]).abs().amax(1) < 1e-2
            )
            j = int(torch.nonzero(same)[0])
            assert abs(float(got["scores"][j] - ref["scores"][i])) < 1e-4
            assert float((got["masks"][j] - ref["masks"][i]).abs().max()) < 1e-3


def test_data_check_names_every_bad_annotation_with_exit_1(run: dict[str, Any]) -> None:
    out = vk("data", "check", str(run["data"]), "--task", "instance-segmentation", "--json", cwd=run["root"])
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["dataset"] == "visionkit:coco-instances" and not report["ok"]
    lines = {b["line"]: b["reason"] for b in report["bad"]}
    for ref, (reason, name) in run["broken"].items():
        assert reason in lines[ref] and f"({name})" in lines[ref]
    paths = " ".join(b["path"] + b["reason"] for b in report["bad"])
    assert "missing.png" in paths and "train_007.png" in paths


def test_on_bad_image_error_stops_before_training_listing_the_problems(run: dict[str, Any]) -> None:
    out = vk(*train_args(run["data"], "strict", 1), "--on-bad-image", "error", cwd=run["root"])
    assert out.returncode == 2
    for reason, _ in run["broken"].values():
        assert reason in out.stderr
    assert not (run["root"] / "strict" / "checkpoints").exists()


def test_the_yolo_seg_layout_trains_on_two_cpu_ddp_processes(tmp_path: Path) -> None:
    data = make_yolo_tree(tmp_path / "yolo", {"train": 8, "val": 3}, size=SIZE)
    ddp = ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--run-dir", "ddp"]
    tiny = ["--image-size", str(SIZE), "--batch-size", "4", "--epochs", "1", "--set", "task.fpn_channels=16"]
    out = vk("train", "--task", "instance-segmentation", "--data", str(data), *tiny, *ddp, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["dataset"] == "visionkit:yolo-seg" and 0.0 <= summary["metrics"]["val/mask_map_50"] <= 1.0
    assert summary["global_step"] == 1  # 8 images over 2 processes x 4 per batch


def test_the_demo_is_the_default_data_and_a_coco_folder_stays_detections_for_detection(
    tmp_path: Path,
) -> None:
    from visionkit_core.plugin.manager import get_plugins
    from visionkit_core.run.assemble import resolve_components
    from visionkit_core.run.config import RunConfig

    plugins = get_plugins()
    resolved = resolve_components(RunConfig(task="instance-segmentation"), plugins)
    assert resolved.dataset.qualname == "visionkit:instance-shapes" and resolved.data_root is None
    assert resolved.task_spec.monitor == "val/mask_map" and resolved.task_spec.predict_outputs == (
        ".json",
        "dir",
    )
    data = make_coco_tree(tmp_path / "c", {"train": 1}, size=SIZE)
    assert plugins.claim_data(data, "visionkit:instance-segmentation") == "visionkit:coco-instances"
    assert plugins.claim_data(data, "visionkit:detection") == "visionkit:coco"


def test_torchvision_mask_rcnn_by_name_trains_a_step() -> None:
    from visionkit_instance_segmentation.model import InstanceSegmenter

    task = InstanceSegmenter(arch="maskrcnn_resnet50_fpn", num_classes=2, class_names=["a", "b"])
    assert task.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 12:40] = 1
    target = {
        "boxes": torch.tensor([[12.0, 10, 40, 30]]),
        "labels": torch.tensor([1]),
        "masks": masks,
        "iscrowd": torch.tensor([0]),
    }
    losses = task.model([torch.rand(3, 64, 64)], [task.model_target(target)])
    assert {"loss_mask", "loss_classifier"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
