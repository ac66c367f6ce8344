"""predict: a checkpoint's predictions for image files and folders, for any task.

The checkpoint's dataset turns files into samples (``predict_dataset``), its task predicts
(``predict_step``: one entry per input) and writes them (``write_predictions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core.errors import CheckpointError, UnknownNameError, UsageError
from visionkit_core.plugin.contract import Prediction

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class PredictResult:
    """What ``predict`` did: the lines to print and the inputs it could not read."""

    lines: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    predicted: int = 0


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


def check_output(spec: Any, output: Path | None) -> None:
    """``--output`` must be what the task writes: one of its file suffixes, or a folder."""
    if output is None:
        return
    allowed = spec.predict_outputs
    if "dir" in allowed and (output.suffix == "" or output.is_dir()):
        return
    if output.suffix.lower() in allowed:
        return
    kinds = [f"a {s} file" for s in allowed if s != "dir"] + (["a folder"] if "dir" in allowed else [])
    raise UsageError(f"--output {str(output)!r}: the {spec.name} task writes {' or '.join(kinds)}")


def predict_dataset_for(loaded: Any, files: list[Path]) -> Any:
    """The checkpoint's dataset class builds the samples, from the recorded preprocessing."""
    from visionkit_core.plugin.manager import get_plugins

    name = loaded.meta.get("components", {}).get("dataset", {}).get("name")
    try:
        factory = get_plugins().registry.resolve("dataset", name).load() if name else None
    except UnknownNameError as err:
        raise CheckpointError(f"checkpoint {str(loaded.path)!r} needs dataset {name!r}: {err}") from None
    make = getattr(factory, "predict_dataset", None)
    if not callable(make):
        raise UsageError(
            f"dataset {name!r} of checkpoint {str(loaded.path)!r} has no predict_dataset(); "
            "its plugin cannot prepare files for predict"
        )
    return make(files, loaded.preprocessing)


def predict(
    ckpt: Path,
    inputs: list[Path],
    output: Path | None = None,
    options: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    num_workers: int | None = 0,
    accelerator: str = "auto",
) -> PredictResult:
    """Predict ``inputs`` with ``ckpt`` and write the results as the task does."""
    from torch.utils.data import DataLoader

    from visionkit_core.workflows.evaluate import eval_trainer
    from visionkit_core.workflows.inference import load_checkpoint

    loaded = load_checkpoint(ckpt)  # the checkpoint first: it is the likelier mistake
    check_output(loaded.spec, output)
    files = collect_inputs(inputs)
    dataset = predict_dataset_for(loaded, files)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers or 0,
        collate_fn=getattr(dataset, "collate_fn", None),
    )
    trainer = eval_trainer("predict", accelerator, spec=loaded.spec)
    ok: list[bool] = []
    sizes: list[tuple[int, int] | None] = []
    trainer.callbacks.append(_sample_flags(ok, sizes))
    batches = trainer.predict(loaded.model, dataloaders=loader) or []
    values = [v for batch in batches for v in per_input(batch)]
    if len(values) != len(files):
        raise UsageError(
            f"task {loaded.spec.name!r}: predict_step gave {len(values)} results for {len(files)} inputs; "
            "it must return one entry per input"
        )
    predictions, unreadable = [], []
    for i, path in enumerate(files):
        if not ok[i]:
            unreadable.append(str(path))
            continue
        predictions.append(Prediction(str(path), values[i], sizes[i]))
    lines = loaded.model.write_predictions(predictions, output, dict(options or {})) if predictions else []
    return PredictResult(list(lines), unreadable, len(predictions))


def per_input(batch: Any) -> list[Any]:
    """One entry per input of a predict_step result: a list (one Sample each), a tensor batched on
    dim 0, or a batched Sample (tensors batched on dim 0); tensors come to the CPU."""
    import torch

    if isinstance(batch, torch.Tensor):
        return list(batch.detach().cpu())
    if isinstance(batch, Mapping):
        fields = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        sizes = {int(v.shape[0]) if isinstance(v, torch.Tensor) and v.ndim else -1 for v in fields.values()}
        if len(sizes) != 1 or -1 in sizes:
            raise UsageError(
                f"predict_step returned a Sample whose fields are not all batched on dim 0 "
                f"({', '.join(fields)}); return a list (one Sample per input)"
            )
        return [{k: v[i] for k, v in fields.items()} for i in range(sizes.pop())]
    if isinstance(batch, (list, tuple)):
        return list(batch)
    raise UsageError(
        f"predict_step returned {type(batch).__name__}; return a list (one Sample per input), a tensor or "
        "a Sample batched on dim 0"
    )


def _field(batch: Any, key: str) -> list[Any]:
    """``key`` of every sample of a collated batch (a dict of batched values, or a list of dicts)."""
    import torch

    if isinstance(batch, dict):
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            return value.tolist()  # type: ignore[no-any-return]
        return list(value) if value is not None else []
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], dict):
        return [sample.get(key) for sample in batch]
    return []


def _sample_flags(ok: list[bool], sizes: list[tuple[int, int] | None]) -> Any:
    """A callback that collects each sample's ``ok`` flag and original ``size`` as the batches go by."""
    from lightning.pytorch.callbacks import Callback

    from visionkit_core.training.runtime import batch_size_of

    class Collect(Callback):
        def on_predict_batch_start(self, trainer: Any, pl_module: Any, batch: Any, *args: Any) -> None:
            oks, sizes_ = _field(batch, "ok"), _field(batch, "size")
            n = len(oks) or len(sizes_) or batch_size_of(batch)
            ok.extend(bool(v) for v in oks or [True] * n)
            sizes.extend((int(v[0]), int(v[1])) if v is not None else None for v in sizes_ or [None] * n)

    return Collect()
