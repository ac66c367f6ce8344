"""The kit: the public toolbox for task and data plugins, built on the core's contract.

The core (``visionkit_core``) holds the contract, the hooks and the run; the kit holds the
parts two or more plugins need, public and documented like the core (docs/kit.md), so a
plugin states what differs and nothing else. Importing this package is cheap: every name
below is imported from its module on first use (``visionkit_core.kit.sampler`` and the
modules that build on torch import it only then).

Modules:

- :mod:`~visionkit_core.kit.sampler`: :class:`EpochSeededSampler` (order and augmentation
  seeds from ``(seed, epoch)``, sharded by rank, ``balanced`` with weights) and
  :func:`balanced_weights`.
- :mod:`~visionkit_core.kit.task`: :class:`TaskBase` (checkpoint reload, data-derived
  ``class_names``, normalisation on the device, ``--weights`` into encoder/backbone/network,
  the optimiser), :func:`rank_zero_print`, :func:`metric_key`.
- :mod:`~visionkit_core.kit.optim`: :func:`adamw_warmup_cosine` over :func:`param_groups`,
  computed from the trainer when ``configure_optimizers`` runs (``--resume --epochs N+1`` safe).
- :mod:`~visionkit_core.kit.evaluation`: :class:`EvaluationCallback` (history.csv and training
  curves every epoch, kept across ``--resume``; the task's figures at the end of fit).
- :mod:`~visionkit_core.kit.plots` (torch-free): :func:`curves_figure`, :func:`per_class_bars`,
  :func:`media_grid`, :func:`colourise`, :func:`cell`.
- :mod:`~visionkit_core.kit.data`: the data base: :func:`decode_image`, :class:`SeededDataset`
  (``dataset[(index, seed)]``, bad samples replaced and carried along), :class:`SeededDataModule`
  (loaders, workers, seeded or balanced sampler, bad-sample recording), :class:`PredictImages`.
- :mod:`~visionkit_core.kit.skips` (torch-free): :class:`UnusableSample`, :class:`BadSampleLog`.
- :mod:`~visionkit_core.kit.weights` (torch-free): local weight files (``load_weights``) and the
  pretrained-weight cache: :func:`timm_pretrained_kwargs`, :func:`torch_hub_file`, :func:`hf_cached`,
  :func:`hf_unreachable`.
- :mod:`~visionkit_core.kit.media` (torch-free): headless figures, atomic PNG/CSV, logger upload,
  :func:`media_sample_of` (a MediaSample from an image and its truth and prediction Samples);
  :mod:`~visionkit_core.kit.exported`: exported files run back as torch modules;
  :mod:`~visionkit_core.kit.checks`: the ``plugins check`` conformance checks (``visionkit_core.testing``).
- :mod:`~visionkit_core.kit.check` (torch-free): :class:`DataReport` and :func:`inspect_all`
  for ``visionkit data check``; :mod:`~visionkit_core.kit.export` (torch-free): :func:`image_input`,
  the export sidecar's input description.
- :mod:`~visionkit_core.kit.splits` (torch-free): :func:`seeded_split`, a seeded validation hold-out.
- :mod:`~visionkit_core.kit.registration` (torch-free): a plugin module's registration hooks as
  tables (``visionkit_register_tasks = tasks(Entry(...), ...)``) and :func:`coco_or_yolo`, the
  stat-only look at the COCO/YOLO layouts that a ``visionkit_claim_data`` hook takes.
- :mod:`~visionkit_core.kit.demo` (torch-free): :func:`cache_root`, :func:`is_complete` and
  :func:`publish_tree`, the atomic writer of demo datasets materialised in the cache, and
  :class:`DemoTree`, the datamodule mixin that writes its tree when first needed (a demo that
  only changes defaults writes no ``__init__``), :func:`coco_demo` (rendered scenes as a COCO tree).
- :mod:`~visionkit_core.kit.objects`: :class:`Objects` (one image's boxes, labels, scores, masks,
  keypoints) and :class:`ObjectTask`, the task base over a torchvision-style detector, with the
  predict writers' and media parts; :mod:`~visionkit_core.kit.instances` builds the R-CNN tasks on it.
- :mod:`~visionkit_core.kit.scenes` (numpy only): the demo renderers' shared background.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visionkit_core.kit.backbones import build_feature_backbone
    from visionkit_core.kit.check import DataReport, inspect_all
    from visionkit_core.kit.data import (
        PredictImages,
        SeededDataModule,
        SeededDataset,
        decode_image,
        one_thread,
    )
    from visionkit_core.kit.demo import (
        MARKER,
        DemoTree,
        cache_root,
        coco_demo,
        demo_options,
        is_complete,
        publish_tree,
    )
    from visionkit_core.kit.evaluation import EvaluationCallback, TaskEvaluation, history_columns
    from visionkit_core.kit.export import image_input
    from visionkit_core.kit.media import media_sample_of, name_of
    from visionkit_core.kit.objects import Objects, ObjectTask
    from visionkit_core.kit.optim import adamw_warmup_cosine, lr_factor, param_groups
    from visionkit_core.kit.plots import cell, colourise, curves_figure, media_grid, per_class_bars
    from visionkit_core.kit.sampler import EpochSeededSampler, balanced_weights
    from visionkit_core.kit.skips import BadSampleLog, UnusableSample
    from visionkit_core.kit.splits import seeded_split
    from visionkit_core.kit.task import TaskBase, metric_key, rank_zero_print
    from visionkit_core.kit.weights import hf_cached, hf_unreachable, timm_pretrained_kwargs, torch_hub_file

#: Public names -> the module that defines them (imported on first use).
_LAZY = {
    "seeded_split": "visionkit_core.kit.splits",
    "DataReport": "visionkit_core.kit.check",
    "inspect_all": "visionkit_core.kit.check",
    "image_input": "visionkit_core.kit.export",
    "DemoTree": "visionkit_core.kit.demo",
    "demo_options": "visionkit_core.kit.demo",
    "coco_demo": "visionkit_core.kit.demo",
    "Objects": "visionkit_core.kit.objects",
    "ObjectTask": "visionkit_core.kit.objects",
    "history_columns": "visionkit_core.kit.evaluation",
    "media_sample_of": "visionkit_core.kit.media",
    "name_of": "visionkit_core.kit.media",
    "build_feature_backbone": "visionkit_core.kit.backbones",
    "hf_cached": "visionkit_core.kit.weights",
    "hf_unreachable": "visionkit_core.kit.weights",
    "timm_pretrained_kwargs": "visionkit_core.kit.weights",
    "torch_hub_file": "visionkit_core.kit.weights",
    "EvaluationCallback": "visionkit_core.kit.evaluation",
    "TaskEvaluation": "visionkit_core.kit.evaluation",
    "cell": "visionkit_core.kit.plots",
    "colourise": "visionkit_core.kit.plots",
    "curves_figure": "visionkit_core.kit.plots",
    "media_grid": "visionkit_core.kit.plots",
    "per_class_bars": "visionkit_core.kit.plots",
    "TaskBase": "visionkit_core.kit.task",
    "metric_key": "visionkit_core.kit.task",
    "rank_zero_print": "visionkit_core.kit.task",
    "adamw_warmup_cosine": "visionkit_core.kit.optim",
    "lr_factor": "visionkit_core.kit.optim",
    "param_groups": "visionkit_core.kit.optim",
    "PredictImages": "visionkit_core.kit.data",
    "SeededDataModule": "visionkit_core.kit.data",
    "SeededDataset": "visionkit_core.kit.data",
    "decode_image": "visionkit_core.kit.data",
    "one_thread": "visionkit_core.kit.data",
    "BadSampleLog": "visionkit_core.kit.skips",
    "UnusableSample": "visionkit_core.kit.skips",
    "EpochSeededSampler": "visionkit_core.kit.sampler",
    "balanced_weights": "visionkit_core.kit.sampler",
    "MARKER": "visionkit_core.kit.demo",
    "cache_root": "visionkit_core.kit.demo",
    "is_complete": "visionkit_core.kit.demo",
    "publish_tree": "visionkit_core.kit.demo",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'visionkit_core.kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "MARKER",
    "BadSampleLog",
    "DataReport",
    "DemoTree",
    "EpochSeededSampler",
    "EvaluationCallback",
    "ObjectTask",
    "Objects",
    "PredictImages",
    "SeededDataModule",
    "SeededDataset",
    "TaskBase",
    "TaskEvaluation",
    "UnusableSample",
    "adamw_warmup_cosine",
    "balanced_weights",
    "build_feature_backbone",
    "cache_root",
    "cell",
    "coco_demo",
    "colourise",
    "curves_figure",
    "decode_image",
    "demo_options",
    "hf_cached",
    "hf_unreachable",
    "history_columns",
    "image_input",
    "inspect_all",
    "is_complete",
    "lr_factor",
    "media_grid",
    "media_sample_of",
    "metric_key",
    "name_of",
    "one_thread",
    "param_groups",
    "per_class_bars",
    "publish_tree",
    "rank_zero_print",
    "seeded_split",
    "timm_pretrained_kwargs",
    "torch_hub_file",
]
