"""``visionkit predict``: top-k classes for image files and folders, from a checkpoint alone."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from visionkit_core.cli.common import AcceleratorOption, CkptOption, WorkersOption
from visionkit_core.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Image files named directly, plus the images found (recursively) under folders."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(
                p
                for p in item.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            if not found:
                raise UsageError(
                    f"no images found in folder {str(item)!r} "
                    f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise UsageError(f"input {str(item)!r} not found; give image files or folders")
    return files


class _PredictDataset:
    """Decoded, evaluation-transformed uint8 images; an unreadable file yields a blank, flagged."""

    def __init__(self, files: list[Path], image_size: int, crop_pct: float) -> None:
        from visionkit_imagefolder.dataset import eval_transform

        self.files = files
        self.transform = eval_transform(image_size, crop_pct)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import torch
        from visionkit_imagefolder.dataset import decode_image_file

        try:
            return self.transform(decode_image_file(self.files[index])), 1
        except Exception:
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), 0


def predict_files(
    loaded: Any, files: list[Path], topk: int, batch_size: int, num_workers: int | None, accelerator: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of ``{"path", "top": [[class, prob], ...]}`` and the files that could not be read."""
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    from visionkit_core.cli.common import eval_trainer

    class _Flags(Callback):
        def __init__(self) -> None:
            self.readable: list[bool] = []

        def on_predict_batch_end(
            self,
            trainer: Any,
            pl_module: Any,
            outputs: Any,
            batch: Any,
            batch_idx: int,
            dataloader_idx: int = 0,
        ) -> None:
            self.readable.extend(bool(f) for f in batch[1].tolist())

    names = loaded.class_names
    k = max(1, min(topk, len(names)))
    dataset = _PredictDataset(files, loaded.image_size, float(loaded.preprocessing.get("crop_pct", 0.875)))
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers or 0,
    )
    flags = _Flags()
    trainer = eval_trainer(accelerator)
    trainer.callbacks.append(flags)
    batches = trainer.predict(loaded.model, dataloaders=loader)
    probs = torch.cat([b.float().cpu() for b in batches or []])
    values, indices = probs.topk(k, dim=1)
    rows, bad = [], []
    for i, path in enumerate(files):
        if not flags.readable[i]:
            bad.append(str(path))
            continue
        top = [[names[int(j)], round(float(v), 6)] for v, j in zip(values[i], indices[i], strict=True)]
        rows.append({"path": str(path), "top": top})
    return rows, bad


def write_rows(rows: list[dict[str, Any]], output: Path) -> None:
    """CSV (one row per image: path, class_1, prob_1, ...) or JSON, by the file's suffix."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".json":
        output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        return
    k = max((len(r["top"]) for r in rows), default=0)
    with open(output, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *[h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")]])
        for r in rows:
            writer.writerow([r["path"], *[x for name, p in r["top"] for x in (name, f"{p:.6f}")]])


def register(app: typer.Typer) -> None:
    """Add ``predict`` to ``app``."""

    @app.command("predict")
    def predict(
        inputs: Annotated[
            list[Path],
            typer.Argument(help="Image files and/or folders (searched recursively).", show_default=False),
        ],
        ckpt: CkptOption,
        topk: Annotated[int, typer.Option("--topk", "-k", help="How many classes to report per image.")] = 5,
        output: Annotated[
            Path | None,
            typer.Option("--output", "-o", help="Write FILE.csv or FILE.json instead of a table."),
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 64,
        num_workers: WorkersOption = None,
        accelerator: AcceleratorOption = "auto",
    ) -> None:
        """Classify images with a checkpoint; needs no other flag (the checkpoint describes the model)."""
        if topk < 1:
            raise UsageError(f"--topk must be at least 1, got {topk}")
        if output is not None and output.suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output {str(output)!r}: use a .csv or .json file name")
        from visionkit_core.workflows.inference import load_checkpoint

        loaded = load_checkpoint(ckpt)  # the checkpoint first: it is the likelier mistake
        files = collect_inputs(inputs)
        rows, bad = predict_files(loaded, files, topk, batch_size, num_workers, accelerator)
        for path in bad:
            typer.echo(f"warning: skipped unreadable image {path!r}", err=True)
        if output is not None:
            write_rows(rows, output)
            typer.echo(f"Wrote {len(rows)} predictions to {output}", err=True)
            return
        width = max([len(r["path"]) for r in rows] + [4])
        for r in rows:
            top = "  ".join(f"{name} {p:.3f}" for name, p in r["top"])
            typer.echo(f"{r['path']:<{width}}  {top}")
        if bad and not rows:
            sys.exit(1)
