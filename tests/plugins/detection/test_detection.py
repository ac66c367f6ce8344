"""The detection task end to end: train, resume, validate (1 and 2 processes), predict, export, models.

One module fixture trains once, through the CLI, on a small COCO tree with real problems in it
(bad annotations, a missing and an unreadable image): one epoch, then ``--resume last`` for a
second. Every test below reuses that run and its checkpoint; the few that need another run
(the uninterrupted twin for exact resume, a 2-process DDP run on the YOLO layout) start it
themselves.
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
import numpy as np
import pytest
import torch
from det_trees import NAMES, break_coco, make_coco_tree, make_yolo_tree, scene
from PIL import Image

from visionkit_core import UsageError

VK = [sys.executable, "-m", "visionkit_core"]
WITHOUT = ("SLURM_", "_VISIONKIT")  # a run under a test runner started by SLURM is no SLURM job
SIZE = 64


def vk(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``visionkit ARGS`` as a process of its own, forked by the shared CLI server (tests/cli_server.py)."""
    return cli_server.visionkit(*args, cwd=cwd, without=WITHOUT, timeout=timeout)


def train_args(data: Path, run_dir: str, epochs: int) -> list[str]:
    return [
        "train", "--task", "detection", "--data", str(data), "--image-size", str(SIZE),
        "--batch-size", "8", "--epochs", str(epochs), "--deterministic", "--run-dir", run_dir,
        "--logger", "csv", "--logger", "tensorboard", "--callback", "wandb-images",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("detection")
    data = make_coco_tree(root / "coco", {"train": 32, "val": 9, "test": 3}, size=SIZE)
    broken = break_coco(data)
    (data / "train" / "train_005.jpg").write_bytes(b"not an image")
    out = vk(*train_args(data, "run", 2), cwd=root)
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


# -- training ----------------------------------------------------------------------------------


def test_a_coco_tree_trains_and_reports_map_judged_by_val_map(run: dict[str, Any]) -> None:
    s = run["summary"]
    assert s["task"] == "visionkit:detection" and s["dataset"] == "visionkit:coco"
    assert s["backbone"] == "timm:test_resnet" and s["class_names"] == NAMES
    for key in ("val/map", "val/map_50", "val/map_75", "val/mar_100"):
        assert 0.0 <= s["metrics"][key] <= 1.0
    assert s["monitor"] == {"metric": "val/map", "mode": "max", "best": s["monitor"]["best"]}
    assert "val_map=" in Path(s["best_checkpoint"]).name and s["epochs"] == 2
    assert s["train_images_per_s"] > 0  # counted from list batches


def test_bad_samples_are_skipped_and_counted(run: dict[str, Any]) -> None:
    skipped = "\n".join(run["summary"]["skipped_files"])
    for name in (*run["broken"].values(), "missing.jpg", "train_005.jpg"):
        assert name in skipped
    assert run["summary"]["skipped_images"] >= 5
    assert "train_005.jpg" in run["stderr"]  # named while training, not only in the summary


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
    for key in ("val/map", "val/map_50", "val/map_75", "train/loss_epoch"):
        assert after["metrics"][key] == run["summary"]["metrics"][key], key


def test_plots_go_to_the_run_dir_and_tensorboard(run: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plots = run["run"] / "plots"
    for name in ("detection_samples.png", "per_class_ap.png", "training_curves.png", "val_predictions.png"):
        assert (plots / name).stat().st_size > 1000, name
    history = (plots / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train/loss,val/map") and len(history) == 3
    assert [line.split(",")[0] for line in (plots / "per_class_ap.csv").read_text().splitlines()[1:]] == NAMES
    events = sorted(run["run"].rglob("events.out.tfevents.*"))
    assert events
    tags: set[str] = set()
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"]) | set(acc.Tags()["scalars"])
    for tag in ("plots/detection_samples", "plots/per_class_ap", "plots/training_curves", "val/predictions"):
        assert tag in tags
    assert "val/map" in tags and "val/map_50" in tags


# -- from the checkpoint alone -------------------------------------------------------------------


DDP_VALIDATE = """
import json, sys
import lightning as L
import torch
from visionkit_core.workflows.inference import datamodule_for, load_checkpoint
torch.set_num_threads(1)
loaded = load_checkpoint(sys.argv[1])
loaded.model.hparams.class_metrics = True
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
metrics = trainer.validate(loaded.model, datamodule=datamodule_for(loaded, None), verbose=False)[0]
if trainer.is_global_zero:
    with open(sys.argv[2], "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()}, f)
"""


def test_validate_and_test_from_the_checkpoint_alone(run: dict[str, Any], tmp_path: Path) -> None:
    """The ``visionkit validate`` / ``test`` workflow: the last epoch's mAP again, and the test split's."""
    from visionkit_core.workflows.evaluate import evaluate

    val = evaluate("validate", run["ckpt"], output=tmp_path / "v.json", accelerator="cpu")
    for key in ("val/map", "val/map_50", "val/map_75"):
        assert val["metrics"][key] == pytest.approx(run["summary"]["metrics"][key], abs=1e-6)
    test = evaluate("test", run["ckpt"], output=tmp_path / "t.json", accelerator="cpu")
    assert test["monitor"] == "test/map" and 0.0 <= test["metrics"]["test/map_50"] <= 1.0
    assert json.loads((tmp_path / "t.json").read_text())["split"] == "test"


def test_two_process_ddp_validation_gives_the_one_process_map(run: dict[str, Any], tmp_path: Path) -> None:
    import lightning as L

    from visionkit_core.workflows.inference import datamodule_for, load_checkpoint

    script = tmp_path / "ddp_validate.py"
    script.write_text(DDP_VALIDATE)
    out = subprocess.run(
        [sys.executable, str(script), str(run["ckpt"]), str(tmp_path / "ddp.json")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "ddp.json").read_text())
    loaded = load_checkpoint(run["ckpt"])
    loaded.model.hparams.class_metrics = True
    dm = datamodule_for(loaded, None)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    one = {k: float(v) for k, v in trainer.validate(loaded.model, datamodule=dm, verbose=False)[0].items()}
    assert len(dm.datasets["val"]) % 2 == 1  # the ranks got 5 and 4 images: none repeated
    assert set(one) == set(two) and {f"val/map/{n}" for n in NAMES} <= set(one)
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-6), key
    assert one["val/map"] == pytest.approx(run["summary"]["metrics"]["val/map"], abs=1e-6)


def _photo(path: Path, seed: int, size: tuple[int, int]) -> Path:
    image = scene(seed, SIZE)[0]
    Image.fromarray(image).resize((size[1], size[0])).save(path)
    return path


def test_predict_writes_boxes_in_original_pixels_as_json_with_drawn_boxes(
    run: dict[str, Any], tmp_path: Path
) -> None:
    from visionkit_detection.data import decode_image, letterbox

    from visionkit_core.workflows.inference import load_checkpoint

    wide = _photo(tmp_path / "wide.jpg", 3, (96, 192))
    small = _photo(tmp_path / "small.png", 4, (40, 40))
    (tmp_path / "broken.png").write_bytes(b"nope")
    inputs = [str(wide), str(small), str(tmp_path / "broken.png")]
    options = ["--output", str(tmp_path / "pred.json"), "--threshold", "0.05", "--overlay"]
    out = vk("predict", "--ckpt", str(run["ckpt"]), *inputs, *options, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "skipped unreadable image" in out.stderr and "broken.png" in out.stderr
    entries = json.loads((tmp_path / "pred.json").read_text())
    assert [e["path"] for e in entries] == [str(wide), str(small)]
    for entry, (h, w) in zip(entries, [(96, 192), (40, 40)], strict=True):
        assert set(entry) == {"path", "boxes"}
        for box in entry["boxes"]:
            assert set(box) == {"label", "score", "box"} and box["label"] in NAMES and box["score"] >= 0.05
            x0, y0, x1, y1 = box["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        scores = [b["score"] for b in entry["boxes"]]
        assert scores == sorted(scores, reverse=True)
    # the same boxes as the model on the letterboxed image, scaled back by 192 / 64
    model = load_checkpoint(run["ckpt"]).model.eval()
    with torch.no_grad():
        det = model([letterbox(decode_image(str(wide)), SIZE).float() / 255])[0]
    expected = (det["boxes"][det["scores"] >= 0.05] * 192 / SIZE).clamp(min=0)
    expected[:, 0::2] = expected[:, 0::2].clamp(max=192)
    expected[:, 1::2] = expected[:, 1::2].clamp(max=96)  # boxes in the padding below it go
    expected = expected[(expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])]
    got = torch.tensor([b["box"] for b in entries[0]["boxes"]]).reshape(-1, 4)
    assert len(got) == len(expected) > 0

    def by_position(boxes: torch.Tensor) -> torch.Tensor:  # boxes of equal score may come in either order
        keys = sorted(range(len(boxes)), key=lambda i: [round(v, 1) for v in boxes[i].tolist()])
        return boxes[keys]

    assert torch.allclose(by_position(got), by_position(expected), atol=0.01)
    drawn = tmp_path / "pred_drawn"
    assert Image.open(drawn / "wide.png").size == (192, 96) and Image.open(drawn / "small.png").size == (
        40,
        40,
    )
    assert not np.array_equal(np.asarray(Image.open(drawn / "wide.png")), np.asarray(Image.open(wide)))


def test_predict_csv_has_one_row_per_box_and_the_threshold_filters(
    run: dict[str, Any], tmp_path: Path
) -> None:
    from visionkit_core.workflows.predict import predict

    image = _photo(tmp_path / "a.png", 7, (80, 80))  # square: no box can lie in letterbox padding
    predict(run["ckpt"], [image], tmp_path / "all.csv", {"threshold": 0.0}, accelerator="cpu")
    predict(run["ckpt"], [image], tmp_path / "some.csv", {"threshold": 0.2}, accelerator="cpu")
    rows = (tmp_path / "all.csv").read_text().splitlines()
    assert rows[0] == "path,label,score,x0,y0,x1,y1" and len(rows) == 1 + 100  # detections_per_img
    kept = [r for r in rows[1:] if float(r.split(",")[2]) >= 0.2]
    assert (tmp_path / "some.csv").read_text().splitlines()[1:] == kept


def test_onnx_export_is_verified_and_gives_the_boxes_of_predict(run: dict[str, Any], tmp_path: Path) -> None:
    import onnxruntime as ort
    from visionkit_detection.data import decode_image, letterbox

    from visionkit_core.workflows.inference import load_checkpoint

    onnx_path = tmp_path / "det.onnx"
    out = vk(
        "export", "--ckpt", str(run["ckpt"]), "--format", "onnx", "--output", str(onnx_path), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sidecar = json.loads((tmp_path / "det.onnx.json").read_text())
    assert sidecar["output_names"] == ["boxes", "scores", "labels"] and sidecar["class_names"] == NAMES
    assert sidecar["input"]["shape"] == ["batch", 3, SIZE, SIZE]
    images = [
        letterbox(decode_image(str(_photo(tmp_path / f"{i}.png", 20 + i, (SIZE, SIZE)))), SIZE)
        for i in range(3)
    ]
    batch = torch.stack(images).float() / 255
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": batch.numpy()})
    assert boxes.shape == (3, 100, 4) and scores.shape == labels.shape == (3, 100)
    model = load_checkpoint(run["ckpt"]).model.eval()
    with torch.no_grad():
        reference = model(list(batch))
    for i, det in enumerate(reference):
        n = len(det["scores"])
        assert np.allclose(scores[i, :n], det["scores"].numpy(), atol=1e-4)
        assert np.allclose(boxes[i, :n], det["boxes"].numpy(), atol=1e-2)
        assert (labels[i, :n] == det["labels"].numpy()).all()
        assert (scores[i, n:] == 0).all() and (labels[i, n:] == -1).all()


def test_torchscript_export_is_verified_too(run: dict[str, Any], tmp_path: Path) -> None:
    from visionkit_export.export import export_checkpoint

    path, diff = export_checkpoint(run["ckpt"], "torchscript", tmp_path / "det.pt")
    scripted = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    boxes, scores, labels = scripted(torch.rand(4, 3, SIZE, SIZE))  # any batch size
    assert diff <= 1e-2 and boxes.shape == (4, 100, 4) and scores.shape == (4, 100)
    assert labels.dtype == torch.int64


# -- models ----------------------------------------------------------------------------------------


def _step(task: Any, size: int = 64) -> None:
    """One real training step and one inference of ``task`` on two rendered images."""
    images, targets = [], []
    for seed in (1, 2):
        image, boxes, labels = scene(seed, size)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels),
                        "iscrowd": torch.zeros(len(labels), dtype=torch.int64)})  # fmt: skip
    task.train()
    loss = task.training_step((images, targets), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.parameters())
    task.eval()
    with torch.no_grad():
        det = task(images)
    assert len(det) == 2 and det[0]["boxes"].shape[-1] == 4
    assert ((det[0]["labels"] >= 0) & (det[0]["labels"] < 3)).all()


@pytest.mark.parametrize(
    "arch",
    ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2",
     "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large"],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_torchvision_detectors_by_name_train_and_detect(arch: str) -> None:
    from visionkit_detection.model import Detector

    # (fewer sampled proposals: Faster R-CNN's box head dominates a CPU step with its default 512)
    options = {"box_batch_size_per_image": 64} if arch.startswith("fasterrcnn") else {}
    task = Detector(num_classes=3, class_names=NAMES, arch=arch, detector_options=options)
    _step(task)


@pytest.mark.parametrize("head", ["fcos", "retinanet", "fasterrcnn"])
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_a_timm_backbone_goes_under_each_head(head: str) -> None:
    from visionkit_detection.model import Detector

    task = Detector(backbone="timm:resnet18", num_classes=3, class_names=NAMES, arch=head)
    assert type(task.model.backbone.body).__name__ == "FeatureListNet"  # timm features_only
    assert task.model.backbone.strides[:3] == [8, 16, 32]
    _step(task)


def test_export_refuses_detectors_torch_cannot_export_naming_those_that_work() -> None:
    from visionkit_detection.model import Detector

    task = Detector(num_classes=3, class_names=NAMES, arch="fasterrcnn")
    with pytest.raises(
        UsageError, match=r"cannot be exported.*Export works for: fcos, retinanet, fcos_resnet50_fpn"
    ):
        task.export_spec(SIZE)


def test_detector_options_reach_torchvision_and_unknown_ones_are_refused() -> None:
    from visionkit_detection.model import Detector

    from visionkit_core import ConfigError

    task = Detector(num_classes=3, detector_options={"topk_candidates": 50, "center_sampling_radius": 2.0})
    assert task.model.topk_candidates == 50 and task.model.center_sampling_radius == 2.0
    with pytest.raises(ConfigError, match=r"fcos detectors take no 'box_batch_size_per_image'; they take: "):
        Detector(num_classes=3, detector_options={"box_batch_size_per_image": 64})


def test_pretrained_offline_fails_fast_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import time

    from visionkit_detection.model import Detector

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    started = time.perf_counter()
    with pytest.raises(
        UsageError, match=r"cannot load pretrained weights for timm:test_resnet.*--no-pretrained"
    ):
        Detector(num_classes=3, pretrained=True)
    with pytest.raises(
        UsageError, match=r"fasterrcnn_mobilenet_v3_large_320_fpn.*torch hub cache.*--weights FILE"
    ):
        Detector(num_classes=3, pretrained=True, arch="fasterrcnn_mobilenet_v3_large_320_fpn")
    assert time.perf_counter() - started < 30


def test_weights_file_loads_into_the_backbone(tmp_path: Path) -> None:
    import timm
    from visionkit_detection.model import Detector

    source = timm.create_model("test_resnet", num_classes=10).state_dict()  # a classifier's weights
    torch.save(source, tmp_path / "w.pt")
    body = Detector(num_classes=3, weights=str(tmp_path / "w.pt")).model.backbone.body.state_dict()
    shared = [k for k in body if k in source]
    assert len(shared) == len(body) > 10
    assert all(torch.equal(body[k], source[k]) for k in shared)


def test_media_samples_carry_true_and_predicted_boxes_for_wandb(run: dict[str, Any]) -> None:
    import wandb
    from visionkit_wandb_images.render import wandb_media

    from visionkit_core.workflows.inference import datamodule_for, load_checkpoint

    loaded = load_checkpoint(run["ckpt"])
    dm = datamodule_for(loaded, None)
    dm.setup("validate")
    loaded.model.eval()
    images, targets, _ = next(iter(dm.val_dataloader()))
    samples = loaded.model.media_samples((images, targets), 3)
    assert len(samples) == 3 and samples[0].image.shape == (SIZE, SIZE, 3)
    assert [len(s.true_boxes) for s in samples] == [len(t["boxes"]) for t in targets[:3]]
    media = wandb_media(samples, NAMES)
    image = wandb.Image(samples[1].image, boxes=media["boxes"][1])
    assert image is not None and media["boxes"][1]["ground_truth"]["box_data"][0]["domain"] == "pixel"


def test_the_yolo_layout_trains_on_two_cpu_ddp_processes(tmp_path: Path) -> None:
    data = make_yolo_tree(tmp_path / "yolo", {"train": 24, "val": 7}, size=SIZE)
    ddp = ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--run-dir", "ddp"]
    tiny = ["--image-size", str(SIZE), "--batch-size", "8", "--epochs", "1"]
    out = vk("train", "--task", "detection", "--data", str(data), *tiny, *ddp, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["dataset"] == "visionkit:yolo" and 0.0 <= summary["metrics"]["val/map_50"] <= 1.0
    assert summary["global_step"] == 1  # 24 images, 2 processes x 8 per batch, last partial batch dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "yolo"]


def test_the_demo_is_the_default_data_and_backbone() -> None:
    from visionkit_core.plugin.manager import get_plugins
    from visionkit_core.run.assemble import resolve_components
    from visionkit_core.run.config import RunConfig

    resolved = resolve_components(RunConfig(task="detection"), get_plugins())
    assert resolved.dataset.qualname == "visionkit:shapes" and resolved.data_root is None
    assert resolved.backbone.qualname == "timm:test_resnet"
    assert resolved.task_spec.monitor == "val/map" and resolved.task_spec.predict_outputs == (".json", ".csv")
