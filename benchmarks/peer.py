"""The peer benchmark (issue 18, part 4): visionkit vs hand-written Lightning vs Ultralytics, one judge.

On rendered scenes (visionkit's detection and segmentation demo renderers, this benchmark's
own seeds: 160 train / 40 val images, 96 px with 3 object classes for detection, 64 px with
background + 3 classes for segmentation) it trains, each as a fresh process:

- ``visionkit``: ``visionkit train --task T --data DIR --image-size S --epochs E``, every
  other choice visionkit's default (network, batch size, recipe, threads, workers);
- ``lightning``: ``benchmarks/peer_lightning.py``, plain Lightning with the *same network*
  (read from visionkit's ``config.yaml`` of the same task, built with torchvision/timm/smp
  directly; its parameter count is checked against visionkit's), batch 16, flips only;
- ``ultralytics`` (where ``--peer-python`` has it installed, in its own virtualenv):
  ``yolo11n.yaml`` from scratch for detection, ``yolo26n-sem.yaml`` for segmentation,
  Ultralytics' defaults but the image size, epochs and seed (``benchmarks/peer_ultralytics.py``).

Every tool's model after its last epoch predicts the val images, and **one judge** scores
them all: pycocotools' ``COCOeval`` on COCO results (detection: mAP@[.5:.95], mAP@.5) and a
numpy confusion matrix over all val pixels (segmentation: mean IoU over the classes present
in truth or prediction, pixel accuracy). Each tool's own logged figure at the last epoch
is kept next to it (visionkit's must agree with the judge within 0.01).

Configurations, each run once and stored in the results file as soon as it finishes (a
rerun skips those already there, so an interrupted run resumes; ``--redo`` runs them again):

- equal epochs: every tool at each of ``--epochs`` (10, 30), quiet;
- equal wall time: visionkit and Lightning for the epochs that fit in Ultralytics' train
  wall at each of ``--epochs`` (from their own per-epoch time in the equal-epoch runs);
- quiet vs loaded: ``--loaded-tools`` at ``--loaded-epochs`` next to one competing
  CPU-bound process (``python -c "while True: pass"``, started just before the run).

Train wall is the training process's wall time (start-up, per-epoch validation and what the
tool writes included; prediction not); CPU seconds are its user + system time (``wait4``).

    python benchmarks/peer.py --peer-python /work/peer-venv/bin/python
    python benchmarks/peer.py --quick --peer-python /work/peer-venv/bin/python   # smoke: tiny, 1 epoch

Results: ``benchmarks/results/<name>.json`` and ``<name>.md`` (``--name``, default ``peer``;
``peer-quick`` with ``--quick``). Time is only a measurement on a quiet machine: take both
CPU slots of a shared one, ``flock /tmp/cpu-slot.1 flock /tmp/cpu-slot.2 python benchmarks/peer.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.shared_machine import run_timed

TASKS = ("detection", "segmentation")
TOOLS = ("visionkit", "lightning", "ultralytics")
#: Variables that would fix a tool's threading: removed, so each runs with its own defaults.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "VISIONKIT_THREADS")
SEG_CLASSES = ["background", "circle", "square", "triangle"]
DET_CLASSES = ["circle", "square", "triangle"]
TRAIN_SEED, VAL_SEED = 7_300_000, 7_400_000  # not the demos' seeds (0 and 1,000,000)
AGREEMENT = 0.01  # visionkit's logged val/map, val/miou vs the judge


# -- data ------------------------------------------------------------------------------------------
def render_detection(root: Path, counts: dict[str, int], size: int) -> Path:
    """A COCO tree (visionkit, Lightning, the judge) and a YOLO tree (Ultralytics) of the same scenes."""
    from PIL import Image
    from visionkit_detection.scenes import render_scene

    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(DET_CLASSES)]
    for split, count in counts.items():
        offset = TRAIN_SEED if split == "train" else VAL_SEED
        for folder in (root / split, root / "yolo" / "images" / split, root / "yolo" / "labels" / split):
            folder.mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            image, boxes, labels = render_scene(offset + i, size)
            name = f"{i:05d}.png"
            Image.fromarray(image).save(root / split / name)
            Image.fromarray(image).save(root / "yolo" / "images" / split / name)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            lines = []
            for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
                w, h = x1 - x0, y1 - y0
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": label + 1,
                        "bbox": [x0, y0, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
                cx, cy = (x0 + w / 2) / size, (y0 + h / 2) / size
                lines.append(f"{label} {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}\n")
            (root / "yolo" / "labels" / split / f"{i:05d}.txt").write_text("".join(lines), encoding="utf-8")
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc), encoding="utf-8")
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(DET_CLASSES))
    (root / "yolo" / "data.yaml").write_text(
        f"path: {root / 'yolo'}\ntrain: images/train\nval: images/val\nnames:\n{names}", encoding="utf-8"
    )
    (root / "done").write_text("", encoding="utf-8")
    return root


def render_segmentation(root: Path, counts: dict[str, int], size: int) -> Path:
    """A masks tree (visionkit, Lightning, the judge) and Ultralytics' semantic layout of the same scenes."""
    from PIL import Image
    from visionkit_segmentation.scenes import render_scene

    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for split, count in counts.items():
        offset = TRAIN_SEED if split == "train" else VAL_SEED
        for folder in (
            root / split / "images",
            root / split / "masks",
            root / "yolo" / "images" / split,
            root / "yolo" / "masks" / split,
        ):
            folder.mkdir(parents=True)
        for i in range(count):
            image, mask = render_scene(offset + i, size)
            name = f"{i:05d}.png"
            for folder in (root / split, root / "yolo"):
                sub = "" if folder == root / split else f"/{split}"
                Image.fromarray(image).save(f"{folder}/images{sub}/{name}")
                Image.fromarray(mask, mode="L").save(f"{folder}/masks{sub}/{name}")
    (root / "classes.txt").write_text("\n".join(SEG_CLASSES) + "\n", encoding="utf-8")
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(SEG_CLASSES))
    (root / "yolo" / "data.yaml").write_text(
        f"path: {root / 'yolo'}\ntrain: images/train\nval: images/val\nmasks_dir: masks\nnames:\n{names}",
        encoding="utf-8",
    )
    (root / "done").write_text("", encoding="utf-8")
    return root


