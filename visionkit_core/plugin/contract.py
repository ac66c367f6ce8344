"""The task/data contract: what a task and a dataset declare so the core can run them.

The core knows no task by name. It reads a :class:`TaskSpec` from the task's factory (the
``visionkit_task`` attribute of a LightningModule class), a :class:`DataInfo` and a
:class:`DataSpec` from the datamodule, and calls the methods of :class:`VisionTask` and
:class:`VisionData` for what differs between tasks (evaluation callbacks, prediction files,
export graphs, predict-time preprocessing). Everything here is importable without torch:
the protocols describe objects, they do not import their types.

A run, generically::

    dm = dataset_factory(root=..., batch_size=..., ...)       # VisionData
    info = dm.data_info()                                       # after dm.setup("fit")
    task = task_factory(**info.task_kwargs(), backbone=..., lr=...)  # VisionTask
    spec = type(task).visionkit_task                            # monitor, mode, outputs
    callbacks = defaults(spec) + task.evaluation_callbacks(run_dir)
    trainer.fit(task, datamodule=dm)   # the core writes the checkpoint metadata
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

#: Split names a dataset may declare.
SPLITS = ("train", "val", "test", "predict")


@dataclass(frozen=True)
class TaskSpec:
    """What a task declares, as the class attribute ``visionkit_task`` of its LightningModule.

    Args:
        name: the task's name as written in checkpoints (``"classification"``).
        monitor: the metric the task is judged by (best checkpoint, early stopping, summary).
        mode: ``"max"`` or ``"min"`` for ``monitor``.
        needs: the :class:`DataInfo` fields the task requires (``class_names``,
            ``ignore_index``, ...); the core refuses a dataset that leaves one unset.
        default_data: the dataset used when ``--data`` is not given (the task's demo).
        default_backbone: the backbone used when ``--backbone`` is not given.
        default_epochs: epochs when ``--epochs`` is not given (a dataset factory's own
            ``default_epochs`` attribute, e.g. a demo's, wins; without either, the core chooses
            enough epochs for about 500 optimizer steps, 10 to 100: docs/workflow.md).
        default_batch_size: the batch size the task trains at when the data is large enough, and
            the largest the core chooses without ``--batch-size`` (smaller data gets the largest
            power of two below it that still gives 10 optimizer steps an epoch, at least 2).
        default_lr: the AdamW peak learning rate at ``default_batch_size``; without ``--lr`` the
            core passes it scaled by ``sqrt(batch / default_batch_size)``.
        predict_outputs: what ``predict --output`` accepts: file suffixes (``".csv"``) and/or
            ``"dir"`` for a folder of files.
        export_formats: formats ``export`` supports (empty: the task cannot be exported).
        metrics: the main metric keys it logs (documentation and ``plugins check``).
    """

    name: str
    monitor: str
    mode: Literal["max", "min"] = "max"
    needs: tuple[str, ...] = ("class_names",)
    default_data: str | None = None
    default_backbone: str | None = None
    default_epochs: int | None = None
    default_batch_size: int = 16
    default_lr: float = 2e-3
    predict_outputs: tuple[str, ...] = (".csv", ".json")
    export_formats: tuple[str, ...] = ("onnx", "torchscript")
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"TaskSpec {self.name!r}: mode must be 'max' or 'min', got {self.mode!r}")
        if "/" not in self.monitor:
            raise ValueError(
                f"TaskSpec {self.name!r}: monitor {self.monitor!r} must be a namespaced key like 'val/acc'"
            )
        if self.default_batch_size < 1 or not self.default_lr > 0:
            raise ValueError(
                f"TaskSpec {self.name!r}: default_batch_size must be at least 1 and default_lr positive, "
                f"got {self.default_batch_size} and {self.default_lr}"
            )


@dataclass
class DataInfo:
    """What a dataset tells its task, read after ``setup()``; recorded in config.yaml and checkpoints.

    Each field is passed to the task factory under its own name when the factory accepts
    it (``num_classes`` is derived from ``class_names``); ``extra`` holds anything else a
    dataset and task agree on, passed the same way.

    ``train_size`` is not passed to the task: it is the number of training samples (after any
    validation split; ``None``: unknown), from which the core chooses the batch size, learning
    rate and epochs a user did not give (docs/workflow.md, "Defaults that fit the data"). A
    datamodule whose size is unknown before ``setup`` (a stream) leaves it ``None`` and gets the
    task's defaults.
    """

    class_names: list[str] = field(default_factory=list)
    ignore_index: int | None = None
    label_map: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    train_size: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def task_kwargs(self) -> dict[str, Any]:
        """The keyword arguments a task factory may receive from the data."""
        kwargs: dict[str, Any] = {"num_classes": self.num_classes, "class_names": list(self.class_names)}
        if self.ignore_index is not None:
            kwargs["ignore_index"] = self.ignore_index
        if self.label_map is not None:
            kwargs["label_map"] = dict(self.label_map)
        kwargs.update(self.extra)
        return kwargs

    def missing(self, needs: Sequence[str]) -> list[str]:
        """The ``needs`` this info leaves unset."""
        have = self.task_kwargs()
        return [n for n in needs if have.get(n) in (None, [], {})]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(data).items() if k in known})


@dataclass(frozen=True)
class DataSpec:
    """What a dataset declares about its batches and splits (``datamodule.data_spec()``).

    Args:
        splits: the splits this data has (of ``train``, ``val``, ``test``, ``predict``);
            ``visionkit test`` on data without ``test`` is a usage error naming both.
        batch: ``"tuple"`` (``(images, truth, ...)``, ``truth`` a :class:`Sample` or a list of them)
            or ``"dict"`` (``{"image": ..., ...}``).
        image_key: where the images are in a batch: an index for tuples, a key for dicts.
    """

    splits: tuple[str, ...] = ("train", "val")
    batch: Literal["tuple", "dict"] = "tuple"
    image_key: int | str = 0


@dataclass(frozen=True)
class BadSample:
    """One sample a dataset could not use, and why (``data check``, skipped counts)."""

    path: str
    reason: str
    line: int | None = None  # a line or annotation id, where the file holds many samples

    def describe(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class ExportSpec:
    """What ``export`` needs from a task (``task.export_spec(image_size)``).

    ``module`` takes float32 RGB images in ``[0, 1]`` (NCHW) with normalisation inside;
    ``example_input`` traces it; ``check_input`` (another batch size and, where dynamic,
    another image size) is what the exported model is compared on against PyTorch.
    """

    module: Any
    example_input: Any
    check_input: Any
    input_names: list[str] = field(default_factory=lambda: ["images"])
    output_names: list[str] = field(default_factory=lambda: ["logits"])
    #: per input/output name: {axis: symbolic name}, e.g. {"images": {0: "batch"}}
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    #: extra fields of the sidecar JSON (e.g. what the outputs mean)
    sidecar: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 1e-4
    #: ``export --check`` runs validation with the exported graph in place of ``module``:
    #: ``task_forward(exported, *args)`` must give what ``task.forward(*args)`` gives (e.g. undo the
    #: task's normalisation, stack a list of images). None: ``forward`` takes and returns what
    #: ``module`` does.
    task_forward: Callable[..., Any] | None = None


#: The attribute a feature backbone carries: one :class:`FeatureLevel` (or a dict with
#: ``channels`` and ``reduction``) per feature map its forward returns, in order.
FEATURE_INFO = "visionkit_feature_info"


@dataclass(frozen=True)
class FeatureLevel:
    """One feature map of a feature backbone: its channels and its reduction (stride) of the input.

    A backbone factory that takes ``features_only`` builds, when it is ``True``, a module whose
    forward maps ``(N, 3, H, W)`` images to a list of ``(N, channels, H / reduction, W /
    reduction)`` tensors (``out_indices`` picks which levels, ``None``: all) and that carries
    :data:`FEATURE_INFO` describing them.
    """

    channels: int
    reduction: int

    @classmethod
    def of(cls, value: Any) -> FeatureLevel:
        """A level from a :class:`FeatureLevel` or a ``{"channels", "reduction"}`` mapping."""
        if isinstance(value, FeatureLevel):
            return value
        return cls(channels=int(value["channels"]), reduction=int(value["reduction"]))


class Sample(TypedDict, total=False):
    """One image's truth or prediction, the one structure every task's data and outputs use
    (MMEngine's DataSample idea, as a plain dict of tensors so ``default_collate`` and
    ``Tensor.to`` handle it). A task uses the keys of its kind and ignores the rest.

    Per kind (truth / prediction):

    - classification: ``label`` ``()`` int64 class index / ``label`` and ``probs`` ``(C,)``;
    - multi-label: ``multi_hot`` ``(C,)`` float 0/1 / ``multi_hot`` and ``probs`` ``(C,)``;
    - semantic segmentation: ``mask`` ``(H, W)`` int64 class per pixel (255: ignored) / ``mask``;
    - objects (detection, instances, keypoints), as torchvision's detectors take and give them:
      ``boxes`` ``(N, 4)`` xyxy pixels, ``labels`` ``(N,)`` class indices (from 0), ``scores``
      ``(N,)`` (predictions), ``iscrowd`` ``(N,)`` and ``image_id`` (truth), ``masks`` ``(N, H, W)``
      (truth; predicted in original pixels) or ``(N, 1, H, W)`` probabilities (predicted on the
      model's input), ``keypoints`` ``(N, K, 2)`` with ``visibility`` ``(N, K)`` (truth) or
      ``(N, K, 3)`` with ``keypoints_scores`` ``(N, K)`` (predicted).

    A batch is ``(images, truth)``: ``truth`` one Sample whose fixed-size fields are batched on
    dim 0 (classification, segmentation: what ``default_collate`` makes of per-image Samples), or
    a list of per-image Samples (objects: their counts differ). ``predict_step`` returns one
    Sample per input; ``write_predictions`` receives them as :attr:`Prediction.value`. A
    validation step leaves ``last_eval_output = (images, truth, pred)`` for its evaluation
    callback, ``pred`` in the form of ``truth``; ``visionkit_core.kit.media.media_sample_of``
    makes a :class:`MediaSample` of one image's pair.

    Deprecated (hookspec 1.1; still accepted by the classification tasks and wherever the core,
    the kit and wandb-images look into batches; ``plugins check`` notes it): ``(images, labels)``
    batches with a bare tensor in place of the Sample.
    """

    label: Tensor
    multi_hot: Tensor
    probs: Tensor
    mask: Tensor
    boxes: Tensor
    labels: Tensor
    scores: Tensor
    iscrowd: Tensor
    image_id: Tensor
    masks: Tensor
    keypoints: Tensor
    visibility: Tensor
    keypoints_scores: Tensor


@dataclass
class Prediction:
    """One input's prediction, handed to ``task.write_predictions``."""

    path: str
    value: Any  # whatever the task's predict_step gave for this input
    size: tuple[int, int] | None = None  # the original (height, width), where known


@dataclass
class MediaSample:
    """One image with its truth and prediction, for media loggers (``wandb-images``).

    ``image`` is an ``(H, W, 3)`` uint8 array; masks are ``(H, W)`` class-index arrays;
    boxes are ``[x0, y0, x1, y1]`` pixel lists with ``labels`` (and ``scores``); keypoints are
    one list per object of ``[x, y, visible]`` points (pixels; ``visible`` 0: not shown).
    ``visionkit_core.kit.media.media_sample_of`` makes one from an image and two :class:`Sample`.
    """

    image: Any
    caption: str = ""
    true_mask: Any | None = None
    pred_mask: Any | None = None
    true_boxes: list[list[float]] | None = None
    true_labels: list[int] | None = None
    pred_boxes: list[list[float]] | None = None
    pred_labels: list[int] | None = None
    pred_scores: list[float] | None = None
    correct: bool | None = None  # whether the prediction is right, where that is one yes/no
    true_keypoints: list[list[list[float]]] | None = None
    pred_keypoints: list[list[list[float]]] | None = None


@runtime_checkable
class VisionTask(Protocol):
    """The methods a task's LightningModule provides besides Lightning's own.

    ``preprocessing`` holds the normalisation the model expects (``mean``, ``std``) as
    plain values; ``predict_step`` returns one entry per input (a list, or a tensor batched
    on dim 0; the built-in tasks give one :class:`Sample` each), which the core pairs with the
    input files.
    """

    preprocessing: dict[str, Any]

    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        """Callbacks that evaluate the task during ``fit`` (plots, tables), written under ``run_dir``."""
        ...

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        """Write predictions to ``output`` (a file or folder, per ``TaskSpec.predict_outputs``),
        or return table lines when ``output`` is None; return the lines to print."""
        ...

    def export_spec(self, image_size: int) -> ExportSpec:
        """The module, example inputs, names and dynamic axes of the exported graph."""
        ...


@runtime_checkable
class VisionData(Protocol):
    """The methods a dataset's LightningDataModule provides besides Lightning's own.

    The class (the registered factory) also provides the classmethod
    ``predict_dataset(files, preprocessing)``: a map-style dataset of dict samples
    ``{"image": uint8 CHW tensor, "ok": bool, "size": (h, w)}``, built from the plain
    ``preprocessing()`` a checkpoint recorded, so ``predict`` needs nothing else.
    """

    def data_info(self) -> DataInfo:
        """Class names, ignore index, label map, ... (may call ``setup("fit")``)."""
        ...

    def data_spec(self) -> DataSpec:
        """Splits and batch structure."""
        ...

    def preprocessing(self) -> dict[str, Any]:
        """Plain predict/export preprocessing (image size, resize, crop), recorded in checkpoints."""
        ...

    def bad_samples(self) -> list[BadSample]:
        """The samples skipped so far (unreadable files, bad masks or boxes)."""
        ...


@dataclass(frozen=True)
class OptionalMember:
    """A member a component may have besides what its protocol requires; the core and kit look up
    no other. ``plugins check`` checks each one a component has (``expect``: ``"callable"`` with
    ``params`` positional parameters besides ``self``, ``"positive int"``, ``"mapping"`` or
    ``"names"``, a sequence of strings); ``on``: ``"class"`` when it is found on the registered
    factory, ``"instance"`` when only a built object has it (not checked before a run)."""

    name: str
    expect: str
    doc: str
    params: int | None = None
    on: Literal["class", "instance"] = "class"


#: Every optional member, by component kind. Documented in docs/plugins.md ("Optional members").
OPTIONAL_MEMBERS: dict[str, tuple[OptionalMember, ...]] = {
    "task": (
        OptionalMember(
            "media_samples",
            "callable",
            "media_samples(batch, limit) -> list[MediaSample]: "
            "images of a validation batch with truth and prediction (media loggers, the "
            "kit's sample grid)",
            params=2,
        ),
        OptionalMember(
            "denormalize",
            "callable",
            "denormalize(images) -> the model input back in [0, 1] for display (TaskBase gives it)",
            params=1,
        ),
        OptionalMember("backbone", "module", "the pretrained part --freeze-backbone freezes", on="instance"),
        OptionalMember(
            "last_eval_output",
            "any",
            "(images, truth, pred) that validation_step leaves for the task's EvaluationCallback: the "
            "model input batch, the truth as the batch carries it, the prediction as Samples in the "
            "same form (batched, or a list per image); reset to None after use",
            on="instance",
        ),
    ),
    "dataset": (
        OptionalMember(
            "predict_dataset",
            "callable",
            "classmethod predict_dataset(files, "
            "preprocessing): the predict inputs as dict samples (see VisionData)",
            params=2,
        ),
        OptionalMember(
            "default_epochs",
            "positive int",
            "epochs when --epochs is not given (a demo's own number; wins over TaskSpec.default_epochs)",
        ),
        OptionalMember(
            "convert", "callable", "convert(to, output, workers): `visionkit data convert`", params=3
        ),
        OptionalMember(
            "collate_fn", "callable", "on a predict_dataset: how its samples are batched", on="instance"
        ),
    ),
    "backbone": (
        OptionalMember(FEATURE_INFO, "any", "on a features_only module: its FeatureLevels", on="instance"),
        OptionalMember(
            "visionkit_preprocessing",
            "mapping",
            "on the module: the input mean and std it expects, when not ImageNet's",
            on="instance",
        ),
        OptionalMember(
            "visionkit_smoke_names", "names", "on a dynamic namespace's resolve: names `plugins check` builds"
        ),
    ),
    "callback": (
        OptionalMember(
            "visionkit_summary",
            "callable",
            "visionkit_summary(trainer) -> dict merged into summary.json",
            params=1,
            on="instance",
        ),
    ),
    "logger": (
        OptionalMember(
            "visionkit_finish",
            "callable",
            "visionkit_finish(failed: bool): flush and close when the fit ends or fails",
            params=1,
            on="instance",
        ),
    ),
}


def task_spec_of(factory: Any) -> TaskSpec | None:
    """The :class:`TaskSpec` a task factory declares (its ``visionkit_task`` attribute), if any."""
    spec = getattr(factory, "visionkit_task", None)
    return spec if isinstance(spec, TaskSpec) else None


__all__ = [
    "FEATURE_INFO",
    "OPTIONAL_MEMBERS",
    "SPLITS",
    "BadSample",
    "DataInfo",
    "DataSpec",
    "ExportSpec",
    "FeatureLevel",
    "MediaSample",
    "OptionalMember",
    "Prediction",
    "Sample",
    "TaskSpec",
    "VisionData",
    "VisionTask",
    "task_spec_of",
]
