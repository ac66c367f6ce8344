"""The keypoints task's OKS metric agrees with pycocotools' COCOeval on the same predictions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from visionkit_keypoints.model import KeypointTask

NAMES = ["head", "neck", "left_hand", "right_hand", "hip"]


def _scene(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A target with 1-3 instances (a few keypoints hidden) and predictions: noisy copies of the truth,
    one missed instance now and then, and a false positive."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    x0, y0 = rng.uniform(0, 60, n), rng.uniform(0, 60, n)
    w, h = rng.uniform(15, 40, n), rng.uniform(15, 40, n)
    boxes = np.stack([x0, y0, x0 + w, y0 + h], 1)
    kp = np.stack([x0[:, None] + rng.uniform(0, 1, (n, 5)) * w[:, None],
                   y0[:, None] + rng.uniform(0, 1, (n, 5)) * h[:, None]], -1)  # fmt: skip
    vis = rng.choice([0, 1, 2], size=(n, 5), p=[0.15, 0.15, 0.7])
    vis[:, 0] = 2  # every instance has a labelled keypoint
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(rng.integers(0, 2, n)),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "keypoints": torch.tensor(kp, dtype=torch.float32),
        "visibility": torch.tensor(vis),
        "image_id": torch.tensor(seed),
    }
    keep = rng.random(n) > 0.2
    noise = rng.normal(0, rng.uniform(0.5, 4.0), kp.shape)
    pkp = np.concatenate([kp + noise, np.ones((n, 5, 1))], -1)[keep]
    pboxes = (boxes + rng.normal(0, 1.5, boxes.shape))[keep]
    labels = target["labels"].numpy()[keep]
    fp_box = np.array([[5.0, 5.0, 30.0, 30.0]])
    fp_kp = np.concatenate([rng.uniform(5, 30, (1, 5, 2)), np.ones((1, 5, 1))], -1)
    pred = {
        "boxes": torch.tensor(np.concatenate([pboxes, fp_box]), dtype=torch.float32),
        "scores": torch.tensor(
            np.concatenate([rng.uniform(0.5, 1.0, len(pboxes)), [0.3]]), dtype=torch.float32
        ),
        "labels": torch.tensor(np.concatenate([labels, [0]]), dtype=torch.int64),
        "keypoints": torch.tensor(np.concatenate([pkp, fp_kp]), dtype=torch.float32),
    }
    return target, pred


def _pycocotools(scenes: list, sigmas: list[float]) -> tuple[float, float]:
    """pycocotools' COCOeval (iouType keypoints) on documents written here from the raw tensors."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for target, pred in scenes:
        iid = int(target["image_id"])
        images.append({"id": iid, "width": 100, "height": 100})
        t = {k: v.tolist() for k, v in target.items()}
        for box, label, kp, vis in zip(t["boxes"], t["labels"], t["keypoints"], t["visibility"], strict=True):
            x0, y0, x1, y1 = box
            flat = [v for (x, y), f in zip(kp, vis, strict=True) for v in (x, y, f)]
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": label + 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                         "keypoints": flat, "num_keypoints": sum(f > 0 for f in vis)})  # fmt: skip
        p = {k: v.tolist() for k, v in pred.items()}
        for box, score, label, kp in zip(p["boxes"], p["scores"], p["labels"], p["keypoints"], strict=True):
            x0, y0, x1, y1 = box
            flat = [v for point in kp for v in point]
            dets.append({"image_id": iid, "category_id": label + 1, "score": score,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "keypoints": flat})  # fmt: skip
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), "keypoints")
    ev.params.kpt_oks_sigmas = np.array(sigmas)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.mark.parametrize("sigmas", [None, 0.08])
def test_kp_map_agrees_with_pycocotools_cocoeval(sigmas: float | None) -> None:
    task = KeypointTask(
        num_classes=2, class_names=["a", "b"], keypoint_names=NAMES, oks_sigmas=sigmas, fpn_channels=16
    )
    assert task.sigmas == ([0.05] * 5 if sigmas is None else [0.08] * 5)
    scenes = [_scene(seed) for seed in range(12)]
    for target, pred in scenes:
        task.val_coco.update([pred], [target])
    ours = task.val_coco.compute()["keypoints"]
    theirs = _pycocotools(scenes, task.sigmas)
    assert 0.2 < theirs[0] < 0.95  # a spread of hits and misses, not a trivial 0 or 1
    assert ours["map"] == pytest.approx(theirs[0], abs=1e-6)
    assert ours["map_50"] == pytest.approx(theirs[1], abs=1e-6)


def test_coco_person_keypoints_get_cocos_sigmas() -> None:
    from visionkit_core.kit.keypoints import COCO_PERSON_KEYPOINTS, COCO_PERSON_SIGMAS

    task = KeypointTask(class_names=["person"], keypoint_names=COCO_PERSON_KEYPOINTS, fpn_channels=16)
    assert task.sigmas == list(COCO_PERSON_SIGMAS)
    assert task.val_coco.sigmas == list(COCO_PERSON_SIGMAS)