# -- the judge -------------------------------------------------------------------------------------
def judge_detection(gt_json: Path, results: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools COCOeval (bbox) of COCO results against the val annotations."""
    import contextlib as _cl
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _cl.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        if not results:
            return {"map": 0.0, "map_50": 0.0, "boxes": 0}
        dt_ = gt.loadRes(results)
        ev = COCOeval(gt, dt_, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {
        "map": max(0.0, float(ev.stats[0])),
        "map_50": max(0.0, float(ev.stats[1])),
        "boxes": len(results),
    }


def judge_segmentation(root: Path, predictions: dict[str, Any], num_classes: int) -> dict[str, float]:
    """Mean IoU (classes in truth or prediction) and pixel accuracy: one confusion matrix, all val pixels."""
    import numpy as np
    from PIL import Image

    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for path in sorted((root / "val" / "masks").iterdir()):
        truth = np.asarray(Image.open(path)).astype(np.int64)
        pred = np.asarray(predictions[path.stem]).astype(np.int64)
        if pred.shape != truth.shape:
            raise RuntimeError(f"prediction for {path.name} has shape {pred.shape}, truth {truth.shape}")
        keep = (truth != 255) & (pred < num_classes)
        matrix += np.bincount(truth[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return {
        "miou": float(iou.mean()) if iou.size else 0.0,
        "pixel_acc": float(tp.sum() / max(1, matrix.sum())),
    }


# -- running the tools -----------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    env = {k: v for k, v in common.clean_env().items() if k not in THREAD_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def competitor(loaded: bool) -> Iterator[None]:
    """One CPU-bound process for the length of the block (when ``loaded``)."""
    if not loaded:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    time.sleep(1.0)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def timed(cmd: list[str], loaded: bool, timeout: float, log: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with competitor(loaded):
        result = run_timed(cmd, child_env(), timeout)
    log.write_text(result.pop("output"), encoding="utf-8")
    return {**result, "load1_start": round(load, 2)}


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def visionkit_network(task: str, config: dict[str, Any]) -> dict[str, Any]:
    """The network of a visionkit run (config.yaml's ``derived.task``), for the Lightning script."""
    t = config["derived"]["task"]
    net: dict[str, Any] = {"parameters": int(t.get("parameters", 0)), "arch": t["arch"]}
    if task == "detection":
        net.update(
            backbone=str(t["backbone"]).removeprefix("timm:"),
            fpn_channels=t["fpn_channels"],
            head_convs=t["head_convs"],
            extra_levels=bool(t["extra_levels"]),
            score_thresh=t["score_thresh"],
            nms_thresh=t["nms_thresh"],
            detections_per_img=t["detections_per_img"],
        )
        net["label"] = f"{t['arch']} over timm:{net['backbone']} (FPN {t['fpn_channels']})"
    else:
        backbone = str(t["backbone"])
        ns, _, name = backbone.rpartition(":")
        encoder = f"tu-{name}" if ns == "timm" else name
        depth = int(t.get("encoder_depth", 5))
        decoder = t.get("decoder_channels")
        if not decoder and str(t["arch"]).lower() in ("unet", "unetplusplus"):
            decoder = [256, 128, 64, 32, 16][5 - depth :]  # a 0.2 run (later runs record theirs)
        net.update(encoder=encoder, encoder_depth=depth, decoder_channels=list(decoder or []))
        net["label"] = f"{t['arch']} over {backbone} (depth {depth})"
    return net


def lightning_args(task: str, net: dict[str, Any]) -> list[str]:
    args = ["--arch", str(net["arch"])]
    if task == "detection":
        args += [
            "--backbone",
            net["backbone"],
            "--fpn-channels",
            str(net["fpn_channels"]),
            "--head-convs",
            str(net["head_convs"]),
            "--score-thresh",
            str(net["score_thresh"]),
            "--nms-thresh",
            str(net["nms_thresh"]),
            "--detections-per-img",
            str(net["detections_per_img"]),
        ]
        if net["extra_levels"]:
            args.append("--extra-levels")
    else:
        args += ["--encoder", net["encoder"], "--encoder-depth", str(net["encoder_depth"])]
        if net["decoder_channels"]:
            args += ["--decoder-channels", ",".join(str(c) for c in net["decoder_channels"])]
    return args


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.work: Path = opts.work
        self.sizes = {"detection": opts.det_size, "segmentation": opts.seg_size}
        self.counts = {"train": opts.train_images, "val": opts.val_images}
        self.out_json = opts.out_dir / f"{opts.name}.json"
        self.doc: dict[str, Any] = {"runs": {}, "networks": {}}
        if self.out_json.is_file():
            self.doc = json.loads(self.out_json.read_text(encoding="utf-8"))
        self.doc.setdefault("runs", {})
        self.doc.setdefault("networks", {})
        data = {
            "train_images": opts.train_images,
            "val_images": opts.val_images,
            "sizes": self.sizes,
            "seeds": {"train": TRAIN_SEED, "val": VAL_SEED},
        }
        before = self.doc.get("setup", {})
        if self.doc["runs"] and any(before.get(k) != v for k, v in data.items()):
            print(
                f"error: {self.out_json} holds runs on other data ({ {k: before.get(k) for k in data} }); "
                "choose another --name",
                file=sys.stderr,
            )
            raise SystemExit(2)
        machine = {"machine": common.machine(), "versions": versions(opts.peer_python)}
        self.doc["setup"] = {**before, **data, **machine}

    # -- bookkeeping
    def data(self, task: str) -> Path:
        root = self.work / f"{task}-{self.counts['train']}-{self.counts['val']}-{self.sizes[task]}"
        render = render_detection if task == "detection" else render_segmentation
        return render(root, self.counts, self.sizes[task])

    def save(self) -> None:
        self.opts.out_dir.mkdir(parents=True, exist_ok=True)
        self.doc["updated"] = dt.datetime.now().isoformat(timespec="seconds")
        self.out_json.write_text(json.dumps(self.doc, indent=2) + "\n", encoding="utf-8")
        self.out_json.with_suffix(".md").write_text(markdown(self.doc), encoding="utf-8")

    def run(self, task: str, tool: str, epochs: int, condition: str, kind: str) -> dict[str, Any] | None:
        key = f"{task}/{tool}/{epochs}/{condition}"
        if key in self.doc["runs"] and not self.opts.redo:
            return self.doc["runs"][key]  # type: ignore[no-any-return]
        print(f"[peer] {key} ({kind}) ...", file=sys.stderr, flush=True)
        started_at = commit()  # the code the run ran (others may commit while it does)
        folder = self.work / "runs" / key.replace("/", "-")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        runner = {"visionkit": self.visionkit, "lightning": self.lightning, "ultralytics": self.ultralytics}[
            tool
        ]
        try:
            record = runner(task, epochs, condition == "loaded", folder)
        except RuntimeError as err:  # a failed run is reported, not fatal: the others still run
            print(f"[peer] {key} failed: {err}", file=sys.stderr, flush=True)
            record = {"error": str(err)[-2000:]}
        record.update(
            task=task,
            tool=tool,
            epochs=epochs,
            condition=condition,
            kind=kind,
            finished=dt.datetime.now().isoformat(timespec="seconds"),
            commit=started_at,
        )
        self.doc["runs"][key] = record
        self.save()
        if "error" not in record:
            score = record["judge"].get("map", record["judge"].get("miou"))
            print(
                f"[peer] {key}: train wall {record['train_wall_s']:.1f} s, "
                f"CPU {record['train_cpu_s']:.1f} s, "
                f"judge {score:.3f}",
                file=sys.stderr,
                flush=True,
            )
        return record

    def network(self, task: str) -> dict[str, Any]:
        """visionkit's default network for ``task``: its run's config.yaml (a 1-step probe if none)."""
        if task not in self.doc["networks"]:
            folder = self.work / "probe" / task
            shutil.rmtree(folder, ignore_errors=True)
            cmd = [
                *common.visionkit_command(),
                "train",
                "--task",
                task,
                "--data",
                str(self.data(task)),
                "--image-size",
                str(self.sizes[task]),
                "--epochs",
                "1",
                "--run-dir",
                str(folder),
                "--set",
                "trainer.limit_train_batches=1",
                "--set",
                "trainer.limit_val_batches=1",
            ]
            run_timed(cmd, child_env(), self.opts.timeout)
            self.doc["networks"][task] = visionkit_network(task, read_yaml(folder / "config.yaml"))
        return self.doc["networks"][task]  # type: ignore[no-any-return]

    # -- the tools
    def visionkit(self, task: str, epochs: int, loaded: bool, folder: Path) -> dict[str, Any]:
        data, run_dir = self.data(task), folder / "run"
        cmd = [
            *common.visionkit_command(),
            "train",
            "--task",
            task,
            "--data",
            str(data),
            "--image-size",
            str(self.sizes[task]),
            "--epochs",
            str(epochs),
            "--run-dir",
            str(run_dir),
            *self.opts.visionkit_arg,
        ]
        result = timed(cmd, loaded, self.opts.timeout, folder / "train.log")
        config = read_yaml(run_dir / "config.yaml")
        net = visionkit_network(task, config)
        self.doc["networks"][task] = net
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        metric = "val/map" if task == "detection" else "val/miou"
        logged = {k: v for k, v in summary["metrics"].items() if k.startswith("val/")}
        predict = [
            *common.visionkit_command(),
            "predict",
            str(data / "val" if task == "detection" else data / "val" / "images"),
            "--ckpt",
            str(run_dir / "checkpoints" / "last.ckpt"),
        ]
        if task == "detection":
            out = folder / "predictions.json"
            pred = timed(
                [*predict, "--output", str(out), "--threshold", "0"],
                False,
                self.opts.timeout,
                folder / "predict.log",
            )
            judge = judge_detection(data / "annotations" / "instances_val.json", coco_results(data, out))
        else:
            out = folder / "masks"
            pred = timed([*predict, "--output", str(out)], False, self.opts.timeout, folder / "predict.log")
            judge = judge_segmentation(data, read_masks(out), len(SEG_CLASSES))
        runtime = config["derived"].get("runtime", {})
        return {
            "train_wall_s": result["wall_s"],
            "train_cpu_s": result["cpu_s"],
            "load1_start": result["load1_start"],
            "fit_s": summary.get("wall_s"),
            "judge": judge,
            "logged": logged,
            "logged_metric": logged.get(metric),
            "predict_wall_s": pred["wall_s"],
            "network": net["label"],
            "parameters": net["parameters"],
            "batch_size": config["derived"]["data"].get("batch_size"),
            "train_batches_per_epoch": runtime.get("train_batches_per_epoch"),
        }

    def lightning(self, task: str, epochs: int, loaded: bool, folder: Path) -> dict[str, Any]:
        data, net = self.data(task), self.network(task)
        script = [sys.executable, str(common.BENCH_DIR / "peer_lightning.py")]
        common_args = [
            "--task",
            task,
            "--data",
            str(data),
            "--out",
            str(folder / "run"),
            "--image-size",
            str(self.sizes[task]),
            *lightning_args(task, net),
        ]
        result = timed(
            [*script, "train", *common_args, "--epochs", str(epochs)],
            loaded,
            self.opts.timeout,
            folder / "train.log",
        )
        summary = json.loads((folder / "run" / "summary.json").read_text(encoding="utf-8"))
        if net["parameters"] and summary["parameters"] != net["parameters"]:
            raise RuntimeError(
                f"the Lightning network has {summary['parameters']} parameters, "
                f"visionkit's {net['parameters']}: "
                "not the same network"
            )
        if task == "detection":
            out = folder / "predictions.json"
            pred = timed(
                [*script, "predict", *common_args, "--predictions", str(out)],
                False,
                self.opts.timeout,
                folder / "predict.log",
            )
            judge = judge_detection(data / "annotations" / "instances_val.json", json.loads(out.read_text()))
        else:
            out = folder / "masks.npz"
            pred = timed(
                [*script, "predict", *common_args, "--predictions", str(out)],
                False,
                self.opts.timeout,
                folder / "predict.log",
            )
            judge = judge_segmentation(data, dict(_npz(out)), len(SEG_CLASSES))
        metric = "val/map" if task == "detection" else "val/miou"
        return {
            "train_wall_s": result["wall_s"],
            "train_cpu_s": result["cpu_s"],
            "load1_start": result["load1_start"],
            "fit_s": summary["fit_s"],
            "judge": judge,
            "logged": summary["logged"],
            "logged_metric": summary["logged"].get(metric),
            "predict_wall_s": pred["wall_s"],
            "network": net["label"],
            "parameters": summary["parameters"],
            "batch_size": 16,
        }

    def ultralytics(self, task: str, epochs: int, loaded: bool, folder: Path) -> dict[str, Any]:
        data = self.data(task)
        script = [str(self.opts.peer_python), str(common.BENCH_DIR / "peer_ultralytics.py")]
        yolo_task = "detect" if task == "detection" else "semantic"
        model = self.opts.ultralytics_det_model if task == "detection" else self.opts.ultralytics_seg_model
        run = folder / "run"
        train = [
            *script,
            "train",
            "--task",
            yolo_task,
            "--data",
            str(data / "yolo" / "data.yaml"),
            "--model",
            model,
            "--epochs",
            str(epochs),
            "--imgsz",
            str(self.sizes[task]),
            "--out",
            str(run),
        ]
        result = timed(train, loaded, self.opts.timeout, folder / "train.log")
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        images = data / "yolo" / "images" / "val"
        ext = ".json" if task == "detection" else ".npz"
        out = folder / f"predictions{ext}"
        predict = [
            *script,
            "predict",
            "--task",
            yolo_task,
            "--out",
            str(run),
            "--images",
            str(images),
            "--imgsz",
            str(self.sizes[task]),
            "--predictions",
            str(out),
        ]
        pred = timed(predict, False, self.opts.timeout, folder / "predict.log")
        if task == "detection":
            judge = judge_detection(data / "annotations" / "instances_val.json", json.loads(out.read_text()))
            own = summary["logged"].get("metrics/mAP50-95(B)")
        else:
            judge = judge_segmentation(data, dict(_npz(out)), len(SEG_CLASSES))
            own = next((v for k, v in summary["logged"].items() if "miou" in k.lower()), None)
        return {
            "train_wall_s": result["wall_s"],
            "train_cpu_s": result["cpu_s"],
            "load1_start": result["load1_start"],
            "fit_s": summary["fit_s"],
            "judge": judge,
            "logged": summary["logged"],
            "logged_metric": own,
            "predict_wall_s": pred["wall_s"],
            "network": model.removesuffix(".yaml"),
            "parameters": summary["parameters"],
        }

    # -- the plan
    def available(self, tool: str) -> bool:
        if tool != "ultralytics":
            return True
        py = self.opts.peer_python
        if not py or not Path(py).exists():
            return False
        probe = subprocess.run([str(py), "-c", "import ultralytics"], capture_output=True, env=child_env())
        return probe.returncode == 0

    def plan(self) -> None:
        tools = [t for t in self.opts.tools if self.available(t)]
        skipped = [t for t in self.opts.tools if t not in tools]
        if skipped:
            print(
                f"[peer] not installed, left out: {', '.join(skipped)} (see --peer-python)", file=sys.stderr
            )
        self.doc["setup"]["tools"] = tools
        for task in self.opts.tasks:
            self.doc["setup"].setdefault("judge_self_check", {})[task] = check = self_check(
                task, self.data(task)
            )
            if min(check.values()) < 0.99:
                raise SystemExit(f"the judge does not score the truth as perfect: {check}")
            for epochs in self.opts.epochs:
                for tool in tools:  # visionkit first: the Lightning script takes its network
                    self.run(task, tool, epochs, "quiet", "equal epochs")
            for tool in [t for t in self.opts.loaded_tools if t in tools]:
                for epochs in self.opts.loaded_epochs:
                    self.run(task, tool, epochs, "quiet", "loaded reference")
                    self.run(task, tool, epochs, "loaded", "loaded")
            if self.opts.equal_wall and "ultralytics" in tools:
                for epochs in self.opts.epochs:
                    ref = self.doc["runs"].get(f"{task}/ultralytics/{epochs}/quiet", {})
                    if "error" in ref or not ref:
                        continue
                    for tool in [t for t in tools if t != "ultralytics"]:
                        own = self.doc["runs"].get(f"{task}/{tool}/{epochs}/quiet", {})
                        if "error" in own or not own:
                            continue
                        fit = own.get("fit_s") or own["train_wall_s"]
                        overhead = max(0.0, own["train_wall_s"] - fit)
                        fitting = max(1, round((ref["train_wall_s"] - overhead) / (fit / epochs)))
                        self.doc.setdefault("equal_wall", {})[f"{task}/{tool}/{epochs}"] = fitting
                        self.run(task, tool, fitting, "quiet", f"equal wall to ultralytics@{epochs}")


def self_check(task: str, data: Path) -> dict[str, float]:
    """The judge on the truth itself (COCO boxes, and the YOLO labels Ultralytics reads; masks): all ~1.0."""
    if task == "segmentation":
        from PIL import Image

        truth = {p.stem: Image.open(p) for p in (data / "val" / "masks").iterdir()}
        return {"masks": judge_segmentation(data, truth, len(SEG_CLASSES))["miou"]}
    gt = data / "annotations" / "instances_val.json"
    doc = json.loads(gt.read_text(encoding="utf-8"))
    coco = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in doc["annotations"]
    ]
    yolo = []
    for im in doc["images"]:
        label = data / "yolo" / "labels" / "val" / f"{Path(im['file_name']).stem}.txt"
        for line in label.read_text(encoding="utf-8").splitlines():
            cls, cx, cy, w, h = (float(v) for v in line.split())
            size = im["width"]
            box = [(cx - w / 2) * size, (cy - h / 2) * size, w * size, h * size]
            yolo.append({"image_id": im["id"], "category_id": int(cls) + 1, "bbox": box, "score": 1.0})
    return {"coco": judge_detection(gt, coco)["map"], "yolo_labels": judge_detection(gt, yolo)["map"]}


def _npz(path: Path) -> Iterator[tuple[str, Any]]:
    import numpy as np

    with np.load(path) as data:
        for key in data.files:
            yield key, data[key]


def read_masks(folder: Path) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    return {p.stem: np.asarray(Image.open(p)) for p in folder.rglob("*.png") if "overlay" not in p.parts}


def coco_results(data: Path, predictions: Path) -> list[dict[str, Any]]:
    """visionkit's predict JSON (paths, label names, xyxy) -> COCO results of the val annotations."""
    doc = json.loads((data / "annotations" / "instances_val.json").read_text(encoding="utf-8"))
    ids = {im["file_name"]: im["id"] for im in doc["images"]}
    cats = {c["name"]: c["id"] for c in doc["categories"]}
    results = []
    for entry in json.loads(predictions.read_text(encoding="utf-8")):
        image_id = ids[Path(entry["path"]).name]
        for box in entry["boxes"]:
            x0, y0, x1, y1 = box["box"]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cats[box["label"]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": box["score"],
                }
            )
    return results


