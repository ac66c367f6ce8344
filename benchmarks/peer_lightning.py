"""The peer benchmark's hand-written baseline: plain Lightning over the same network as visionkit's default.

No visionkit: torchvision, timm, segmentation_models_pytorch, torchmetrics and Lightning used
directly, as a user would write it in one file (``benchmarks/peer.py`` runs it as a fresh
process and reads visionkit's ``config.yaml`` to pass the network that visionkit chose):

- ``detection``: torchvision's FCOS or RetinaNet head over timm ``features_only`` feature
  maps (strides 8/16/32) and torchvision's ``FeaturePyramidNetwork``, or a whole torchvision
  detector by name; trains on a COCO tree (images in memory, random horizontal flip);
- ``segmentation``: an smp architecture over an smp or timm (``tu-``) encoder, or a
  torchvision segmentation model; trains on a ``{split}/images``/``{split}/masks`` tree
  (cross-entropy, random horizontal flip).

Both: AdamW, linear warmup then cosine per step, gradient clipping (detection), batch 16,
fp32, no DataLoader workers (the data sets are small and held in memory), a validation
each epoch (torchmetrics' ``MeanAveragePrecision`` / a confusion-matrix mIoU) and the last
epoch's weights saved. ``predict`` writes COCO results JSON (detection) or an ``.npz`` of
class-index masks (segmentation) for the val images, for one judge to score.

    python benchmarks/peer_lightning.py train --task detection --data DIR --out RUN --epochs 10 ...
    python benchmarks/peer_lightning.py predict --task detection --data DIR --out RUN --predictions P.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


# -- data ------------------------------------------------------------------------------------------
def load_rgb(path: Path) -> Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()


class CocoBoxes(Dataset):
    """A COCO split in memory: (uint8 image, {"boxes": xyxy, "labels": 0-based}), optional flip."""

    def __init__(self, root: Path, split: str, train: bool) -> None:
        doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))
        cats = sorted(c["id"] for c in doc["categories"])
        index = {cid: i for i, cid in enumerate(cats)}
        by_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in doc["images"]}
        for ann in doc["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self.items = []
        for im in doc["images"]:
            anns = by_image[im["id"]]
            boxes = torch.tensor(
                [
                    [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                    for a in anns
                ],
                dtype=torch.float32,
            ).reshape(-1, 4)
            labels = torch.tensor([index[a["category_id"]] for a in anns], dtype=torch.int64)
            self.items.append((im["id"], load_rgb(root / split / im["file_name"]), boxes, labels))
        self.train = train
        self.category_ids = cats

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_id, image, boxes, labels = self.items[i]
        if self.train and torch.rand(()) < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        return image, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(image_id)}


def collate_lists(batch: list[Any]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class MaskPairs(Dataset):
    """``root/split/images/*.png`` with ``root/split/masks/<stem>.png`` in memory, optional flip."""

    def __init__(self, root: Path, split: str, train: bool) -> None:
        files = sorted((root / split / "images").iterdir())
        self.stems = [f.stem for f in files]
        self.images = torch.stack([load_rgb(f) for f in files])
        masks = [np.asarray(Image.open(root / split / "masks" / f"{f.stem}.png")) for f in files]
        self.masks = torch.from_numpy(np.stack(masks)).long()
        self.train = train

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.train and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


# -- networks --------------------------------------------------------------------------------------
class TimmFPN(nn.Module):
    """timm feature maps at strides 8, 16, 32 -> torchvision's FPN (what torchvision's heads take)."""

    def __init__(self, name: str, channels: int, extra: str) -> None:
        super().__init__()
        import timm
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        self.body = timm.create_model(name, pretrained=False, features_only=True)
        info = self.body.feature_info
        reductions = list(info.reduction())
        wanted = [i for i, r in enumerate(reductions) if r in (8, 16, 32)]
        self.levels = wanted if len(wanted) == 3 else list(range(len(reductions)))[-3:]
        self.strides = [int(reductions[i]) for i in self.levels]
        blocks: Any = None
        if extra == "p6p7":
            blocks = LastLevelP6P7(channels, channels)
            self.strides += [self.strides[-1] * 2, self.strides[-1] * 4]
        elif extra == "pool":
            blocks = LastLevelMaxPool()
            self.strides += [self.strides[-1] * 2]
        in_channels = [int(info.channels()[i]) for i in self.levels]
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=blocks)
        self.out_channels = channels
        cfg = self.body.pretrained_cfg or {}
        self.mean = list(cfg.get("mean") or IMAGENET[0])
        self.std = list(cfg.get("std") or IMAGENET[1])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.body(x)
        return self.fpn({str(i): feats[level] for i, level in enumerate(self.levels)})


def build_detector(args: argparse.Namespace, num_classes: int) -> tuple[nn.Module, int]:
    """The detector and its label offset (1 where class 0 is the background)."""
    import torchvision
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.models.detection.retinanet import RetinaNetHead

    post = {
        "score_thresh": args.score_thresh,
        "nms_thresh": args.nms_thresh,
        "detections_per_img": args.detections_per_img,
    }
    size = {"min_size": args.image_size, "max_size": args.image_size}
    if args.arch not in ("fcos", "retinanet", "fasterrcnn"):  # a whole torchvision detector
        offset = 1 if args.arch.startswith(("fasterrcnn", "ssd")) else 0
        if args.arch.startswith("fasterrcnn"):
            post = {f"box_{k}": v for k, v in post.items()}
        model = torchvision.models.get_model(
            args.arch, weights=None, weights_backbone=None, num_classes=num_classes + offset, **post, **size
        )
        return model, offset
    extra = "pool" if args.arch == "fasterrcnn" else ("p6p7" if args.extra_levels else "")
    body = TimmFPN(args.backbone, args.fpn_channels, extra)
    norm = {"image_mean": body.mean, "image_std": body.std, **size}
    strides, channels = body.strides, body.out_channels
    if args.arch == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(channels, 1, num_classes, num_convs=args.head_convs)
        return FCOS(body, num_classes, anchor_generator=anchors, head=head, **norm, **post), 0
    if args.arch == "retinanet":
        sizes = tuple(tuple(int(4 * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
        head = RetinaNetHead(channels, 9, num_classes)
        return RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **norm, **post), 0
    from torchvision.ops import MultiScaleRoIAlign

    anchors = AnchorGenerator(tuple((4 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
    pool = MultiScaleRoIAlign([str(i) for i in range(len(strides) - 1)], output_size=7, sampling_ratio=2)
    post = {f"box_{k}": v for k, v in post.items()}
    model = FasterRCNN(body, num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=pool, **norm, **post)
    return model, 1


def build_segmenter(args: argparse.Namespace, num_classes: int) -> tuple[nn.Module, list[float], list[float]]:
    """The segmentation network (logits at the input size), and its mean and std."""
    if args.arch.startswith("tv:"):
        from torchvision.models import segmentation

        net = getattr(segmentation, args.arch[3:])(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
        )
        return TorchvisionOut(net), *IMAGENET
    import segmentation_models_pytorch as smp

    options: dict[str, Any] = {"encoder_depth": args.encoder_depth}
    if args.decoder_channels:
        options["decoder_channels"] = [int(c) for c in args.decoder_channels.split(",")]
    net = smp.create_model(
        args.arch, encoder_name=args.encoder, encoder_weights=None, classes=num_classes, **options
    )
    mean, std = IMAGENET
    if args.encoder.startswith("tu-"):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(args.encoder[3:])
        data = cfg.to_dict() if cfg is not None else {}
        mean, std = list(data.get("mean") or mean), list(data.get("std") or std)
    return net, list(mean), list(std)


class TorchvisionOut(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]  # type: ignore[no-any-return]


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- LightningModules ------------------------------------------------------------------------------
class Optimised(L.LightningModule):
    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = min(max(1, total // 20), 100)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": warmup_cosine(opt, total, warmup), "interval": "step"},
        }


class DetectionModule(Optimised):
    def __init__(self, args: argparse.Namespace, num_classes: int) -> None:
        super().__init__()
        self.save_hyperparameters({"lr": args.lr, "weight_decay": args.weight_decay})
        self.model, self.offset = build_detector(args, num_classes)
        from torchmetrics.detection import MeanAveragePrecision

        self.val_map = MeanAveragePrecision()

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        out = self.model([im.float() / 255 for im in images])
        return [{**d, "labels": d["labels"] - self.offset} for d in out]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = batch
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + self.offset} for t in targets]
        losses = self.model([im.float() / 255 for im in images], targets)
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss  # type: ignore[return-value]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        self.val_map.update(self(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.val_map.reset()
        self.log("val/map", float(result["map"]), prog_bar=True)
        self.log("val/map_50", float(result["map_50"]))


class SegmentationModule(Optimised):
    def __init__(self, args: argparse.Namespace, num_classes: int) -> None:
        super().__init__()
        self.save_hyperparameters({"lr": args.lr, "weight_decay": args.weight_decay})
        self.model, mean, std = build_segmenter(args, num_classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)
        self.num_classes = num_classes
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long))

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images.float() - self.mean) / self.std)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, masks = batch
        loss = F.cross_entropy(self(images), masks, ignore_index=255)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, masks = batch
        preds = self(images).argmax(1)
        keep = masks != 255
        index = masks[keep] * self.num_classes + preds[keep]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view_as(self.confusion)

    def on_validation_epoch_end(self) -> None:
        m = self.confusion.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        self.log("val/miou", float((tp / union)[union > 0].mean()), prog_bar=True)
        self.confusion.zero_()


# -- commands --------------------------------------------------------------------------------------
def num_classes_of(args: argparse.Namespace) -> int:
    if args.task == "detection":
        doc = json.loads((args.data / "annotations" / "instances_train.json").read_text(encoding="utf-8"))
        return len(doc["categories"])
    return len((args.data / "classes.txt").read_text(encoding="utf-8").split())


def module_for(args: argparse.Namespace) -> L.LightningModule:
    cls = DetectionModule if args.task == "detection" else SegmentationModule
    return cls(args, num_classes_of(args))


def loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    if args.task == "detection":
        train, val = CocoBoxes(args.data, "train", True), CocoBoxes(args.data, "val", False)
        kw: dict[str, Any] = {"batch_size": args.batch_size, "collate_fn": collate_lists}
    else:
        train, val = MaskPairs(args.data, "train", True), MaskPairs(args.data, "val", False)
        kw = {"batch_size": args.batch_size}
    return DataLoader(train, shuffle=True, drop_last=True, **kw), DataLoader(val, **kw)


def train(args: argparse.Namespace) -> int:
    L.seed_everything(args.seed, verbose=False)
    module = module_for(args)
    train_loader, val_loader = loaders(args)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=L.pytorch.loggers.CSVLogger(args.out),
        enable_checkpointing=False,
        gradient_clip_val=10.0 if args.task == "detection" else None,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader)
    fit_s = time.perf_counter() - started
    torch.save(module.state_dict(), args.out / "last.pt")
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    params = sum(p.numel() for p in module.model.parameters())
    summary = {"fit_s": fit_s, "logged": logged, "parameters": params, "epochs": args.epochs}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0


@torch.no_grad()
def predict(args: argparse.Namespace) -> int:
    module = module_for(args)
    module.load_state_dict(torch.load(args.out / "last.pt", map_location="cpu", weights_only=True))
    module.eval()
    if args.task == "detection":
        data = CocoBoxes(args.data, "val", False)
        results = []
        for start in range(0, len(data), args.batch_size):
            items = [data[i] for i in range(start, min(len(data), start + args.batch_size))]
            images, targets = collate_lists(items)
            for det, target in zip(module(images), targets, strict=True):
                for box, score, label in zip(
                    det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
                ):
                    x0, y0, x1, y1 = box
                    results.append(
                        {
                            "image_id": int(target["image_id"]),
                            "category_id": data.category_ids[label],
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": score,
                        }
                    )
        args.predictions.write_text(json.dumps(results) + "\n", encoding="utf-8")
    else:
        seg = MaskPairs(args.data, "val", False)
        masks = {}
        for start in range(0, len(seg), args.batch_size):
            preds = module(seg.images[start : start + args.batch_size]).argmax(1).to(torch.uint8)
            for stem, pred in zip(seg.stems[start : start + args.batch_size], preds, strict=True):
                masks[stem] = pred.numpy()
        np.savez_compressed(args.predictions, **masks)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("train", "predict"))
    parser.add_argument("--task", choices=("detection", "segmentation"), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="run folder (last.pt, summary.json, logs)")
    parser.add_argument("--predictions", type=Path, help="predict: COCO results .json or masks .npz")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    net = parser.add_argument_group("network (benchmarks/peer.py passes visionkit's)")
    net.add_argument(
        "--arch",
        default="fcos",
        help="fcos | retinanet | fasterrcnn | a torchvision detector; "
        "an smp architecture or tv:<model> for segmentation",
    )
    net.add_argument("--backbone", default="test_resnet", help="detection: the timm model under the head")
    net.add_argument("--fpn-channels", type=int, default=64)
    net.add_argument("--head-convs", type=int, default=2)
    net.add_argument("--extra-levels", action="store_true")
    net.add_argument("--score-thresh", type=float, default=0.05)
    net.add_argument("--nms-thresh", type=float, default=0.5)
    net.add_argument("--detections-per-img", type=int, default=100)
    net.add_argument("--encoder", default="resnet18", help="segmentation: smp encoder (tu-<timm> for timm)")
    net.add_argument("--encoder-depth", type=int, default=5)
    net.add_argument("--decoder-channels", default="", help="comma-separated, e.g. 128,64,32,16")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "predict" and args.predictions is None:
        parser.error("predict needs --predictions")
    return train(args) if args.command == "train" else predict(args)


if __name__ == "__main__":
    raise SystemExit(main())
