"""The hand-written baseline: a minimal Lightning + timm training script, Lightning defaults.

What a user writes without visionkit: a torchvision ``ImageFolder`` with PIL transforms, a
``DataLoader``, a LightningModule around ``timm.create_model`` and a default ``Trainer``
(which logs to TensorBoard, checkpoints every epoch and shows a progress bar). To make the
losses comparable step by step with visionkit's for the same seed, it uses the same
optimiser and schedule (AdamW without decay on biases/norms, linear warm-up + cosine per
step) and visits the samples in the same order (one seeded permutation per epoch).

    python benchmarks/baselines/lightning_timm.py --data DIR --model resnet18 --image-size 64
"""

from __future__ import annotations

import argparse

import lightning as L
import timm
import torch
from recipe import SeededOrder, param_groups, warmup_cosine
from steptimer import StepTimer
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class Classifier(L.LightningModule):
    def __init__(self, model_name: str, num_classes: int, lr: float, total: int, warmup: int) -> None:
        super().__init__()
        self.model = timm.create_model(model_name, num_classes=num_classes)
        self.loss_fn = nn.CrossEntropyLoss()
        self.lr, self.total, self.warmup = lr, total, warmup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss_fn(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.AdamW(param_groups(self.model, 0.05), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.total, self.warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--run-dir", default="lightning-run")
    p.add_argument("--times", required=True, help="where the step timer writes its JSON")
    args = p.parse_args()

    L.seed_everything(args.seed)
    train = datasets.ImageFolder(f"{args.data}/train")
    val = datasets.ImageFolder(f"{args.data}/val")
    steps_per_epoch = len(train) // args.batch_size  # drop_last
    total = args.epochs * steps_per_epoch
    module = Classifier(args.model, len(train.classes), args.lr, total, min(steps_per_epoch, total // 10))

    cfg = timm.data.resolve_data_config({}, model=module.model)
    train.transform = val.transform = transforms.Compose(
        [
            transforms.Resize(args.image_size),
            transforms.CenterCrop(args.image_size),
            transforms.ToTensor(),
            transforms.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    train_loader = DataLoader(
        train,
        batch_size=args.batch_size,
        sampler=SeededOrder(len(train), args.seed),
        num_workers=args.workers,
        drop_last=True,
    )
    val_loader = DataLoader(val, batch_size=args.batch_size, num_workers=args.workers)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=args.run_dir,
        callbacks=[StepTimer(args.times)],
    )
    trainer.fit(module, train_loader, val_loader)


if __name__ == "__main__":
    main()
