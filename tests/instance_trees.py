"""Tiny instance segmentation datasets on disk (COCO and YOLO-seg) from the demo's rendered scenes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from visionkit_instance_segmentation.scenes import CLASS_NAMES, render_scene

NAMES = CLASS_NAMES


def coco_document(folder: Path, count: int, size: int, offset: int, rle_every: int = 0) -> dict[str, Any]:
    """Render ``count`` scenes into ``folder`` and return their COCO instances document.

    Every ``rle_every``-th annotation (0: none) is stored as an uncompressed RLE instead of a polygon.
    """
    from pycocotools import mask as mask_utils

    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(count):
        image, polygons, labels = render_scene(offset + i, size)
        name = f"{folder.name}_{i:03d}.png"
        Image.fromarray(image).save(folder / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for poly, label in zip(polygons, labels, strict=True):
            xs, ys = poly[0::2], poly[1::2]
            seg: Any = [poly]
            if rle_every and (len(anns) + 1) % rle_every == 0:
                rle = mask_utils.frPyObjects([poly], size, size)
                m = mask_utils.decode(mask_utils.merge(rle))
                flat = np.asfortranarray(m).reshape(-1, order="F")
                runs, value, run = [], 0, 0
                for v in flat:
                    if v != value:
                        runs.append(run)
                        value, run = v, 0
                    run += 1
                runs.append(run)
                seg = {"size": [size, size], "counts": [int(r) for r in runs]}
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": label + 1, "iscrowd": 0,
                "segmentation": seg, "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                "area": 1.0,
            })  # fmt: skip
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    return {"images": images, "annotations": anns, "categories": cats}


def make_coco_tree(root: Path, counts: dict[str, int], size: int = 32, rle_every: int = 0) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for n, (split, count) in enumerate(counts.items()):
        doc = coco_document(root / split, count, size, 1000 * n, rle_every)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def make_yolo_tree(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    for n, (split, count) in enumerate(counts.items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, polygons, labels = render_scene(5000 + 1000 * n + i, size)
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            lines = [
                " ".join([str(c), *(f"{v / size:.5f}" for v in p)])
                for p, c in zip(polygons, labels, strict=True)
            ]
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(NAMES))
    splits = "".join(f"{s}: images/{s}\n" for s in counts)
    (root / "data.yaml").write_text(f"path: .\n{splits}names:\n{names}\n")
    return root
