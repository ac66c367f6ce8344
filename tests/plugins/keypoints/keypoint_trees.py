"""Tiny keypoint datasets on disk (COCO keypoints and YOLO-pose) from the demo's rendered stick figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image
from visionkit_keypoints.scenes import CATEGORY, KEYPOINT_NAMES, SKELETON, render_scene

#: YOLO's flip_idx for the stick figures (hands and feet swap).
FLIP_IDX = [0, 1, 3, 2, 4, 6, 5]


def coco_document(folder: Path, count: int, size: int, offset: int) -> dict[str, Any]:
    """Render ``count`` scenes into ``folder``; their COCO keypoints document."""
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(count):
        image, figures, boxes = render_scene(offset + i, size)
        name = f"{folder.name}_{i:03d}.png"
        Image.fromarray(image).save(folder / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for points, (x0, y0, x1, y1) in zip(figures, boxes, strict=True):
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                "keypoints": [float(v) for v in points.reshape(-1)], "num_keypoints": len(points),
            })  # fmt: skip
    skeleton = [[a + 1, b + 1] for a, b in SKELETON]  # COCO's are 1-based
    category = {"id": 1, "name": CATEGORY, "keypoints": KEYPOINT_NAMES, "skeleton": skeleton}
    return {"images": images, "annotations": anns, "categories": [category]}


def make_coco_tree(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for n, (split, count) in enumerate(counts.items()):
        doc = coco_document(root / split, count, size, 1000 * n)
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(doc))
    return root


def make_yolo_tree(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    for n, (split, count) in enumerate(counts.items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, figures, boxes = render_scene(5000 + 1000 * n + i, size)
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            lines = []
            for points, (x0, y0, x1, y1) in zip(figures, boxes, strict=True):
                box = [(x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size]
                kps = [v for x, y, vis in points.tolist() for v in (x / size, y / size, vis)]
                lines.append(" ".join(["0", *(f"{v:.5f}" for v in box + kps)]))
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    splits = "".join(f"{s}: images/{s}\n" for s in counts)
    names = "".join(f"    - {n}\n" for n in KEYPOINT_NAMES)
    (root / "data.yaml").write_text(
        f"path: .\n{splits}names:\n  0: {CATEGORY}\nkpt_shape: [{len(KEYPOINT_NAMES)}, 3]\n"
        f"flip_idx: {FLIP_IDX}\nkpt_names:\n  0:\n{names}"
    )
    return root
