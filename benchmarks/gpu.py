"""GPU benchmark: training img/s and MFU of ResNet-50 and ConvNeXt-T, and the loader with all cores.

One prepared command for a lent GPU machine (sized for < 8 minutes on one H200):

    python benchmarks/gpu.py --out-dir "$OUT"          # on the GPU machine
    python benchmarks/gpu.py --dry-run --no-write      # anywhere: tiny models on the CPU, seconds

Training runs go through visionkit's real assembly (:func:`visionkit_core.run.assemble.run_train`):
``--backbone timm:resnet50`` / ``timm:convnext_tiny`` with the automatic GPU defaults
(``bf16-mixed`` where supported, channels_last), eager and with ``--compile``. The data is
a synthetic in-memory dataset of pre-made uint8 batches (registered by a local plugin), so
the figure is the model's training speed, not the disk's. img/s is timed between CUDA
synchronisations after ``--warmup`` steps (which include compilation); MFU is img/s times
the training FLOPs per image (counted with ``torch.utils.flop_counter`` on one forward +
backward) over ``--peak-tflops`` (790 by default).

The loader part times visionkit's ImageFolder training loader on generated 256 px JPEGs
with every core as a worker (and with visionkit's default worker count), next to the plain
torchvision ImageFolder + PIL pipeline with the same workers.

Results go to ``<out-dir>/gpu-<date>.json`` and ``.md``, rewritten after every part, so a
run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/gpu.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, loader
from visionkit_core import hookimpl

PEAK_TFLOPS = 790.0


# -- a synthetic dataset plugin and a timing callback, registered for this process only --------
class SyntheticBatches:
    """``length`` batches cycling over ``distinct`` pre-made uint8 batches (pinned on CUDA hosts)."""

    def __init__(
        self, batch_size: int, image_size: int, num_classes: int, length: int, distinct: int = 4
    ) -> None:
        import torch

        gen = torch.Generator().manual_seed(0)
        self.batches = []
        for _ in range(distinct):
            images = torch.randint(
                0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, generator=gen
            )
            labels = torch.randint(0, num_classes, (batch_size,), generator=gen)
            if torch.cuda.is_available():
                images, labels = images.pin_memory(), labels.pin_memory()
            self.batches.append((images, labels))
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        return self.batches[i % len(self.batches)]


def synthetic_datamodule(
    batch_size: int = 64, image_size: int | None = None, steps: int = 60, classes: int = 1000
) -> Any:
    """The ``vkbench:synthetic`` dataset: uint8 batches already in memory (no decoding)."""
    import lightning as L
    from torch.utils.data import DataLoader

    size = image_size or 224

    class Synthetic(L.LightningDataModule):
        def class_names(self) -> list[str]:
            return [str(i) for i in range(classes)]

        def train_dataloader(self) -> Any:
            return DataLoader(
                SyntheticBatches(batch_size, size, classes, steps), batch_size=None, shuffle=False
            )

    dm = Synthetic()
    dm.image_size = size
    return dm


class _Plugin:
    """Registers ``vkbench:synthetic`` and adds :class:`StepClock` to the Trainer."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    @hookimpl
    def visionkit_register_datasets(self, registry: Any) -> None:
        registry.add("synthetic", synthetic_datamodule, description="benchmark: in-memory uint8 batches")

    @hookimpl
    def visionkit_configure_trainer(self, trainer_kwargs: dict[str, Any], run: Any) -> None:
        trainer_kwargs["callbacks"].append(self.clock)


def make_clock(warmup: int, steps: int) -> Any:
    import torch
    from lightning.pytorch.callbacks import Callback

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepClock(Callback):
        """Seconds of training steps ``warmup`` .. ``warmup + steps`` (synchronised), and the first steps'."""

        def __init__(self) -> None:
            self.start = self.t0 = self.t1 = None
            self.images = 0
            self.params = {}

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            sync()
            self.start = time.perf_counter()
            first = next(pl_module.parameters())
            self.params = {
                "precision": str(trainer.precision),
                "channels_last": bool(
                    any(
                        p.ndim == 4
                        and p.is_contiguous(memory_format=torch.channels_last)
                        and not p.is_contiguous()
                        for p in pl_module.parameters()
                    )
                ),
                "device": str(first.device),
                "compiled": getattr(pl_module, "_compiler_ctx", None) is not None,
            }

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if batch_idx == warmup - 1:
                sync()
                self.t0 = time.perf_counter()
            elif batch_idx == warmup + steps - 1:
                sync()
                self.t1 = time.perf_counter()
            if batch_idx >= warmup:
                self.images += len(batch[0])

    return StepClock()


