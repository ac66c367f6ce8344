"""Recipe flags: the issue's full run on a CSV manifest, EMA weights in checkpoints, freezing, refusals,
and skipped files named by visionkit with PYTHONWARNINGS=ignore."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import cli_server
import pytest
import torch
import yaml
from conftest import make_image_tree
from recipe_data import write_label_manifest
from visionkit_callbacks.recipe import ema_avg_fn, ema_callback, finetuning_callback
from visionkit_classification.model import ImageClassifier
from visionkit_classification.recipe import BatchMix, backbone_modules, balanced_weights

from visionkit_core import ConfigError, UsageError, hookimpl
from visionkit_core.plugin.manager import get_plugins, load_plugins, use_plugins
from visionkit_core.run.assemble import validate_components
from visionkit_core.run.config import resolve
from visionkit_core.workflows.predict import predict

RECIPE = [
    "--augment", "randaugment", "--mixup", "0.2", "--cutmix", "1.0", "--label-smoothing", "0.1",
    "--ema", "--class-weights", "balanced", "--sampler", "balanced",
]  # fmt: skip
SMALL = ["--epochs", "2", "--image-size", "16", "--batch-size", "4", "--backbone", "timm:test_resnet"]


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return cli_server.visionkit(*args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The issue's run: --data FILE.csv with every recipe flag (imbalanced classes: cat 10, dog 4, fox 6)."""
    tmp = tmp_path_factory.mktemp("recipe")
    csv = write_label_manifest(tmp / "data", {"cat": 10, "dog": 4, "fox": 6})
    out = _cli(["train", "--data", str(csv), *RECIPE, *SMALL, "--run-dir", "run"], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"tmp": tmp, "csv": csv, "run": tmp / "run", "out": out}


