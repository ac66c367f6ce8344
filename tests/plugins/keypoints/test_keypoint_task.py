"""The keypoints task end to end: train (COCO and YOLO-pose), skip bad annotations, predict, validate, export.

One module fixture trains once, through the CLI, on a tiny COCO keypoints tree (32 px stick
figures) with real problems in it; every test below reuses that run and its checkpoint.
"""

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
import pytest
import torch
from keypoint_trees import make_coco_tree, make_yolo_tree
from PIL import Image
from visionkit_keypoints.scenes import KEYPOINT_NAMES, SKELETON, render_scene

VK = [sys.executable, "-m", "visionkit_core"]
WITHOUT = ("SLURM_", "_VISIONKIT")  # a run under a test runner started by SLURM is no SLURM job
SIZE = 32


def vk(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``visionkit ARGS`` as a process of its own, forked by the shared CLI server (tests/cli_server.py)."""
    return cli_server.visionkit(*args, cwd=cwd, without=WITHOUT, timeout=timeout)


def break_coco(root: Path) -> dict[str, Any]:
    """Spoil three training annotations (and point one image entry at a missing file): what each says."""
    path = root / "annotations" / "person_keypoints_train.json"
    doc = json.loads(path.read_text())
    anns = doc["annotations"]
    anns[0]["keypoints"] = anns[0]["keypoints"][:-3]  # 6 keypoints for a 7-keypoint category
    anns[1]["keypoints"][2] = 3  # visibility 3
    anns[2]["category_id"] = 9  # unknown category
    doc["images"].append({"id": 99, "file_name": "missing.png", "width": SIZE, "height": SIZE})
    path.write_text(json.dumps(doc))
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    return {
        "count": f"annotation id {anns[0]['id']}",
        "visibility": f"annotation id {anns[1]['id']}",
        "category": f"annotation id {anns[2]['id']}",
        "images": sorted({files[a["image_id"]] for a in anns[:3]} | {"missing.png"}),
    }


def train_args(data: Path, run_dir: str) -> list[str]:
    return ["train", "--task", "keypoints", "--data", str(data), "--image-size", str(SIZE),
            "--batch-size", "4", "--epochs", "2", "--run-dir", run_dir, "--logger", "csv"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("keypoints")
    data = make_coco_tree(root / "coco", {"train": 8, "val": 3}, size=SIZE)
    broken = break_coco(data)
    out = vk(*train_args(data, "run"), cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = root / "run"
    return {
        "root": root,
        "data": data,
        "broken": broken,
        "run": run_dir,
        "ckpt": run_dir / "checkpoints" / "last.ckpt",
        "summary": json.loads((run_dir / "summary.json").read_text()),
        "stderr": out.stderr,
    }


def test_a_coco_keypoints_tree_trains_judged_by_val_kp_map(run: dict[str, Any]) -> None:
    s = run["summary"]
    assert s["task"] == "visionkit:keypoints" and s["dataset"] == "visionkit:coco-keypoints"
    assert s["backbone"] == "timm:test_resnet" and s["class_names"] == ["figure"]
    assert s["monitor"]["metric"] == "val/kp_map" and s["monitor"]["mode"] == "max"
    for key in ("val/kp_map", "val/kp_map_50", "val/kp_map_75", "val/map", "val/map_50"):
        assert 0.0 <= s["metrics"][key] <= 1.0, key
    meta = torch.load(run["ckpt"], map_location="cpu", weights_only=True)["visionkit"]
    assert meta["data_info"]["extra"] == {"keypoint_names": KEYPOINT_NAMES, "skeleton": SKELETON}


def test_bad_annotations_are_skipped_and_named(run: dict[str, Any]) -> None:
    skipped = sorted(Path(p).name for p in run["summary"]["skipped_files"])
    assert skipped == run["broken"]["images"] and run["summary"]["skipped_images"] == len(skipped)


def test_data_check_names_each_bad_annotation_with_exit_1(run: dict[str, Any]) -> None:
    out = vk("data", "check", str(run["data"]), cwd=run["root"])  # no --task: the layout is unambiguous
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout + out.stderr
    for key in ("count", "visibility", "category"):
        assert run["broken"][key] in text, key
    assert "missing.png" in text and "6 keypoints, but the category has 7" in text and "visibility 3" in text
    assert "unknown category id 9" in text


def test_on_bad_image_error_stops_before_training_listing_the_problems(run: dict[str, Any]) -> None:
    out = vk("train", "--task", "keypoints", "--data", str(run["data"]), "--on-bad-image", "error",
             "--run-dir", "refused", cwd=run["root"])  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "visibility 3" in out.stderr and "Traceback" not in out.stderr


def test_a_killed_run_resumes_exactly(run: dict[str, Any]) -> None:
    """SIGKILL once the first epoch's checkpoint is written, then --resume last: the uninterrupted metrics."""
    proc = cli_server.start(*train_args(run["data"], "cut"), cwd=run["root"], without=WITHOUT)
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
    for key in ("val/kp_map", "val/kp_map_50", "val/map", "train/loss_epoch"):
        assert after["metrics"][key] == run["summary"]["metrics"][key], key


def test_plots_go_to_the_run_dir(run: dict[str, Any]) -> None:
    plots = run["run"] / "plots"
    for name in ("training_curves.png", "per_class_ap.png", "keypoint_samples.png"):
        assert (plots / name).stat().st_size > 1000, name
    assert (plots / "history.csv").read_text().startswith("epoch,train/loss,val/kp_map,val/kp_map_50,val/map")


def test_validate_from_the_checkpoint_alone(run: dict[str, Any], tmp_path: Path) -> None:
    out = vk("validate", "--ckpt", str(run["ckpt"]), "-o", "v.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((tmp_path / "v.json").read_text())["metrics"]
    for key in ("val/kp_map", "val/kp_map_50"):
        assert metrics[key] == pytest.approx(run["summary"]["metrics"][key], abs=1e-6)


def test_predict_writes_keypoints_in_original_pixels_and_drawn_skeletons(
    run: dict[str, Any], tmp_path: Path
) -> None:
    image = render_scene(77, SIZE)[0]
    Image.fromarray(image).resize((96, 64)).save(tmp_path / "wide.png")  # 3x wider, 2x taller than 32 px
    (tmp_path / "broken.png").write_bytes(b"not a png")
    args = ["predict", "--ckpt", str(run["ckpt"]), str(tmp_path / "wide.png"), str(tmp_path / "broken.png")]
    out = vk(*args, "--threshold", "0", "-o", "p.json", "--overlay", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broken.png" in out.stderr
    (entry,) = json.loads((tmp_path / "p.json").read_text())
    assert entry["path"].endswith("wide.png") and entry["instances"]
    for inst in entry["instances"]:
        assert inst["label"] == "figure" and 0.0 <= inst["score"] <= 1.0
        x0, y0, x1, y1 = inst["box"]
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 64
        assert len(inst["keypoints"]) == len(KEYPOINT_NAMES) and all(len(k) == 3 for k in inst["keypoints"])
    # keypoints come back in the 96 x 64 image's pixels: the model's 32 px square scaled by 3
    xs = [k[0] for inst in entry["instances"] for k in inst["keypoints"]]
    ys = [k[1] for inst in entry["instances"] for k in inst["keypoints"]]
    assert max(xs) <= 96.5 and max(ys) <= 64.5 and max(xs) > 32
    drawn = Image.open(tmp_path / "p_drawn" / "wide.png")
    assert drawn.size == (96, 64)
    folder = vk(*args, "-o", "out", cwd=tmp_path)
    assert folder.returncode == 0, folder.stderr[-2000:]
    assert (tmp_path / "out" / "predictions.json").is_file() and (
        tmp_path / "out" / "wide_drawn.png"
    ).is_file()


def test_onnx_export_is_verified_in_onnxruntime_and_gives_the_keypoints_of_predict(
    run: dict[str, Any], tmp_path: Path
) -> None:
    import onnxruntime as ort
    from visionkit_export.export import export_checkpoint
    from visionkit_keypoints.export import ExportedKeypointRCNN, as_detections

    from visionkit_core.workflows.inference import load_checkpoint

    # `visionkit export`'s own function, in this process (torch imported once: ~10 CPU s less than a
    # new process; plugins check's smoke run exports the task through the command)
    path = tmp_path / "m.onnx"
    written, diff = export_checkpoint(run["ckpt"], "onnx", path)  # onnxruntime vs PyTorch on 3 images
    assert written == path and diff < 1e-3
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["task"] == "keypoints"
    assert sidecar["output_names"] == ["boxes", "scores", "labels", "keypoints"]
    described = sidecar["outputs"]["keypoints"]
    assert described["shape"] == ["batch", 20, 7, 3] and described["names"] == KEYPOINT_NAMES
    assert described["skeleton"] == SKELETON
    images = torch.stack([torch.from_numpy(render_scene(50 + i, SIZE)[0]).permute(2, 0, 1) for i in range(3)])
    batch = images.float() / 255
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": batch.numpy()})
    assert outputs[0].shape == (3, 20, 4) and outputs[3].shape == (3, 20, 7, 3)
    task = load_checkpoint(run["ckpt"]).model.eval()
    with torch.no_grad():
        reference = task(list(batch))
        graph = as_detections(ExportedKeypointRCNN(task, SIZE).eval()(batch))
    keys = ("boxes", "scores", "labels", "keypoints", "keypoints_scores")
    for ref, got in zip(reference, graph, strict=True):  # the fixed-shape graph is torchvision's inference
        assert len(ref["scores"]) > 0
        for key in keys:
            assert torch.allclose(ref[key].float(), got[key].float(), atol=1e-4), key
    exported = as_detections(tuple(torch.from_numpy(o) for o in outputs))
    for ref, got in zip(reference, exported, strict=True):
        # onnxruntime gives the best instances too. (This barely trained network scores many proposals
        # almost alike; float rounding decides which of those survive: further down, lists differ.)
        for i in range(3):
            near = (got["boxes"] - ref["boxes"][i]).abs().amax(1) < 1e-3
            same = (got["labels"] == ref["labels"][i]) & near
            j = int(torch.nonzero(same)[0])
            assert abs(float(got["scores"][j] - ref["scores"][i])) < 1e-4
            assert float((got["keypoints"][j] - ref["keypoints"][i]).abs().max()) < 1e-3
            assert float((got["keypoints_scores"][j] - ref["keypoints_scores"][i]).abs().max()) < 1e-3


def test_the_yolo_pose_layout_trains_with_its_flip_idx_and_names(tmp_path: Path) -> None:
    data = make_yolo_tree(tmp_path / "yolo", {"train": 4, "val": 2}, size=SIZE)
    args = train_args(data, "run")
    args[args.index("--epochs") + 1] = "1"
    out = vk(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["dataset"] == "visionkit:yolo-pose" and 0.0 <= s["metrics"]["val/kp_map"] <= 1.0
    meta = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert meta["visionkit"]["data_info"]["extra"]["keypoint_names"] == KEYPOINT_NAMES  # from kpt_names


def test_the_claim_is_for_keypoint_runs_only(tmp_path: Path) -> None:
    from visionkit_keypoints.plugin import visionkit_claim_data

    coco = make_coco_tree(tmp_path / "coco", {"train": 1}, size=SIZE)
    yolo = make_yolo_tree(tmp_path / "yolo", {"train": 1}, size=SIZE)
    assert visionkit_claim_data(coco, "visionkit:keypoints") == "visionkit:coco-keypoints"
    assert visionkit_claim_data(yolo, "visionkit:keypoints") == "visionkit:yolo-pose"
    assert visionkit_claim_data(yolo, None) == "visionkit:yolo-pose"  # data.yaml with kpt_shape
    assert visionkit_claim_data(coco, "visionkit:detection") is None
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "data.yaml").write_text("train: images\nnames: [a]\n")
    assert visionkit_claim_data(tmp_path / "seg", None) is None  # a YOLO tree without keypoints


DDP_VALIDATE = """
import json, sys
import lightning as L
import torch
from visionkit_core.workflows.inference import datamodule_for, load_checkpoint
torch.set_num_threads(1)
loaded = load_checkpoint(sys.argv[1])
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
metrics = trainer.validate(loaded.model, datamodule=datamodule_for(loaded, None), verbose=False)[0]
if trainer.is_global_zero:
    with open(sys.argv[2], "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()}, f)
"""


def test_two_process_ddp_validation_gives_the_one_process_kp_map(run: dict[str, Any], tmp_path: Path) -> None:
    """3 validation images over 2 ranks (2 + 1, none repeated): the metrics of one process."""
    script = tmp_path / "ddp_validate.py"
    script.write_text(DDP_VALIDATE)
    out = subprocess.run(
        [sys.executable, str(script), str(run["ckpt"]), str(tmp_path / "ddp.json")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "ddp.json").read_text())
    for key in ("val/kp_map", "val/kp_map_50", "val/kp_map_75", "val/map", "val/map_50"):
        assert two[key] == pytest.approx(run["summary"]["metrics"][key], abs=1e-6), key
