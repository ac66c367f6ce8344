"""The raw baseline: the same training as ``lightning_timm.py`` in a plain PyTorch loop.

Same data pipeline, model, optimiser, schedule and sample order; validation after every
epoch; no logging, no checkpoints, no progress bar. Records the same step timings as
:class:`steptimer.StepTimer`.

    python benchmarks/baselines/raw_torch.py --data DIR --model resnet18 --image-size 64 --times t.json
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import timm
import torch
from recipe import SeededOrder, empty_record, param_groups, save_record, warmup_cosine
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


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
    p.add_argument("--times", required=True)
    args = p.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    train = datasets.ImageFolder(f"{args.data}/train")
    val = datasets.ImageFolder(f"{args.data}/val")
    model = timm.create_model(args.model, num_classes=len(train.classes))
    cfg = timm.data.resolve_data_config({}, model=model)
    train.transform = val.transform = transforms.Compose(
        [
            transforms.Resize(args.image_size),
            transforms.CenterCrop(args.image_size),
            transforms.ToTensor(),
            transforms.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    order = SeededOrder(len(train), args.seed)
    train_loader = DataLoader(
        train, batch_size=args.batch_size, sampler=order, num_workers=args.workers, drop_last=True
    )
    val_loader = DataLoader(val, batch_size=args.batch_size, num_workers=args.workers)

    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=args.lr)
    total = args.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, min(len(train_loader), total // 10)))

    record = empty_record()
    for epoch in range(args.epochs):
        record["epoch_start"].append(time.perf_counter())
        order.set_epoch(epoch)
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            record["loss"].append(loss.item())
            record["step_end"].append(time.perf_counter())
            record["step_cpu"].append(time.process_time())
            record["step_epoch"].append(epoch)
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += int((model(x).argmax(1) == y).sum())
                seen += len(y)
        print(f"epoch {epoch}: loss {record['loss'][-1]:.4f} val acc {correct / max(1, seen):.4f}")
    record["train_end"] = time.perf_counter()
    save_record(args.times, record)


if __name__ == "__main__":
    main()