def test_the_full_recipe_trains_on_a_manifest_and_records_every_option(done_run: dict[str, Any]) -> None:
    config = yaml.safe_load((done_run["run"] / "config.yaml").read_text())
    expected = {
        "augment": "randaugment",
        "mixup": 0.2,
        "cutmix": 1.0,
        "label_smoothing": 0.1,
        "ema": True,
        "class_weights": "balanced",
        "sampler": "balanced",
        "data": str(done_run["csv"]),
    }
    assert {k: config[k] for k in expected} == expected
    ckpt = torch.load(done_run["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert {k: ckpt["visionkit"]["config"][k] for k in expected} == expected
    hp = ckpt["hyper_parameters"]
    recipe = (hp["mixup"], hp["cutmix"], hp["label_smoothing"], hp["class_weights"])
    assert recipe == (0.2, 1.0, 0.1, "balanced")
    assert ckpt["datamodule_hyper_parameters"]["augment"] == "randaugment"
    assert ckpt["datamodule_hyper_parameters"]["sampler"] == "balanced"


def test_class_counts_are_reported_at_the_start_and_recall_per_class_in_the_summary(
    done_run: dict[str, Any],
) -> None:
    assert "training images per class: cat 8, dog 3, fox 5 (largest/smallest 2.7x)" in done_run["out"].stderr
    metrics = json.loads((done_run["run"] / "summary.json").read_text())["metrics"]
    assert {"val/recall/cat", "val/recall/dog", "val/recall/fox"} <= set(metrics)
    assert "val/recall" not in done_run["out"].stdout  # the Final line stays one line of totals


def test_validate_runs_on_the_checkpoint_of_the_full_recipe(done_run: dict[str, Any]) -> None:
    out = _cli(["validate", "--ckpt", str(done_run["run"] / "checkpoints" / "last.ckpt")], done_run["tmp"])
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((done_run["run"] / "validate.json").read_text())
    assert 0.0 <= doc["metrics"]["val/acc"] <= 1.0 and doc["task"] == "classification"


def test_predict_of_an_ema_run_uses_the_averaged_weights(done_run: dict[str, Any], tmp_path: Path) -> None:
    ckpt_path = done_run["run"] / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    image = done_run["csv"].parent / "files" / "dog_0.jpg"
    with use_plugins(get_plugins()):
        predict(ckpt_path, [image], tmp_path / "p.json", {"topk": 3}, accelerator="cpu")
        hp = {k: v for k, v in ckpt["hyper_parameters"].items() if k not in ("pretrained", "weights")}
        model = ImageClassifier(**hp, pretrained=False).eval()
    from visionkit_imagefolder.dataset import PredictFiles

    sample = PredictFiles([image], 16, ckpt["visionkit"]["preprocessing"]["crop_pct"])[0]
    x = model.normalize(sample["image"][None])
    probs = {}
    for key in ("state_dict", "current_model_state"):
        model.load_state_dict(ckpt[key])
        with torch.no_grad():
            probs[key] = torch.softmax(model(x), dim=1)[0]
    assert not torch.allclose(probs["state_dict"], probs["current_model_state"], atol=1e-4)
    top = {name: p for name, p in json.loads((tmp_path / "p.json").read_text())[0]["top"]}
    assert [top[c] for c in model.class_names] == pytest.approx(probs["state_dict"].tolist(), abs=1e-5)


def test_the_checkpoint_holds_the_ema_callbacks_averaged_model(tmp_path: Path) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from visionkit_imagefolder.datamodule import ImageFolderDataModule

    root = make_image_tree(tmp_path / "data", ["a", "b"], per_class=6, size=16)
    dm = ImageFolderDataModule(root, batch_size=4, image_size=16, num_workers=0)
    with use_plugins(get_plugins()):
        model = ImageClassifier(backbone="timm:test_resnet", num_classes=2, lr=0.01)
    ema = ema_callback(0.8)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", callbacks=[ema, saver], logger=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=dm)
    averaged = ema._average_model.module.eval()
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    with use_plugins(get_plugins()):
        loaded = ImageClassifier.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt").eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), averaged(x), atol=1e-6)
    assert all(torch.equal(v, averaged.state_dict()[k]) for k, v in state.items() if v.is_floating_point())
    assert ema._average_model.n_averaged.item() == trainer.global_step


def test_ema_decay_warms_up_from_the_first_updates() -> None:
    avg = ema_avg_fn(0.999)
    a, b = torch.tensor([0.0]), torch.tensor([1.0])
    assert avg(a, b, torch.tensor(1)).item() == pytest.approx(1 - 2 / 11)  # decay (1 + 1) / (10 + 1)
    assert avg(a, b, torch.tensor(10**6)).item() == pytest.approx(0.001)  # capped at --ema-decay


def test_freeze_backbone_freezes_everything_but_the_head() -> None:
    with use_plugins(get_plugins()):
        model = ImageClassifier(backbone="timm:test_resnet", num_classes=3)
    head = {id(p) for p in model.model.get_classifier().parameters()}
    frozen = {id(p) for p in backbone_modules(model.model, 3).parameters()}
    assert head and not (head & frozen) and head | frozen == {id(p) for p in model.model.parameters()}
    finetuning_callback(2).freeze_before_training(model)
    norms = {
        id(p) for m in model.model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
    }
    # Lightning's default train_bn: BatchNorm layers keep training while the rest of the backbone is frozen
    assert all(p.requires_grad == (id(p) in head | norms) for p in model.model.parameters())


def test_mixup_and_cutmix_give_soft_targets_for_classes_and_label_sets() -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 16)
    mixed, soft = BatchMix(4, mixup=0.2, cutmix=1.0)(images, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    assert mixed.shape == images.shape and soft.shape == (8, 4)
    assert torch.allclose(soft.sum(dim=1), torch.ones(8))
    hot = (torch.rand(8, 4) > 0.5).float()
    _, mixed_sets = BatchMix(4, mixup=0.4)(images, hot)
    assert mixed_sets.min() >= 0 and mixed_sets.max() <= 1 and mixed_sets.shape == (8, 4)


def test_balanced_class_weights_follow_the_counts() -> None:
    assert balanced_weights([30, 10]).tolist() == pytest.approx([40 / 60, 40 / 20])
    assert balanced_weights([5, 20], multilabel=True, total=25).tolist() == pytest.approx([4.0, 0.25])


class _PlainData:
    """A third-party dataset whose factory takes no recipe options."""

    @staticmethod
    def factory(root: str | None = None, batch_size: int = 8) -> Any:
        raise AssertionError("never built: the flags are refused first")

    @hookimpl
    def visionkit_register_datasets(self, registry: Any) -> None:
        registry.add("plaindata", _PlainData.factory)


def _validate(flags: dict[str, Any], sets: tuple[str, ...] = ()) -> None:
    plugins = load_plugins(autoload=False, extra=[("plain", _PlainData())])
    with use_plugins(plugins):
        validate_components(resolve(sets=sets, flags=flags), plugins)


def test_a_recipe_flag_the_dataset_does_not_take_is_refused_never_ignored() -> None:
    with pytest.raises(UsageError, match=r"--augment: data 'plain:plaindata' .* does not take 'augment'"):
        _validate({"data": "plaindata", "augment": "randaugment"})
    with pytest.raises(UsageError, match=r"--sampler: data 'litdata:x' .* does not take 'sampler'"):
        _validate({"data": "litdata:x", "sampler": "balanced"})


def test_a_recipe_flag_the_task_does_not_take_is_refused() -> None:
    with pytest.raises(UsageError, match=r"--mixup: task 'visionkit:segmentation' .* does not take 'mixup'"):
        _validate({"task": "segmentation", "mixup": 0.2})


def test_a_flag_and_a_set_for_the_same_option_are_refused() -> None:
    with pytest.raises(UsageError, match=r"--label-smoothing and --set task\.label_smoothing both set"):
        _validate({"label_smoothing": 0.1}, ("task.label_smoothing=0.2",))
    with pytest.raises(UsageError, match=r"--gradient-clip and --set trainer\.gradient_clip_val both set"):
        _validate({"gradient_clip": 1.0}, ("trainer.gradient_clip_val=2",))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"ema_decay": 0.9}, "--ema-decay sets the decay of --ema; add --ema"),
        ({"unfreeze_at_epoch": 2}, "add --freeze-backbone"),
        ({"label_smoothing": 1.0}, "--label-smoothing must be in"),
        ({"augment": "strong"}, "--augment 'strong' is not one of"),
        ({"accumulate_grad_batches": 0}, "--accumulate-grad-batches must be at least 1"),
    ],
)
def test_recipe_values_are_validated(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(flags=flags)


def test_skipped_files_are_named_by_visionkit_with_warnings_ignored(tmp_path: Path) -> None:
    """A messy tree, PYTHONWARNINGS=ignore; also --freeze-backbone, accumulation and clipping end to end."""
    from bad_images import write_truncated_jpeg

    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=6, size=24)
    write_truncated_jpeg(root / "train" / "cat" / "cut.jpg", root / "train" / "cat" / "cat_0.jpg")
    (root / "train" / "dog" / "empty.jpg").write_bytes(b"")
    (root / "train" / "dog" / "notes.png").write_text("not an image")
    (root / "val" / "cat" / "zero.jpg").write_bytes(b"")
    flags = ["--freeze-backbone", "--unfreeze-at-epoch", "1", "--accumulate-grad-batches", "2"]
    args = ["train", "--data", str(root), *SMALL, *flags, "--gradient-clip", "0.5", "--run-dir", "run"]
    out = _cli(args, tmp_path, PYTHONWARNINGS="ignore")
    assert out.returncode == 0, out.stderr[-3000:]
    bad = ["train/cat/cut.jpg", "train/dog/empty.jpg", "train/dog/notes.png", "val/cat/zero.jpg"]
    for rel in bad:
        line = f"visionkit: skipped {root / rel}: unreadable image (skipped)"
        assert line in out.stderr, out.stderr[-3000:]
        assert f"  {root / rel}" in out.stdout  # the end-of-run list
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 4 and summary["skipped_files"] == sorted(str(root / r) for r in bad)
    assert summary["global_step"] == 2 * 2  # 15 readable train images, batch 4 (3 full), steps of 2 batches
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (config["freeze_backbone"], config["unfreeze_at_epoch"], config["gradient_clip"]) == (True, 1, 0.5)
