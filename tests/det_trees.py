"""Detection trees for tests: rendered shapes in the COCO and YOLO layouts, and ways to break them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

NAMES = ["circle", "square", "triangle"]
CATEGORY_IDS = [3, 7, 11]  # COCO ids need not start at 1 or be contiguous


def scene(seed: int, size: int) -> tuple[np.ndarray, list[list[float]], list[int]]:
    from visionkit_detection.scenes import render_scene

    return render_scene(seed, size)


def make_coco_tree(
    root: Path,
    counts: dict[str, int],
    size: int = 64,
    negatives: int = 1,
    split_dirs: dict[str, str] | None = None,
) -> Path:
    """``root/annotations/instances_<split>.json`` + images in ``root/<split>/``; the first
    ``negatives`` images of each split have no objects. Returns ``root``."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 100
    for s_index, (split, count) in enumerate(counts.items()):
        folder = (split_dirs or {}).get(split, split)
        (root / folder).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, boxes, labels = scene(1000 * s_index + i, size)
            if i < negatives:
                image, boxes, labels = scene(5000 + i, size)[0] * 0 + 90, [], []
            name = f"{split}_{i:03d}.jpg" if i % 2 else f"{split}_{i:03d}.png"
            Image.fromarray(image.astype(np.uint8)).save(root / folder / name, quality=95)
            images.append({"id": 10 + i, "file_name": name, "width": size, "height": size})
            for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
                ann_id += 1
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": 10 + i,
                        "category_id": CATEGORY_IDS[label],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
        cats = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, NAMES, strict=True)]
        doc = {"images": images, "annotations": annotations, "categories": cats}
        stem = folder if split_dirs else split
        (root / "annotations" / f"instances_{stem}.json").write_text(json.dumps(doc))
    return root


def make_yolo_tree(root: Path, counts: dict[str, int], size: int = 64, names_as: str = "dict") -> Path:
    """``root/data.yaml`` + ``images/<split>/`` + ``labels/<split>/``; image 0 of each split has no
    label file and image 1 an empty one (both negatives)."""
    for s_index, (split, count) in enumerate(counts.items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, boxes, labels = scene(2000 * s_index + i, size)
            if i < 2:
                image, boxes, labels = image * 0 + 90, [], []
            Image.fromarray(image.astype(np.uint8)).save(root / "images" / split / f"{i:03d}.png")
            if i == 0:
                continue
            lines = [
                f"{lab} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} {(x1 - x0) / size:.6f} "
                f"{(y1 - y0) / size:.6f}"
                for (x0, y0, x1, y1), lab in zip(boxes, labels, strict=True)
            ]
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names: Any = {i: n for i, n in enumerate(NAMES)} if names_as == "dict" else list(NAMES)
    import yaml

    splits = {s: f"images/{s}" for s in counts}
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", **splits, "names": names}))
    return root


def break_coco(root: Path) -> dict[str, Any]:
    """Add one of each COCO problem to ``instances_train.json``; return what was broken, by id."""
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    image = doc["images"][2]  # an image with objects (0 is the negative)
    extra = [
        {"id": 9001, "image_id": image["id"], "category_id": 7, "bbox": [50, 10, 30, 20], "iscrowd": 0},
        {
            "id": 9002,
            "image_id": doc["images"][3]["id"],
            "category_id": 3,
            "bbox": [5, 5, 0, 10],
            "iscrowd": 0,
        },
        {
            "id": 9003,
            "image_id": doc["images"][4]["id"],
            "category_id": 99,
            "bbox": [5, 5, 10, 10],
            "iscrowd": 0,
        },
        {"id": 9004, "image_id": 424242, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 0},
    ]
    doc["annotations"] += extra
    doc["images"].append({"id": 777, "file_name": "missing.jpg", "width": 64, "height": 64})
    path.write_text(json.dumps(doc))
    return {
        "outside": image["file_name"],
        "zero": doc["images"][3]["file_name"],
        "unknown": doc["images"][4]["file_name"],
    }


# -- layouts and claims ------------------------------------------------------------------------