def training_flops_per_image(backbone: str, image_size: int, device: str, bf16: bool) -> float:
    """FLOPs of one forward + backward per image (``torch.utils.flop_counter``, batch of 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from visionkit_core.run.build import build_backbone

    model = build_backbone(backbone, num_classes=1000).to(device)
    x = torch.randn(2, 3, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False)
    autocast = torch.autocast(
        device_type="cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda")
    )
    with counter, autocast:
        model(x).float().sum().backward()
    return counter.get_total_flops() / 2


def train_case(model: str, compiled: bool, opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from visionkit_core.plugin.manager import load_plugins
    from visionkit_core.run.assemble import run_train
    from visionkit_core.run.config import RunConfig

    clock = make_clock(opts.warmup, opts.steps)
    total_steps = opts.warmup + opts.steps
    config = RunConfig(
        backbone=f"timm:{model}",
        data="vkbench:synthetic",
        epochs=1,
        batch_size=opts.batch_size,
        image_size=opts.image_size,
        accelerator="cpu" if opts.dry_run else "auto",
        devices="1",
        loggers=[],
        compile=compiled,
        run_dir=str(tmp / f"run-{model}-{'compiled' if compiled else 'eager'}"),
        options={
            "data": {"steps": total_steps},
            "trainer": {"limit_val_batches": 0, "num_sanity_val_steps": 0},
        },
    )
    plugins = load_plugins(extra=[("vkbench", _Plugin(clock))])
    started = time.perf_counter()
    with warnings.catch_warnings():  # no validation here, on purpose
        warnings.filterwarnings("ignore", message=r".*validation_step` but have no `val_dataloader")
        warnings.filterwarnings(
            "ignore", message=r"`ModelCheckpoint\(monitor=.*could not find the monitored key"
        )
        run_train(config, plugins=plugins, echo=lambda _: None)
    wall = time.perf_counter() - started
    _release()
    if clock.t0 is None or clock.t1 is None:
        raise RuntimeError("the timed steps did not run")
    seconds = clock.t1 - clock.t0
    images = opts.steps * opts.batch_size
    return {
        "model": model,
        "mode": "compiled" if compiled else "eager",
        "batch_size": opts.batch_size,
        "image_size": opts.image_size,
        "img_per_s": images / seconds,
        "timed_steps": opts.steps,
        "warmup_s": round(clock.t0 - clock.start, 2),
        "run_wall_s": round(wall, 1),
        **clock.params,
    }


def _release() -> None:
    """Free the finished run's model and compiled graphs before the next one."""
    import gc

    import torch

    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def loader_case(opts: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from visionkit_imagefolder.datamodule import default_num_workers

    cpus = common.machine()["cpus"]
    per_class = opts.loader_images // 4
    root = loader.make_tree(tmp / "jpegs", 4, per_class, 64 if opts.dry_run else 256)
    size = 48 if opts.dry_run else 224
    rows = []
    default = default_num_workers(4 * per_class, on_gpu=not opts.dry_run)
    for workers in sorted({cpus, default}):
        loaders = {
            "visionkit": loader.visionkit_loaders(root, size, opts.loader_batch, workers)["train"],
            "torchvision": loader.reference_loaders(root, size, opts.loader_batch, workers)["train"],
        }
        for name, dl in loaders.items():
            loader.time_pass(name, dl)  # warm-up: start the workers
        values: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(opts.loader_passes):
            for name, dl in loaders.items():
                values[name].append(loader.time_pass(name, dl))
        med = {k: common.median(v) for k, v in values.items()}
        rows.append(
            {
                "workers": workers,
                "default_workers": workers == default,
                "images": 4 * per_class,
                "visionkit_img_per_s": med["visionkit"],
                "torchvision_img_per_s": med["torchvision"],
                "ratio": common.ratio(med["visionkit"], med["torchvision"]),
            }
        )
        del loaders
    return rows


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpus": common.machine()["cpus"],
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["bf16"] = torch.cuda.is_bf16_supported()
    return env


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    lines = [
        f"# GPU benchmark {doc['date']}"
        + (" (dry run on CPU: code path check, not figures)" if doc["dry_run"] else ""),
        "",
        f"{env.get('gpu', 'no GPU')}, {env['cpus']} CPUs, torch {env['torch']}; "
        f"MFU against {doc['peak_tflops']:g} TFLOP/s.",
        "",
    ]
    body = [
        [
            r["model"],
            r["mode"],
            r.get("precision", "-"),
            r.get("channels_last", "-"),
            r["batch_size"],
            f"{r['img_per_s']:.1f}",
            f"{r['gflops_per_image']:.2f}",
            f"{100 * r['mfu']:.1f}%",
            r["warmup_s"],
        ]
        for r in doc["training"]
    ]
    head = [
        "model",
        "mode",
        "precision",
        "channels_last",
        "batch",
        "img/s",
        "GFLOP/img (fwd+bwd)",
        "MFU",
        "warm-up (s)",
    ]
    lines.append(common.md_table(head, body))
    if doc["loader"]:
        body = [
            [
                r["workers"] if not r["default_workers"] else f"{r['workers']} (default)",
                f"{r['visionkit_img_per_s']:.0f}",
                f"{r['torchvision_img_per_s']:.0f}",
                r["ratio"],
            ]
            for r in doc["loader"]
        ]
        lines += ["", common.md_table(["workers", "visionkit img/s", "torchvision+PIL img/s", "ratio"], body)]
    if doc["errors"]:
        lines += ["", "Errors:", "", *(f"- {e}" for e in doc["errors"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny timm test models on the CPU, a few steps")
    p.add_argument("--models", default=None, help="timm models (default resnet50,convnext_tiny)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (dry run 4)")
    p.add_argument("--image-size", type=int, default=None, help="default 224 (dry run 32)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 15, dry run 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50, dry run 3)")
    p.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS)
    p.add_argument("--loader-images", type=int, default=None, help="JPEGs for the loader (default 2000)")
    p.add_argument("--loader-batch", type=int, default=None, help="loader batch size (default 256)")
    p.add_argument("--loader-passes", type=int, default=3)
    p.add_argument("--no-loader", action="store_true")
    p.add_argument(
        "--budget-s", type=float, default=450, help="skip parts not started after this many seconds"
    )
    p.add_argument("--out-dir", type=Path, default=common.RESULTS)
    p.add_argument("--no-write", action="store_true")
    opts = p.parse_args(argv)
    dry = opts.dry_run
    opts.models = opts.models or ("test_resnet,test_convnext" if dry else "resnet50,convnext_tiny")
    opts.batch_size = opts.batch_size or (4 if dry else 256)
    opts.image_size = opts.image_size or (32 if dry else 224)
    opts.warmup = opts.warmup or (2 if dry else 15)
    opts.steps = opts.steps or (3 if dry else 50)
    opts.loader_images = opts.loader_images or (16 if dry else 2000)
    opts.loader_batch = opts.loader_batch or (4 if dry else 256)
    if dry:
        opts.loader_passes = 1

    began = time.perf_counter()
    import torch

    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the script on a CPU", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {
        "benchmark": "gpu",
        "date": dt.date.today().isoformat(),
        "dry_run": dry,
        "peak_tflops": opts.peak_tflops,
        "environment": environment(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "training": [],
        "loader": [],
        "errors": [],
    }

    def save() -> None:
        table = markdown(doc)
        if not opts.no_write:
            opts.out_dir.mkdir(parents=True, exist_ok=True)
            stem = f"gpu-{doc['date']}" + ("-dry-run" if dry else "")
            (opts.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            (opts.out_dir / f"{stem}.md").write_text(table, encoding="utf-8")

    device = "cpu" if dry else "cuda"
    with tempfile.TemporaryDirectory(prefix="vkbench-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        for model in opts.models.split(","):
            try:
                flops = training_flops_per_image(f"timm:{model}", opts.image_size, device, bf16=not dry)
            except Exception as err:  # report it and go on with the next part
                doc["errors"].append(f"{model} FLOP count: {type(err).__name__}: {err}")
                flops = float("nan")
            for compiled in (False,) if opts.no_compile else (False, True):
                if time.perf_counter() - began > opts.budget_s:
                    doc["errors"].append(f"{model} {'compiled' if compiled else 'eager'}: skipped (budget)")
                    continue
                try:
                    row = train_case(model, compiled, opts, tmp)
                except Exception as err:
                    traceback.print_exc()
                    doc["errors"].append(
                        f"{model} {'compiled' if compiled else 'eager'}: {type(err).__name__}: {err}"
                    )
                    continue
                row["gflops_per_image"] = flops / 1e9
                row["mfu"] = row["img_per_s"] * flops / (opts.peak_tflops * 1e12)
                doc["training"].append(row)
                print(
                    f"[gpu] {model} {row['mode']}: {row['img_per_s']:.1f} img/s", file=sys.stderr, flush=True
                )
                save()
        if not opts.no_loader:
            if time.perf_counter() - began > opts.budget_s + 60:
                doc["errors"].append("loader: skipped (budget)")
            else:
                try:
                    doc["loader"] = loader_case(opts, tmp)
                except Exception as err:
                    traceback.print_exc()
                    doc["errors"].append(f"loader: {type(err).__name__}: {err}")
    doc["wall_s"] = round(time.perf_counter() - began, 1)
    save()
    print(markdown(doc))
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    sys.exit(main())
