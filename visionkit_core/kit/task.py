"""The task base: what every LightningModule of a vision task repeats, done once.

:class:`TaskBase` gives a task

- ``load_from_checkpoint`` that loads with ``weights_only=True`` and never downloads or
  re-reads weights (``pretrained=False, weights=None`` when the task takes them: the
  checkpoint holds the weights);
- ``class_names`` from the data-derived hyperparameters (``class_names``, ``num_classes``);
- normalisation on the device: :meth:`~TaskBase.set_normalization` registers the mean and
  std, ``on_after_batch_transfer`` normalises the uint8 images of a batch (a tensor, the
  first element of a tuple, or ``batch["image"]``; a task with ``tuple_batches`` gets a dict
  batch as ``(images, truth)``), :meth:`~TaskBase.denormalize` undoes it for display;
- ``configure_optimizers``: AdamW with warmup + cosine per step over parameter groups
  (:mod:`visionkit_core.kit.optim`), from ``hparams.lr`` and ``hparams.weight_decay``;
- :meth:`~TaskBase.load_weights_into`: ``--weights FILE`` into the first of several modules
  (encoder, backbone, whole network) whose keys it matches;
- ``configure_callbacks``: the kit's EMA of the weights when the task takes an ``ema`` option
  and it is on (:mod:`visionkit_core.kit.ema`).

``--freeze-backbone`` freezes ``pl_module.backbone`` (Lightning's ``BackboneFinetuning``): a
task that can be frozen gives a ``backbone`` property naming its pretrained part.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from visionkit_core import UsageError, load_weights
from visionkit_core.kit.optim import adamw_warmup_cosine

T = TypeVar("T", bound="TaskBase")


class TaskBase(L.LightningModule):
    """A LightningModule base for vision tasks (see the module docstring)."""

    norm_mean: Tensor
    norm_std: Tensor
    #: how class ``i`` is called when the data gave no names (``str.format`` with ``i``).
    unnamed_class = "class_{}"
    #: ``True``: the task's steps read ``(images, truth)``, so a dict batch ``{"image": ..., **truth}``
    #: (a dataset whose ``DataSpec`` says ``batch="dict"``) reaches them as that tuple (not in predict).
    tuple_batches = False

    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        """The kit's default evaluation (:class:`~visionkit_core.kit.evaluation.TaskEvaluation`):
        history.csv and training curves of the TaskSpec's metrics, and a grid of validation
        samples when the task has ``media_samples``. Override it to add the task's own figures."""
        from visionkit_core.kit.evaluation import TaskEvaluation

        return [TaskEvaluation(run_dir, type(self).visionkit_task)]  # type: ignore[attr-defined]

    def configure_callbacks(self) -> list[Any]:
        """The kit's EMA of the weights when the task's ``ema`` option is on, unless the run has
        one already (``--ema``; :func:`~visionkit_core.kit.ema.ema_callbacks`)."""
        from visionkit_core.kit.ema import DEFAULT_DECAY, ema_callbacks

        decay = float(self.hparams.get("ema_decay", DEFAULT_DECAY))
        return ema_callbacks(self, bool(self.hparams.get("ema", False)), decay)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls: type[T],
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> T:
        """Lightning's, safe by default (``weights_only=True``); nothing is downloaded or re-read:
        ``pretrained=False, weights=None`` unless given (for tasks that take them)."""
        accepted = inspect.signature(cls.__init__).parameters
        for name, value in (("pretrained", False), ("weights", None)):
            if name in accepted:
                kwargs.setdefault(name, value)
        return super().load_from_checkpoint(  # type: ignore[misc,no-any-return]
            checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
        )

    # -- data-derived names --------------------------------------------------------------------
    @staticmethod
    def check_class_names(num_classes: int, class_names: Sequence[str] | None) -> None:
        """Refuse class names that do not match ``num_classes`` (a ``UsageError``)."""
        if class_names is not None and len(class_names) != num_classes:
            raise UsageError(f"got {len(class_names)} class names for num_classes={num_classes}")

    @property
    def class_names(self) -> list[str]:
        """The data's class names (``hparams.class_names``), else ``unnamed_class`` for each class."""
        names = self.hparams.get("class_names")
        if names:
            return [str(n) for n in names]
        return [self.unnamed_class.format(i) for i in range(int(self.hparams.get("num_classes") or 0))]

    # -- normalisation on the device ---------------------------------------------------------------
    def use_preprocessing(
        self, default: Mapping[str, Any], given: Mapping[str, Any] | None, normalize: bool = True
    ) -> dict[str, Any]:
        """Keep ``given`` (a checkpoint's) over ``default`` (the network's) ``mean``/``std`` as
        :attr:`preprocessing` (plain floats, what the checkpoint records); register them for
        :meth:`normalize` unless ``normalize=False`` (a network that normalises itself)."""
        merged = {**default, **dict(given or {})}
        self.preprocessing: dict[str, Any] = {
            "mean": [float(v) for v in merged["mean"]],
            "std": [float(v) for v in merged["std"]],
        }
        if normalize:
            self.set_normalization(self.preprocessing["mean"], self.preprocessing["std"])
        return self.preprocessing

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Register the per-channel ``mean``/``std`` (of ``[0, 1]`` images) that :meth:`normalize` uses."""
        if len(mean) != len(std) or min(std) <= 0:
            raise UsageError(f"preprocessing needs as many means as positive stds, got mean={mean} std={std}")
        shape = (1, len(mean), 1, 1)
        self.register_buffer(
            "norm_mean", torch.tensor(mean, dtype=torch.float32).view(shape), persistent=False
        )
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(shape), persistent=False)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 ``[0, 255]`` or float ``[0, 1]`` images -> normalised float images."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        out = (x - self.norm_mean.float()) / self.norm_std.float()
        return out.to(self.norm_mean.dtype)  # float32, or the module's dtype under "64-true"/"bf16-true"

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised images -> float images in ``[0, 1]`` (for display)."""
        return (x.float() * self.norm_std.float() + self.norm_mean.float()).clamp(0.0, 1.0)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise the uint8 images of a batch, on the device it was moved to."""
        if isinstance(batch, Tensor):
            return self.normalize(batch)
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
            items = [self.normalize(batch[0]), *batch[1:]]
            return items if isinstance(batch, list) else tuple(items)
        if isinstance(batch, dict) and isinstance(batch.get("image"), Tensor):
            images = self.normalize(batch["image"])
            stage = self._trainer.state.stage if self._trainer is not None else None  # None: not running
            if self.tuple_batches and stage not in (None, "predict"):
                return images, {k: v for k, v in batch.items() if k != "image"}
            return {**batch, "image": images}
        return batch

    # -- weights and optimisation --------------------------------------------------------------
    def load_weights_into(self, targets: Sequence[nn.Module], path: str) -> str:
        """Load the file ``path`` into the first of ``targets`` it fits; print (rank zero) and return
        the load's one-line summary."""
        last: UsageError | None = None
        for target in targets:
            try:
                summary = load_weights(target, path).summary()
            except UsageError as err:  # matches nothing here: try the next one
                last = err
            else:
                rank_zero_print(f"visionkit: {summary}")
                return summary
        if last is None:
            raise UsageError(f"--weights {path}: this task has nothing to load weights into")
        raise last

    def configure_optimizers(self) -> Any:
        """AdamW (no decay on biases/norms) and a per-step linear warmup + cosine schedule."""
        return adamw_warmup_cosine(self, self.hparams["lr"], self.hparams["weight_decay"], self.trainer)


@rank_zero_only  # type: ignore[untyped-decorator]
def rank_zero_print(message: str, stream: IO[str] | None = None) -> None:
    """Print ``message`` to stderr (or ``stream``) on the process of global rank zero only."""
    print(message, file=stream or sys.stderr, flush=True)


def metric_key(name: str) -> str:
    """A class name usable in a metric key (``val/iou/<key>``): no spaces or slashes."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"
