"""Benchmark: images/s of visionkit's ImageFolder loaders vs plain torchvision ImageFolder + PIL.

One folder of generated JPEGs (400 images, 256 px, 4 classes) is read by:

- ``visionkit``: :class:`visionkit_imagefolder.datamodule.ImageFolderDataModule`'s loaders
  (torchvision.io decode, transforms v2 on uint8 tensors, uint8 collate) followed by the
  normalisation the model does after the batch transfer (``float() / 255``, mean/std), so
  both pipelines end with the same normalised float batch;
- ``torchvision``: ``torchvision.datasets.ImageFolder`` with the classic PIL transforms
  (``RandomResizedCrop`` + flip, or ``Resize`` + ``CenterCrop``; then ``ToTensor`` and
  ``Normalize``) and a plain ``DataLoader``.

Both get the same batch size, workers and ``persistent_workers`` (so worker start-up is
not part of the ratio), for the training transform and the evaluation transform. Passes
over the folder alternate (shuffled order per repeat) after one warm-up pass each; the
figure is the median. The ratio compares what each loader hands the Trainer (uint8 from
visionkit, normalised float32 from torchvision); a second ratio adds visionkit's
normalisation on the CPU. The evaluation outputs are compared image by image at 160 px
(where the resize is not a no-op): the largest pixel difference (0-255 units) must stay small.

A third pipeline reads the same images from litdata shards (``visionkit data convert --to
litdata``, read by the ``litdata:`` dataset's ``StreamingDataLoader``) with the same
transforms; its images/s against visionkit's ImageFolder loaders is reported as a ratio
(information, not a target: streaming pays off when the files live past one local disk).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common  # type: ignore[no-redef]

NAME = "loader"
TARGET = 1.5
MAX_PIXEL_DIFF = 3  # 0-255 units, evaluation transform
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

FULL = {
    "classes": 4,
    "per_class": 100,
    "size": 256,
    "image_size": 224,
    "check_size": 160,
    "batch": 32,
    "workers": [0, 2],
}
QUICK = {
    "classes": 2,
    "per_class": 10,
    "size": 64,
    "image_size": 48,
    "check_size": 40,
    "batch": 8,
    "workers": [0],
}


def make_tree(root: Path, classes: int, per_class: int, size: int) -> Path:
    """``root/train/cK/*.jpg`` and the same files hard-linked (else copied) under ``root/val``."""
    common.write_images(root, classes, per_class, size, ext=".jpg", quality=90, splits=("train",))
    for src in sorted((root / "train").rglob("*.jpg")):
        dst = root / "val" / src.relative_to(root / "train")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(src.read_bytes())
    return root


def visionkit_loaders(root: Path, image_size: int, batch: int, workers: int) -> dict[str, Any]:
    from visionkit_imagefolder.datamodule import ImageFolderDataModule

    dm = ImageFolderDataModule(
        root, batch_size=batch, image_size=image_size, num_workers=workers, pin_memory=False
    )
    dm.setup("fit")
    return {"train": dm.train_dataloader(), "eval": dm.val_dataloader()}


def litdata_loaders(shards: Path, image_size: int, batch: int, workers: int) -> dict[str, Any]:
    """The ``litdata:`` dataset's loaders over shards converted from the same tree."""
    from visionkit_imagefolder.streaming import StreamingDataModule

    dm = StreamingDataModule.bound(str(shards))(
        batch_size=batch, image_size=image_size, num_workers=workers, pin_memory=False
    )
    dm.setup("fit")
    return {"train": dm.train_dataloader(), "eval": dm.val_dataloader()}


def convert_tree(root: Path, shards: Path) -> Path:
    """``visionkit data convert ROOT --to litdata SHARDS``, through the dataset's own converter."""
    from visionkit_imagefolder.datamodule import ImageFolderDataModule

    ImageFolderDataModule(root).convert("litdata", str(shards), workers=2, echo=lambda _: None)
    return shards


def reference_loaders(root: Path, image_size: int, batch: int, workers: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    norm = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
            *norm,
        ]
    )
    eval_tf = transforms.Compose(
        [transforms.Resize(round(image_size / 0.875)), transforms.CenterCrop(image_size), *norm]
    )
    kwargs = {"batch_size": batch, "num_workers": workers, "persistent_workers": workers > 0}
    train = datasets.ImageFolder(str(root / "train"), train_tf)
    val = datasets.ImageFolder(str(root / "val"), eval_tf)
    return {
        "train": DataLoader(train, shuffle=True, drop_last=True, **kwargs),
        "eval": DataLoader(val, **kwargs),
    }


def _normalise(images: Any) -> Any:
    """What the classification task does on the device after the transfer."""
    import torch

    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def batches(program: str, loader: Any, normalise: bool = True) -> Any:
    """``(images, labels)`` of ``loader``; visionkit's uint8 images normalised as the model does."""
    for batch in loader:
        labels = batch[1]["label"] if isinstance(batch[1], dict) else batch[1]  # visionkit: a Sample
        if program == "visionkit" and normalise:
            yield _normalise(batch[0]), labels
        else:
            yield batch[0], labels


def time_pass(program: str, loader: Any, normalise: bool = False) -> float:
    """Images per second for one full pass over ``loader`` (``normalise``: visionkit's too)."""
    started = time.perf_counter()
    n = 0
    for images, _ in batches(program, loader, normalise):
        n += len(images)
    return n / (time.perf_counter() - started)


def compare_eval(ours: Any, ref: Any) -> dict[str, Any]:
    """Largest and mean absolute pixel difference (0-255 units) of the two evaluation passes."""
    import torch

    std = torch.tensor(STD).view(1, -1, 1, 1) * 255.0
    worst, total, count, shapes_equal, labels_equal = 0.0, 0.0, 0, True, True
    for (a, la), (b, lb) in zip(batches("visionkit", ours), batches("torchvision", ref), strict=True):
        shapes_equal &= a.shape == b.shape and a.dtype == b.dtype
        labels_equal &= bool(torch.equal(la, lb))
        diff = ((a - b) * std).abs()
        worst = max(worst, float(diff.max()))
        total += float(diff.sum())
        count += diff.numel()
    return {
        "max_pixel_diff": round(worst, 3),
        "mean_pixel_diff": round(total / max(1, count), 4),
        "shapes_and_dtypes_equal": shapes_equal,
        "labels_equal": labels_equal,
    }


def run(quick: bool = False, repeats: int | None = None, seed: int = 0) -> dict[str, Any]:
    import torch

    cfg = QUICK if quick else FULL
    repeats = repeats or (1 if quick else 5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vkbench-loader-") as tmp:
        root = make_tree(Path(tmp) / "data", cfg["classes"], cfg["per_class"], cfg["size"])
        shards = convert_tree(root, Path(tmp) / "shards")
        # pixels: a size whose evaluation resize is not a no-op (256 px files, short side to 183)
        torch.manual_seed(seed)
        same = compare_eval(
            visionkit_loaders(root, cfg["check_size"], cfg["batch"], 0)["eval"],
            reference_loaders(root, cfg["check_size"], cfg["batch"], 0)["eval"],
        )
        for workers in cfg["workers"]:
            torch.manual_seed(seed)
            loaders = {
                "visionkit": visionkit_loaders(root, cfg["image_size"], cfg["batch"], workers),
                "torchvision": reference_loaders(root, cfg["image_size"], cfg["batch"], workers),
                "litdata": litdata_loaders(shards, cfg["image_size"], cfg["batch"], workers),
            }
            firsts = [next(iter(batches(p, loaders[p]["train"])))[0] for p in ("visionkit", "torchvision")]
            train_same = firsts[0].shape == firsts[1].shape and firsts[0].dtype == firsts[1].dtype
            runners = {}
            for phase in ("train", "eval"):
                runners[f"visionkit/{phase}"] = functools.partial(
                    time_pass, "visionkit", loaders["visionkit"][phase]
                )
                runners[f"visionkit+normalise/{phase}"] = functools.partial(
                    time_pass, "visionkit", loaders["visionkit"][phase], True
                )
                runners[f"torchvision/{phase}"] = functools.partial(
                    time_pass, "torchvision", loaders["torchvision"][phase]
                )
                runners[f"litdata/{phase}"] = functools.partial(
                    time_pass, "litdata", loaders["litdata"][phase]
                )
            for fn in runners.values() if not quick else ():  # warm-up: workers started, files cached
                fn()  # (--quick, whose speeds nothing asserts, goes without)
            values = common.interleave(runners, repeats, seed=seed + workers)
            med = {k: common.median(v) for k, v in values.items()}
            row: dict[str, Any] = {
                "workers": workers,
                "images": len(loaders["torchvision"]["eval"].dataset),
                "images_per_s": med,
                "runs": {k: [round(x, 2) for x in v] for k, v in values.items()},
                "train_shapes_and_dtypes_equal": bool(train_same),
            }
            for phase in ("train", "eval"):
                ref = med[f"torchvision/{phase}"]
                row[f"{phase}_ratio"] = common.ratio(med[f"visionkit/{phase}"], ref)
                row[f"{phase}_ratio_with_cpu_normalise"] = common.ratio(
                    med[f"visionkit+normalise/{phase}"], ref
                )
                row[f"{phase}_litdata_ratio"] = common.ratio(
                    med[f"litdata/{phase}"], med[f"visionkit/{phase}"]
                )
            rows.append(row)
            del loaders
    targets = []
    for row in rows:
        w = row["workers"]
        targets.append(
            common.target(
                f"loader train, {w} workers: visionkit / torchvision", row["train_ratio"], TARGET, ">="
            )
        )
        targets.append(
            common.target(
                f"loader eval, {w} workers: visionkit / torchvision", row["eval_ratio"], TARGET, ">="
            )
        )
    diff = same["max_pixel_diff"]
    targets.append(
        common.target("loader eval: max pixel difference to torchvision+PIL", diff, MAX_PIXEL_DIFF, "<=")
    )
    return {
        "benchmark": NAME,
        "quick": quick,
        "repeats": repeats,
        "config": {k: v for k, v in cfg.items() if k != "workers"},
        "rows": rows,
        "same_output": same,
        "targets": targets,
    }


def markdown(doc: dict[str, Any]) -> str:
    head = [
        "workers",
        "transform",
        "visionkit img/s",
        "torchvision + PIL img/s",
        "ratio",
        "ratio with normalisation on the CPU",
        "litdata shards img/s",
        "litdata / ImageFolder",
    ]
    body = []
    for row in doc["rows"]:
        med = row["images_per_s"]
        for phase in ("train", "eval"):
            body.append(
                [
                    row["workers"],
                    "RandomResizedCrop + flip" if phase == "train" else "Resize + CenterCrop",
                    f"{med[f'visionkit/{phase}']:.1f}",
                    f"{med[f'torchvision/{phase}']:.1f}",
                    row[f"{phase}_ratio"],
                    row[f"{phase}_ratio_with_cpu_normalise"],
                    f"{med[f'litdata/{phase}']:.1f}",
                    row[f"{phase}_litdata_ratio"],
                ]
            )
    same = doc["same_output"]
    note = (
        f"\nSame images, evaluation transform at {doc['config']['check_size']} px: largest pixel difference "
        f"{same['max_pixel_diff']:g}, mean {same['mean_pixel_diff']:g} (0-255 units); labels equal: "
        f"{common.fmt(same['labels_equal'])}; shapes and dtypes equal: "
        f"{common.fmt(same['shapes_and_dtypes_equal'])}.\n"
    )
    return common.md_table(head, body) + note


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    opts = parser.parse_args()
    result = run(opts.quick, opts.repeats)
    print(markdown(result))
    print(json.dumps(result["targets"], indent=2))
