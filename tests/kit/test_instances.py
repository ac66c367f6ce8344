"""The kit's instance toolbox: COCO/YOLO reading with per-annotation problems, joint transforms,
COCO evaluation that agrees with pycocotools, R-CNN building. No training here (cheap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from instance_trees import make_coco_tree, make_yolo_tree
from PIL import Image

from visionkit_core import UsageError
from visionkit_core.kit import instances as inst


def _coco(
    root: Path,
    anns: list[dict[str, Any]],
    categories: list[dict[str, Any]] | None = None,
    prefix: str = "instances",
    images: int = 2,
    size: int = 20,
) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    for i in range(images):
        Image.new("RGB", (size, size), (i * 40, 90, 30)).save(root / "train" / f"{i}.png")
    doc = {
        "images": [
            {"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size} for i in range(images)
        ]
        + [{"id": 99, "file_name": "gone.png", "width": size, "height": size}],
        "annotations": anns,
        "categories": categories or [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "annotations" / f"{prefix}_train.json").write_text(json.dumps(doc))
    return root


SQUARE = [2, 2, 10, 2, 10, 10, 2, 10]


def test_coco_polygons_rle_and_crowd_are_read_and_each_bad_annotation_is_named(tmp_path: Path) -> None:
    rle = {"size": [20, 20], "counts": [44, 6, 14, 6, 14, 6, 310]}
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [SQUARE], "bbox": [2, 2, 8, 8]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle, "iscrowd": 1, "bbox": [2, 4, 3, 6]},
        {"id": 3, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 5, 5]]},  # 2 points
        {"id": 4, "image_id": 2, "category_id": 7, "segmentation": [SQUARE]},  # unknown category
        {"id": 5, "image_id": 2, "category_id": 1, "segmentation": [[2, 2, 30, 2, 30, 9]]},  # outside
        {"id": 6, "image_id": 42, "category_id": 1, "segmentation": [SQUARE]},  # no such image
    ]
    layout = inst.scan(_coco(tmp_path, anns), "segm")
    assert layout.kind == "coco" and layout.class_names == ["a", "b"]
    reasons = {p.ref: p.reason for p in layout.problems}
    assert "polygon 0 has 2 points" in reasons[3] and "at least 3" in reasons[3]
    assert "unknown category id 7" in reasons[4]
    assert "polygon extends outside the 20x20 image" in reasons[5]
    assert "image id" in reasons[6]
    assert any("gone.png" in p.reason and "not found" in p.reason for p in layout.problems)
    usable = layout.usable("train")
    assert [Path(r.image).name for r in usable] == ["0.png"]  # image 2 is spoiled by its annotations
    first = usable[0].instances
    assert first[0].polygons == [[float(v) for v in SQUARE]] and not first[0].crowd
    assert first[1].rle == rle and first[1].crowd
    target = inst.record_target(usable[0], 20, 20, masks=True)
    assert target["masks"].shape == (2, 20, 20) and int(target["masks"][1].sum()) == 18
    assert int(target["masks"][0].sum()) == 64  # the 8 x 8 px square, as COCO rasterises it


def test_coco_keypoints_need_the_categorys_count_and_flags_0_1_2(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "p", "keypoints": ["l", "r"], "skeleton": [[1, 2]]}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "keypoints": [3, 3, 2, 8, 3, 1], "bbox": [2, 2, 8, 8]},
        {"id": 2, "image_id": 2, "category_id": 1, "keypoints": [3, 3, 2], "bbox": [2, 2, 8, 8]},
        {"id": 3, "image_id": 2, "category_id": 1, "keypoints": [3, 3, 2, 8, 3, 3], "bbox": [2, 2, 8, 8]},
    ]
    layout = inst.scan(_coco(tmp_path, anns, cats, "person_keypoints"), "keypoints")
    assert layout.keypoint_names == ["l", "r"] and layout.skeleton == [[0, 1]]
    reasons = {p.ref: p.reason for p in layout.problems}
    assert "1 keypoints, but the category has 2" in reasons[2]
    assert "keypoint 1 has visibility 3 (must be 0, 1 or 2)" in reasons[3]
    assert layout.usable("train")[0].instances[0].keypoints == [3, 3, 2, 8, 3, 1]


def _yolo(root: Path, lines: list[str], extra: str = "") -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i, text in enumerate(lines):
        Image.new("RGB", (20, 10)).save(root / "images" / "train" / f"{i}.png")
        (root / "labels" / "train" / f"{i}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nnames: [a, b]\n{extra}")
    return root


def test_yolo_seg_lines_are_polygons_and_bad_lines_are_named(tmp_path: Path) -> None:
    lines = [
        "0 0.1 0.1 0.5 0.1 0.5 0.5\n",
        "1 0.5 0.5 0.2 0.2\n",
        "0 0.1 0.1\n",
        "3 0.1 0.1 0.5 0.1 0.5 0.5\n",
        "0 0.1 0.1 1.5 0.1 0.5 0.5\n",
    ]
    layout = inst.scan(_yolo(tmp_path, lines), "segm")
    reasons = sorted((Path(p.file).name, p.reason) for p in layout.problems)
    assert [n for n, _ in reasons] == ["1.txt", "2.txt", "3.txt", "4.txt"]
    assert "a box (class cx cy w h), not a polygon" in reasons[0][1]
    assert "polygon has 1 points (a polygon needs at least 3)" in reasons[1][1]
    assert "unknown class id 3" in reasons[2][1]
    assert "outside the image" in reasons[3][1]
    good = layout.usable("train")
    target = inst.record_target(good[0], 10, 20, masks=True)  # normalised -> pixels of a 20x10 image
    assert target["boxes"].tolist() == [[2.0, 1.0, 10.0, 5.0]]


def test_yolo_pose_rows_follow_kpt_shape_and_flip_idx_swaps_left_and_right(tmp_path: Path) -> None:
    lines = [
        "0 0.5 0.5 0.8 0.8 0.2 0.5 2 0.7 0.5 1\n",
        "0 0.5 0.5 0.8 0.8 0.2 0.5 2\n",
        "0 0.5 0.5 0.8 0.8 0.2 0.5 2 0.7 0.5 5\n",
    ]
    layout = inst.scan(_yolo(tmp_path, lines, "kpt_shape: [2, 3]\nflip_idx: [1, 0]\n"), "keypoints")
    assert layout.flip_idx == [1, 0]
    reasons = " | ".join(p.reason for p in layout.problems)
    assert len(layout.problems) == 2 and "expected 5 + 2x3 values" in reasons
    assert "keypoint 1 has visibility 5 (must be 0, 1 or 2)" in reasons
    record = layout.usable("train")[0]
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    target = inst.record_target(record, 10, 20, masks=False)
    flipped = inst.InstanceTransform(20, True, flip_idx=layout.flip_idx).flip(image, target)[1]
    # left (x=4, visible 2) and right (x=14, visible 1) keypoints: mirrored, then swapped back by name
    assert flipped["keypoints"][0].reshape(-1).tolist() == pytest.approx([20 - 14, 5, 20 - 4, 5])
    assert flipped["visibility"][0].tolist() == [1, 2]


def test_letterbox_moves_masks_and_boxes_with_the_image(tmp_path: Path) -> None:
    layout = inst.scan(make_yolo_tree(tmp_path / "y", {"train": 1}, size=32), "segm")
    record = layout.usable("train")[0]
    image = inst.read_image(record.image)
    target = inst.record_target(record, 32, 32, masks=True)
    out_image, out = inst.InstanceTransform(64, train=False)(image, target)
    assert out_image.shape == (3, 64, 64)
    for mask, box in zip(out["masks"], out["boxes"], strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # boxes are the masks' extent


def _pycocotools(gt: dict[str, Any], dets: list[dict[str, Any]], iou_type: str) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt))
    coco.createIndex()
    results = coco.loadRes(json.loads(json.dumps(dets)))
    ev = COCOeval(coco, results, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats[:3]]


def test_coco_evaluation_agrees_with_pycocotools_on_the_same_predictions(tmp_path: Path) -> None:
    layout = inst.scan(make_coco_tree(tmp_path / "c", {"train": 6}, size=32, rle_every=3), "segm")
    gen = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for n, record in enumerate(layout.usable("train")):
        target = inst.tidy(inst.record_target(record, 32, 32, masks=True), (32, 32))
        target["iscrowd"][:1] = int(n == 2)  # a crowd region too
        target["image_id"] = torch.tensor(n)
        k = len(target["labels"])
        jitter = torch.randn(k, 4, generator=gen) * 0.8
        masks = target["masks"].float()[:, None]
        masks = torch.roll(masks, shifts=n % 2, dims=-1) * (0.3 + 0.7 * torch.rand(k, 1, 1, 1, generator=gen))
        preds.append(
            {
                "boxes": target["boxes"] + jitter,
                "scores": torch.rand(k, generator=gen),
                "labels": (target["labels"] + (torch.rand(k, generator=gen) < 0.1).long()) % 3,
                "masks": masks,
            }
        )
        targets.append(target)
    metric = inst.CocoEvaluation(("bbox", "segm"), 3)
    metric.update(preds[:3], targets[:3])
    metric.update(preds[2:], targets[2:])  # image 2 again: counted once
    ours = metric.compute()
    gt, dets = inst.coco_documents(metric.gathered(), 3)
    assert len(gt["images"]) == 6
    for iou in ("bbox", "segm"):
        reference = _pycocotools(gt, dets, iou)
        assert 0.05 < reference[0] < 0.95  # neither trivial nor perfect
        assert [ours[iou][k] for k in ("map", "map_50", "map_75")] == pytest.approx(reference, abs=1e-6)


def test_building_refuses_unknown_archs_and_options_naming_what_works() -> None:
    with pytest.raises(UsageError, match="maskrcnn_resnet50_fpn"):
        inst.build_rcnn("mask", "yolo", "timm:test_resnet", 2)
    with pytest.raises(UsageError, match="takes no nope"):
        inst.build_rcnn("mask", "rcnn", "timm:test_resnet", 2, options={"nope": 1})
    with pytest.raises(UsageError, match="a keypoint model, not a mask one"):
        inst.build_rcnn("mask", "keypointrcnn_resnet50_fpn", "x", 2)
    model, pre = inst.build_rcnn("mask", "rcnn", "timm:test_resnet", 2, fpn_channels=16)
    assert pre == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # the backbone's own normalisation
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 32, 32)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"} and out["masks"].shape[-2:] == (32, 32)


def test_a_bad_image_is_replaced_and_named(tmp_path: Path) -> None:
    layout = inst.scan(make_coco_tree(tmp_path / "c", {"train": 3}, size=32), "segm")
    Path(layout.splits["train"][0].image).write_bytes(b"not a png")
    ds = inst.InstanceDataset(layout.usable("train"), inst.InstanceTransform(32, False))
    image, target, skipped = ds[0]
    assert image.shape == (3, 32, 32) and int(target["image_id"]) == 1
    assert skipped[0][0].endswith("train_000.png") and skipped[0][1].startswith("cannot read image")
    report = inst.check_tree(tmp_path / "c", "segm", workers=1)
    assert not report.ok and report.images["train"] == 2
    assert [Path(b.path).name for b in report.bad] == ["train_000.png"]
    assert np.sum(report.instances["train"]) > 0
