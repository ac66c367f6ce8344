"""RunConfig: one validated description of a run, each train option declared once.

Precedence: defaults < ``--config`` YAML files (later wins) < ``--set key=value`` < command-line flags;
``to_yaml`` prints what ``--config`` reads back. ``--set SECTION.KEY=VALUE`` options live under ``options``
and are checked against the chosen factory by :func:`check_options`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core.errors import ConfigError

OPTION_SECTIONS = ("backbone", "task", "data", "trainer", "logger", "callback")
_NESTED_SECTIONS = ("logger", "callback")  # options keyed by component name
# whole trailing words only: "api_key", "hf_token", "password" are secrets; "num_tokens" is not
_SECRET_RE = re.compile(
    r"(?:^|[_.-])(?:api[_-]?key|apikey|token|secret|password|passwd|credentials?)$", re.IGNORECASE
)
REDACTED = "<redacted>"
#: The config.yaml section holding what a run derived from its data (class names, ...): recorded, not read.
DERIVED_KEY = "derived"
#: The EMA decay ``--ema`` uses without ``--ema-decay``.
EMA_DECAY = 0.999


def is_secret_key(key: str) -> bool:
    """Whether an option named ``key`` holds a secret (its value is never written anywhere)."""
    return bool(_SECRET_RE.search(key))


#: ``--help`` panels of the train options.
MODEL, DATA, TRAIN, HARDWARE, RUN, RECIPE = "Model", "Data", "Training", "Hardware", "Run", "Recipe"


def _opt(
    default: Any,
    panel: str,
    *flags: str,
    help: str,
    rule: tuple[Callable[[Any], bool], str] | None = None,
    choices: tuple[str, ...] = (),
    complete: str | None = None,
) -> Any:
    """One train option, declared once: its default, its flag spellings and ``--help`` text
    (``cli/options.py`` builds the Typer signature from them), the range its values must fall in
    (``rule``: a test and the sentence saying it) or its ``choices``, and the component kind whose
    names complete it in the shell."""
    meta = dict(flags=list(flags), help=help, panel=panel, rule=rule, choices=choices, complete=complete)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


_AT_LEAST_1 = (lambda v: v >= 1, "must be at least 1")
_POSITIVE = (lambda v: v > 0, "must be positive")
_BETA = (lambda v: v >= 0, "is a Beta(alpha, alpha) parameter: >= 0 (0: off)")
_OPEN_UNIT = (lambda v: 0.0 < v < 1.0, "must be between 0 and 1 (exclusive)")


@dataclass
class RunConfig:
    """Everything a run needs: one field per ``train`` flag (dashes -> underscores); ``None`` leaves the
    choice to the task, the dataset or the machine, as each option's help says."""

    backbone: str | None = _opt(
        None, MODEL, "--backbone", "-b", complete="backbone",
        help="Backbone (default: the task's own): resnet18, timm:convnext_tiny, torchvision:resnet50, "
        "ns:name; dense tasks take any backbone that gives feature maps.",
    )  # fmt: skip
    task: str = _opt(
        "classification", MODEL, "--task", complete="task",
        help="Task (default: classification): multilabel, segmentation, detection, instance-segmentation, "
        "keypoints, or a plugin's (`visionkit tasks list`).",
    )  # fmt: skip
    data: str | None = _opt(
        None, DATA, "--data", "-d", complete="dataset",
        help="A data folder or file in a layout the task reads (ImageFolder, masks, VOC, COCO, YOLO, CSV; "
        "`visionkit datasets list`), or a dataset name (default: the task's demo).",
    )  # fmt: skip
    val_split: float = _opt(
        0.2, DATA, "--val-split", rule=_OPEN_UNIT,
        help="Fraction of the training data held out for validation when DATA has no val split "
        "(default 0.2; stratified by class for classification).",
    )  # fmt: skip
    epochs: int | None = _opt(
        None, TRAIN, "--epochs", "-e", rule=_AT_LEAST_1,
        help="Number of epochs (default: the dataset's own, e.g. 3 for digits; else enough for about 500 "
        "optimizer steps, 10 to 100).",
    )  # fmt: skip
    batch_size: int | None = _opt(
        None, TRAIN, "--batch-size", rule=_AT_LEAST_1,
        help="Batch size per device (default: the task's, 64 for classification, 16 for dense tasks, "
        "halved until an epoch has 10 optimizer steps; at least 2).",
    )  # fmt: skip
    lr: float | None = _opt(
        None, TRAIN, "--lr", rule=_POSITIVE,
        help="Peak learning rate of AdamW (default: the task's, 2e-3, times sqrt(batch / the task's batch)).",
    )  # fmt: skip
    image_size: int | None = _opt(
        None, DATA, "--image-size", rule=(lambda v: v >= 8, "must be at least 8 pixels"),
        help="Square input size in pixels (default: the dataset's own; summary.json records it).",
    )  # fmt: skip
    seed: int = _opt(42, TRAIN, "--seed", help="Random seed (default 42).")
    deterministic: bool = _opt(
        False,
        TRAIN,
        "--deterministic/--no-deterministic",
        help="Use deterministic algorithms (bit-exact reruns).",
    )
    accelerator: str = _opt(
        "auto", HARDWARE, "--accelerator", help="auto | cpu | gpu.",
        choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    )  # fmt: skip
    devices: str = _opt("auto", HARDWARE, "--devices", help="Device count, list like 0,1, or auto.")
    strategy: str = _opt(
        "auto", HARDWARE, "--strategy", help="auto | ddp | fsdp (Lightning strategies).",
        choices=("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "deepspeed"),
    )  # fmt: skip
    num_nodes: int = _opt(
        1, HARDWARE, "--num-nodes", rule=_AT_LEAST_1, help="Number of nodes (with torchrun or SLURM)."
    )
    precision: str = _opt(
        "auto", HARDWARE, "--precision",
        help="auto (32 on CPU, bf16-mixed on capable GPUs) | 32 | 16-mixed | bf16-mixed.",
        choices=("auto", "32", "32-true", "16-mixed", "bf16-mixed", "64", "64-true"),
    )  # fmt: skip
    pretrained: bool = _opt(
        False, MODEL, "--pretrained/--no-pretrained",
        help="Start from the backbone's published weights (needs them downloaded or cached).",
    )  # fmt: skip
    weights: str | None = _opt(
        None, MODEL, "--weights", help="Local backbone weights: .safetensors or a PyTorch state dict."
    )
    loggers: list[str] = _opt(  # noqa: RUF009 - a default_factory field
        ["csv"], RUN, "--logger", complete="logger",
        help="Logger, repeatable: csv (default), tensorboard, wandb, or a plugin's.",
    )  # fmt: skip
    callbacks: list[str] = _opt(  # noqa: RUF009 - a default_factory field
        [], RUN, "--callback", complete="callback",
        help="Extra callback, repeatable: wandb-images, early-stopping, or a plugin's.",
    )  # fmt: skip
    run_dir: str | None = _opt(
        None, RUN, "--run-dir", help="Run directory (default runs/<timestamp>-<backbone>)."
    )
    num_workers: int | None = _opt(
        None, DATA, "--num-workers", rule=(lambda v: v >= 0, "must be >= 0"),
        help="DataLoader workers (default: from the CPU count).",
    )  # fmt: skip
    resume: str | None = _opt(
        None, RUN, "--resume",
        help="Continue a run exactly: 'last' (the run in --run-dir) or a checkpoint path.",
    )  # fmt: skip
    init_from: str | None = _opt(
        None, RUN, "--init-from", help="Start a new run from a checkpoint's weights only."
    )
    on_bad_image: str = _opt(
        "skip", DATA, "--on-bad-image", choices=("error", "skip"),
        help="skip (default: warn, count, continue) | error (stop before training).",
    )  # fmt: skip
    sync_batchnorm: bool = _opt(
        False, HARDWARE, "--sync-batchnorm/--no-sync-batchnorm",
        help="Synchronise BatchNorm statistics across devices.",
    )  # fmt: skip
    activation_checkpointing: bool = _opt(
        False, HARDWARE, "--activation-checkpointing/--no-activation-checkpointing",
        help="With --strategy fsdp: recompute the backbone blocks' activations in backward to save memory.",
    )  # fmt: skip
    compile: bool = _opt(
        False,
        HARDWARE,
        "--compile/--no-compile",
        help="torch.compile the model (off by default; pays off on GPUs).",
    )
    # the training recipe: None means "the task's or dataset's own default" (and is never passed on)
    augment: str | None = _opt(
        None, RECIPE, "--augment", choices=("none", "basic", "randaugment", "trivialaugment", "autoaugment"),
        help="Training augmentation: none | basic (default: random resized crop + flip) | randaugment | "
        "trivialaugment | autoaugment (torchvision v2, on top of basic).",
    )  # fmt: skip
    mixup: float | None = _opt(
        None, RECIPE, "--mixup", rule=_BETA,
        help="MixUp on each training batch with Beta(ALPHA, ALPHA); 0: off.",
    )  # fmt: skip
    cutmix: float | None = _opt(
        None, RECIPE, "--cutmix", rule=_BETA,
        help="CutMix on each training batch with Beta(ALPHA, ALPHA); with --mixup, one of the two per batch.",
    )  # fmt: skip
    label_smoothing: float | None = _opt(
        None, RECIPE, "--label-smoothing", rule=(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
        help="Label smoothing of the loss (0 to <1).",
    )  # fmt: skip
    class_weights: str | None = _opt(
        None, RECIPE, "--class-weights", choices=("none", "balanced"),
        help="Loss weights: none (default) | balanced (from the training class counts).",
    )  # fmt: skip
    sampler: str | None = _opt(
        None, RECIPE, "--sampler", choices=("default", "balanced"),
        help="Training order: default (shuffle) | balanced (each class drawn equally often; DDP-aware).",
    )  # fmt: skip
    cache: str | None = _opt(
        None, RECIPE, "--cache", choices=("auto", "ram", "none"),
        help="Decoded training images kept in memory: auto (the dataset's default; detection and "
        "segmentation: up to 512 MiB) | ram (up to half the free memory) | none.",
    )  # fmt: skip
    ema: bool = _opt(
        False, RECIPE, "--ema/--no-ema",
        help="Keep an exponential moving average of the weights (Lightning's "
        "EMAWeightAveraging); validation and the checkpoint use it.",
    )  # fmt: skip
    ema_decay: float | None = _opt(
        None, RECIPE, "--ema-decay", rule=_OPEN_UNIT, help="Decay of --ema (default 0.999)."
    )
    freeze_backbone: bool = _opt(
        False, RECIPE, "--freeze-backbone/--no-freeze-backbone",
        help="Train only the head at first (Lightning's BackboneFinetuning).",
    )  # fmt: skip
    unfreeze_at_epoch: int | None = _opt(
        None, RECIPE, "--unfreeze-at-epoch", rule=_AT_LEAST_1,
        help="With --freeze-backbone: unfreeze the backbone at this epoch (0-based; default: never).",
    )  # fmt: skip
    accumulate_grad_batches: int = _opt(
        1, RECIPE, "--accumulate-grad-batches", rule=_AT_LEAST_1,
        help="Optimizer step every N batches (default 1).",
    )  # fmt: skip
    gradient_clip: float | None = _opt(
        None, RECIPE, "--gradient-clip", rule=_POSITIVE, help="Clip the gradient norm to this value."
    )
    options: dict[str, Any] = field(default_factory=dict)  # --set SECTION.KEY=VALUE, by section

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["options"] = {k: data["options"][k] for k in OPTION_SECTIONS if data["options"].get(k)}
        return _redact(data) if redact else data

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def section(self, name: str, component: str | None = None) -> dict[str, Any]:
        """Options for one section (``backbone``, ``data``, ...; ``logger``/``callback`` by name)."""
        opts = self.options.get(name) or {}
        if name not in _NESTED_SECTIONS:
            return dict(opts)
        # "visionkit:wandb" finds options set under that qualified name or under "wandb"
        component = component or ""
        bare = component.partition(":")[2] or component
        return {**(opts.get(bare) or {}), **(opts.get(component) or {})}


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)


def _suggest(word: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint}; valid keys: {', '.join(valid)}"


def redact(obj: Any) -> Any:
    """``obj`` with the values of secret-looking keys replaced by ``<redacted>``, at any depth: the one
    redactor of config dumps, hyperparameters, checkpoints and loggers."""
    if isinstance(obj, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) and v else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


_redact = redact  # RunConfig.to_dict's ``redact`` argument shadows the function there


def _merge_options(base: dict[str, Any], new: Any, source: str) -> dict[str, Any]:
    """``base`` updated from the ``options`` mapping ``new``, whose shape is checked."""
    if not isinstance(new, dict):
        raise ConfigError(f"{source}: options must be a mapping of sections, got {new!r}")
    out = copy.deepcopy(base)
    for section, value in new.items():
        if section not in OPTION_SECTIONS:
            raise ConfigError(
                f"{source}: unknown options section {section!r}" + _suggest(section, OPTION_SECTIONS)
            )
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{source}: options.{section} must be a mapping, got {value!r}")
        target = out.setdefault(section, {})
        for key, val in (value or {}).items():
            if section in _NESTED_SECTIONS and isinstance(val, dict):
                target.setdefault(key, {}).update(copy.deepcopy(val))
            elif section in _NESTED_SECTIONS and val is not None:
                raise ConfigError(f"{source}: options.{section}.{key} must be a mapping, got {val!r}")
            else:
                target[key] = copy.deepcopy(val)
    return out


def apply_mapping(config: RunConfig, data: Mapping[str, Any], source: str) -> RunConfig:
    """Return ``config`` updated from a mapping (a YAML file or flags), validating keys and values."""
    values = dataclasses.asdict(config)
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key == DERIVED_KEY:
            continue  # what a run read from its data (config.yaml records it); never an input
        if key not in values:
            raise ConfigError(f"{source}: unknown key {key!r}" + _suggest(key, values))
        if key == "options":
            values[key] = _merge_options(values[key], value or {}, source)
            continue
        tp = _field_types()[key]
        if isinstance(value, str) and str in typing.get_args(tp):
            values[key] = value  # a string field keeps "none" (--augment none); only YAML null is None
            continue
        from visionkit_core.run.convert import ConversionError, convert

        try:
            values[key] = convert(value, tp)
        except ConversionError as err:
            null = " or null" if type(None) in typing.get_args(tp) else ""
            raise ConfigError(f"{source}: {key} must be {err}{null}, got {value!r}") from None
    return RunConfig(**values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one ``--config`` file; errors name the file and the problem."""
    import yaml

    name = repr(str(Path(path)))
    if not Path(path).is_file():
        raise ConfigError(f"config file {name} not found; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config file {name} is not valid YAML{where}: {getattr(err, 'problem', err)}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {name}: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {name} must hold a mapping of keys, got {type(data).__name__}")
    return data or {}


def apply_sets(config: RunConfig, items: Sequence[str]) -> RunConfig:
    """Apply ``--set KEY=VALUE`` overrides (top-level keys or ``section.option`` paths); each value is
    read as a YAML scalar (``0.1``, ``true``, ``[a, b]``)."""
    import yaml

    for item in items:
        key, sep, raw = item.partition("=")
        path, source = key.strip().split("."), f"--set {item}"
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set backbone.drop_path_rate=0.1")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        head = path[0].replace("-", "_")
        if len(path) == 1 and head in OPTION_SECTIONS:
            raise ConfigError(f"{source}: name an option, e.g. --set {head}.KEY=VALUE")
        if len(path) == 1:
            config = apply_mapping(config, {head: value}, source)
            continue
        if head == "options":
            path, head = path[1:], path[1]
        if head not in OPTION_SECTIONS:
            raise ConfigError(
                f"{source}: unknown section {head!r}"
                + _suggest(head, OPTION_SECTIONS)
                + " (or a plain key such as epochs=5)"
            )
        name = "NAME.OPTION" if head in _NESTED_SECTIONS else "OPTION"
        if len(path) != name.count(".") + 2:
            raise ConfigError(f"{source}: use --set {head}.{name}=VALUE")
        for part in reversed(path[1:]):
            value = {part: value}
        config = apply_mapping(config, {"options": {head: value}}, source)
    return config


def resolve(
    config_files: Sequence[str | Path] = (),
    sets: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    base: RunConfig | None = None,
) -> RunConfig:
    """Build the RunConfig: defaults (or ``base``) < config files < --set < flags (only those given)."""
    config = copy.deepcopy(base) if base is not None else RunConfig()
    for path in config_files:
        config = apply_mapping(config, load_yaml(path), f"config file {str(path)!r}")
    config = apply_sets(config, sets)
    config = apply_mapping(config, {k: v for k, v in (flags or {}).items() if v is not None}, "command line")
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    """Check values that make no sense whatever the plugins (ranges, choices, pairings)."""
    if config.weights and config.init_from:
        raise ConfigError("--weights and --init-from both set backbone weights; give one of them")
    if config.resume and config.init_from:
        raise ConfigError("--resume continues a run; --init-from starts a new one: give one of them")
    if config.ema_decay is not None and not config.ema:
        raise ConfigError("--ema-decay sets the decay of --ema; add --ema")
    if config.unfreeze_at_epoch is not None and not config.freeze_backbone:
        raise ConfigError("--unfreeze-at-epoch unfreezes what --freeze-backbone froze; add --freeze-backbone")
    for f in dataclasses.fields(RunConfig):
        value, flag = getattr(config, f.name), f"--{f.name.replace('_', '-')}"
        rule, choices = f.metadata.get("rule"), f.metadata.get("choices")
        if value is not None and rule is not None and not rule[0](value):
            raise ConfigError(f"{flag} {rule[1]}, got {value}")
        if value is not None and choices and value not in choices:
            raise ConfigError(f"{flag} {value!r} is not one of: {', '.join(choices)}")
    if config.devices != "auto" and not re.fullmatch(r"-?\d+|\d+(,\d+)*,?", config.devices):
        raise ConfigError(f"--devices must be 'auto', a count, or a list like '0,1'; got {config.devices!r}")


def check_options(
    section: str,
    component: str,
    factory: Callable[..., Any],
    options: Mapping[str, Any],
    reserved: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Check ``options`` against ``factory``'s keyword arguments; return them converted to its types
    (written back into ``options`` when it is a dict). ``reserved`` maps arguments visionkit passes
    itself to the flag that sets them; unknown keys are refused with the closest valid one."""
    from visionkit_core.run.convert import ConversionError, convert, option_specs, plain, type_name

    reserved = reserved or {}
    converted = dict(options)
    found = option_specs(factory)
    if found is None:
        return converted
    specs, accepts_any = found
    valid = sorted(n for n in specs if n not in reserved)
    for key, value in options.items():
        where = f"--set {section}.{key}"
        if key in reserved:
            raise ConfigError(
                f"{where}: {key!r} of {section} {component!r} is set by {reserved[key]}, not --set"
            )
        if key not in specs and not accepts_any:
            hint = _suggest(key, valid) if valid else "; it takes no options"
            raise ConfigError(f"{where}: unknown option {key!r} for {section} {component!r}{hint}")
        if key in specs:
            try:
                converted[key] = convert(value, specs[key].target)
            except ConversionError as err:
                takes = f"{section} {component!r} takes {key}: {type_name(specs[key].target)}"
                raise ConfigError(
                    f"{where}={plain(value)}: expected {err}, got {value!r} ({takes})"
                ) from None
    if isinstance(options, dict):
        options.update(converted)
    return converted