def versions(peer_python: Path | None) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in (
        "visionkit",
        "torch",
        "torchvision",
        "lightning",
        "timm",
        "segmentation-models-pytorch",
        "pycocotools",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    if peer_python and Path(peer_python).exists():
        probe = subprocess.run(
            [str(peer_python), "-c", "from importlib import metadata as m; print(m.version('ultralytics'))"],
            capture_output=True,
            text=True,
        )
        out["ultralytics"] = probe.stdout.strip() or "-"
    return out


def commit() -> str:
    from benchmarks.run import commit as git_commit

    return git_commit()


# -- report ----------------------------------------------------------------------------------------
def _score(run: dict[str, Any], task: str) -> tuple[Any, Any]:
    j = run.get("judge", {})
    return (j.get("map"), j.get("map_50")) if task == "detection" else (j.get("miou"), j.get("pixel_acc"))


def _s(value: Any) -> str:
    """Seconds with one decimal."""
    return f"{value:.1f}" if isinstance(value, (int, float)) else str(value)


def _table(title: str, headers: str, rows: list[list[Any]]) -> list[str]:
    """A markdown section: ``headers`` separated by ``;``."""
    return [f"### {title}", "", common.md_table(headers.split(";"), rows)] if rows else []


def markdown(doc: dict[str, Any]) -> str:
    setup = doc.get("setup", {})
    v, m, sizes = setup.get("versions", {}), setup.get("machine", {}), setup.get("sizes", {})
    lines = [
        f"# Peer benchmark: visionkit vs hand-written Lightning vs Ultralytics ({doc.get('updated', '')})",
        "",
        f"{setup.get('train_images')} train / {setup.get('val_images')} val rendered scenes (seeds "
        f"{setup.get('seeds')}), detection {sizes.get('detection')} px, segmentation "
        f"{sizes.get('segmentation')} px; {m.get('cpus')} CPUs ({m.get('cpu', '')}), load at start "
        f"{m.get('loadavg_start')}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "One judge: pycocotools COCOeval on each tool's predictions for the val images (detection), "
        "a numpy confusion matrix over all val pixels (segmentation). Train wall: the training "
        "process, start-up and per-epoch validation included. 'own': the tool's own logged "
        "figure at the last epoch.",
        "",
    ]
    runs = doc.get("runs", {})
    for task in TASKS:
        mine = {k: r for k, r in runs.items() if r.get("task") == task}
        if not mine:
            continue
        name, second = ("COCO mAP", "mAP@.5") if task == "detection" else ("mIoU", "pixel acc")
        lines += [f"## {task.capitalize()}", ""]
        net = doc.get("networks", {}).get(task)
        if net:
            lines += [
                f"visionkit's network (the Lightning script builds the same): {net['label']}, "
                f"{net['parameters']:,} parameters.",
                "",
            ]
        quiet = []
        order = sorted(
            mine.values(), key=lambda r: (r["kind"] != "equal epochs", r["epochs"], TOOLS.index(r["tool"]))
        )
        for r in (r for r in order if r["condition"] == "quiet"):
            if "error" in r:
                quiet.append([r["tool"], r["epochs"], r.get("kind", ""), "**failed**", "", "", "", "", ""])
                continue
            own = r.get("logged_metric")
            quiet.append(
                [
                    r["tool"],
                    r["epochs"],
                    r["kind"],
                    r["network"],
                    _s(r["train_wall_s"]),
                    _s(r["train_cpu_s"]),
                    *_score(r, task),
                    "-" if own is None else own,
                ]
            )
        lines += _table(
            "Quiet runs (equal epochs, equal wall time)",
            f"tool;epochs;configuration;network;train wall s;train CPU s;{name};{second};own {name}",
            quiet,
        )
        wall = []
        for key, fitting in doc.get("equal_wall", {}).items():
            t, tool, epochs = key.split("/")
            ref, own = (
                runs.get(f"{task}/ultralytics/{epochs}/quiet", {}),
                runs.get(f"{task}/{tool}/{fitting}/quiet", {}),
            )
            if t == task and "judge" in ref and "judge" in own:
                wall.append(
                    [
                        f"{epochs} epochs",
                        _s(ref["train_wall_s"]),
                        _score(ref, task)[0],
                        tool,
                        fitting,
                        _s(own["train_wall_s"]),
                        _score(own, task)[0],
                    ]
                )
        lines += _table(
            "Equal wall time",
            f"Ultralytics;its train wall s;its {name};tool;epochs in that time;train wall s;{name}",
            wall,
        )
        loaded = []
        for key, r in sorted(mine.items()):
            q = runs.get(key.rsplit("/", 1)[0] + "/quiet", {})
            if r["condition"] == "loaded" and "error" not in r and "train_wall_s" in q:
                ratio = common.ratio(r["train_wall_s"], q["train_wall_s"])
                loaded.append(
                    [
                        r["tool"],
                        r["epochs"],
                        _s(q["train_wall_s"]),
                        _s(r["train_wall_s"]),
                        f"{ratio:.2f}x",
                        _s(q["train_cpu_s"]),
                        _s(r["train_cpu_s"]),
                        _score(q, task)[0],
                        _score(r, task)[0],
                    ]
                )
        lines += _table(
            "Quiet vs loaded (one competing CPU-bound process)",
            f"tool;epochs;quiet wall s;loaded wall s;loaded / quiet;quiet CPU s;loaded CPU s;{name} quiet;"
            f"{name} loaded",
            loaded,
        )
        agree = []
        for r in order:
            if r["tool"] == "visionkit" and r.get("logged_metric") is not None and "judge" in r:
                judged = _score(r, task)[0]
                diff = abs(r["logged_metric"] - judged)
                ok = "yes" if diff <= AGREEMENT else "**no**"
                agree.append([r["epochs"], r["condition"], r["logged_metric"], judged, f"{diff:.4f}", ok])
        metric = "val/map" if task == "detection" else "val/miou"
        lines += _table(
            f"visionkit's logged {metric} vs the judge",
            f"epochs;condition;logged {metric};judge;abs. difference;within {AGREEMENT}",
            agree,
        )
    return "\n".join(lines) + "\n"


def parse_list(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if allowed:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=lambda s: parse_list(s, TASKS), default=list(TASKS))
    parser.add_argument("--tools", type=lambda s: parse_list(s, TOOLS), default=list(TOOLS))
    parser.add_argument("--epochs", type=lambda s: [int(x) for x in parse_list(s)], default=[10, 30])
    parser.add_argument("--loaded-epochs", type=lambda s: [int(x) for x in parse_list(s)], default=[10])
    parser.add_argument(
        "--loaded-tools", type=lambda s: parse_list(s, TOOLS), default=["visionkit", "ultralytics"]
    )
    parser.add_argument("--no-equal-wall", dest="equal_wall", action="store_false")
    parser.add_argument("--train-images", type=int, default=160)
    parser.add_argument("--val-images", type=int, default=40)
    parser.add_argument("--det-size", type=int, default=96)
    parser.add_argument("--seg-size", type=int, default=64)
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=Path("/work/peer-venv/bin/python"),
        help="a Python with ultralytics installed (its own virtualenv); missing: left out",
    )
    parser.add_argument("--ultralytics-det-model", default="yolo11n.yaml")
    parser.add_argument("--ultralytics-seg-model", default="yolo26n-sem.yaml")
    parser.add_argument(
        "--visionkit-arg",
        action="append",
        default=[],
        help="an extra argument for `visionkit train` (repeatable), e.g. --visionkit-arg=--batch-size=16",
    )
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vk-peer")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--name", help="results file stem (default peer; peer-quick with --quick)")
    parser.add_argument(
        "--redo", action="store_true", help="run configurations already in the results file again"
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 16 train / 8 val images (64 px, segmentation 32 px), 1 epoch, quiet runs only",
    )
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.train_images, opts.val_images, opts.det_size, opts.seg_size = 16, 8, 64, 32
        opts.epochs, opts.loaded_tools, opts.equal_wall = [1], [], False
        opts.work = opts.work.with_name(opts.work.name + "-quick")
    opts.name = opts.name or ("peer-quick" if opts.quick else "peer")
    bench = Bench(opts)
    bench.plan()
    print(markdown(bench.doc))
    print(f"wrote {bench.out_json} and .md", file=sys.stderr)
    failed = [k for k, r in bench.doc["runs"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
