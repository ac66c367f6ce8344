"""The peer benchmark's Ultralytics side: runs in the benchmark's own virtualenv, never in visionkit's.

Ultralytics (AGPL-3.0) is not a dependency of visionkit and none of its code is copied here:
this script only calls its public Python API, in a separate environment, e.g.::

    python3 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics

``benchmarks/peer.py --peer-python /work/peer-venv/bin/python`` runs it as a fresh process:

    python peer_ultralytics.py train --task detect --data data.yaml --model yolo11n.yaml --epochs 10 \
        --imgsz 96 --out RUN
    python peer_ultralytics.py predict --task detect --out RUN --images DIR --imgsz 96 --predictions P.json

``train`` trains from scratch (a model ``.yaml``) with Ultralytics' defaults but the image
size, epochs and seed, on the CPU, and copies its per-epoch ``results.csv`` next to a small
``summary.json``. ``predict`` loads ``last.pt`` (the weights after the last epoch, its EMA)
and writes, for the images in ``--images``: COCO results (``image_id`` = position in the
sorted file list + 1, ``category_id`` = class + 1; confidence >= 0.001, its validator's
setting) or an ``.npz`` of class-index masks keyed by file stem (``semantic``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, font or weight downloads


def train(args: argparse.Namespace) -> int:
    from ultralytics import YOLO

    model = YOLO(args.model, task=args.task)
    started = time.perf_counter()
    model.train(
        data=str(args.data),
        epochs=args.epochs,
        imgsz=args.imgsz,
        device="cpu",
        seed=args.seed,
        project=str(args.out.parent),
        name=args.out.name,
        exist_ok=True,
        verbose=False,
        **({"batch": args.batch} if args.batch else {}),
    )
    fit_s = time.perf_counter() - started
    rows = list(csv.DictReader((args.out / "results.csv").open(encoding="utf-8")))
    last = {k.strip(): float(v) for k, v in rows[-1].items() if k and v not in (None, "")} if rows else {}
    params = sum(p.numel() for p in model.model.parameters()) if model.model is not None else 0
    summary = {"fit_s": fit_s, "logged": last, "parameters": params, "epochs": args.epochs}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0


def predict(args: argparse.Namespace) -> int:
    import numpy as np
    from ultralytics import YOLO

    weights = args.out / "weights" / "last.pt"
    model = YOLO(str(weights), task=args.task)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if args.task == "detect":
        results = []
        for start in range(0, len(files), 16):
            chunk = files[start : start + 16]
            outs = model.predict(
                [str(f) for f in chunk],
                imgsz=args.imgsz,
                conf=0.001,
                iou=0.7,
                max_det=100,
                device="cpu",
                verbose=False,
            )
            for offset, out in enumerate(outs):
                boxes = out.boxes
                for box, score, cls in zip(
                    boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
                ):
                    x0, y0, x1, y1 = box
                    results.append(
                        {
                            "image_id": start + offset + 1,
                            "category_id": int(cls) + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score),
                        }
                    )
        args.predictions.write_text(json.dumps(results) + "\n", encoding="utf-8")
    else:
        masks = {}
        for start in range(0, len(files), 16):
            chunk = files[start : start + 16]
            outs = model.predict([str(f) for f in chunk], imgsz=args.imgsz, device="cpu", verbose=False)
            for f, out in zip(chunk, outs, strict=True):
                sem = out.semantic_mask
                data = getattr(sem, "data", sem)
                masks[f.stem] = np.asarray(data.cpu() if hasattr(data, "cpu") else data).astype(np.uint8)
        np.savez_compressed(args.predictions, **masks)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("train", "predict"))
    parser.add_argument("--task", choices=("detect", "semantic"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="the run folder (Ultralytics' save_dir)")
    parser.add_argument("--data", type=Path, help="train: the data .yaml")
    parser.add_argument("--model", default="yolo11n.yaml", help="train: a model .yaml (from scratch)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=0, help="0: Ultralytics' default")
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=Path, help="predict: the folder of val images")
    parser.add_argument("--predictions", type=Path, help="predict: COCO results .json or masks .npz")
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.data is None:
            parser.error("train needs --data")
        if args.out.exists():
            shutil.rmtree(args.out)  # a fresh run, never Ultralytics' resume or an incremented name
        return train(args)
    if args.images is None or args.predictions is None:
        parser.error("predict needs --images and --predictions")
    return predict(args)


if __name__ == "__main__":
    raise SystemExit(main())
