"""ImageClassifier: the classification task trained, normalised, checkpointed with real Lightning runs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset
from visionkit_classification.model import ImageClassifier

from visionkit_core.errors import UsageError
from visionkit_core.kit.optim import lr_factor
from visionkit_core.plugin import manager

NUM_IMAGES, SIZE = 8, 32


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    """ImageClassifier builds its backbone through the process-wide plugin manager."""
    previous = manager._CURRENT
    manager.set_plugins(manager.load_plugins(autoload=False))
    yield
    manager.set_plugins(previous)


def uint8_loader(num_classes: int = 2, batch_size: int = 4, labels: bool = True) -> DataLoader:
    """A tiny real dataloader of uint8 images, as the datamodules deliver them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (NUM_IMAGES, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    targets = torch.arange(NUM_IMAGES) % num_classes
    dataset = TensorDataset(images, targets) if labels else TensorDataset(images)
    return DataLoader(dataset, batch_size=batch_size)


def fast_trainer(tmp_path: Path, **kwargs: object) -> L.Trainer:
    return L.Trainer(
        fast_dev_run=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        **kwargs,  # type: ignore[arg-type]
    )


def save_untrained(model: ImageClassifier, path: Path) -> None:
    """Write a checkpoint of ``model`` without training it (the seed's connect-and-save)."""
    trainer = L.Trainer(default_root_dir=path.parent, max_epochs=0, logger=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)


def test_forward_shape() -> None:
    model = ImageClassifier(backbone="resnet18", num_classes=2)

    assert model(torch.randn(4, 3, SIZE, SIZE)).shape == (4, 2)


def test_fast_dev_run_fit_logs_namespaced_metrics(tmp_path: Path) -> None:
    model = ImageClassifier(num_classes=2)
    trainer = fast_trainer(tmp_path)

    trainer.fit(model, train_dataloaders=uint8_loader(), val_dataloaders=uint8_loader())

    assert trainer.state.finished
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(metrics)
    assert "val/acc_top5" not in metrics  # only with more than 5 classes
    assert torch.isfinite(metrics["train/loss"]) and 0.0 <= float(metrics["val/acc"]) <= 1.0


def test_a_datasets_dict_batches_reach_the_task_as_images_and_truth(tmp_path: Path) -> None:
    # a third-party dataset whose DataSpec says batch="dict": {"image": uint8, "label": int64}
    samples = [{"image": image, "label": label} for image, label in uint8_loader(batch_size=1).dataset]
    model = ImageClassifier(num_classes=2)
    trainer = fast_trainer(tmp_path)

    trainer.fit(model, DataLoader(samples, batch_size=4), DataLoader(samples, batch_size=4))

    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(trainer.callback_metrics)


def test_save_and_load_restores_hparams_and_weights(tmp_path: Path) -> None:
    model = ImageClassifier(num_classes=2, class_names=["cat", "dog"], lr=3e-4, label_smoothing=0.1)
    trainer = fast_trainer(tmp_path)
    trainer.fit(model, train_dataloaders=uint8_loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = ImageClassifier.load_from_checkpoint(path, weights_only=True)

    assert dict(loaded.hparams) == dict(model.hparams)
    assert loaded.class_names == ["cat", "dog"]
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_the_task_declares_its_contract_and_leaves_checkpoint_metadata_to_the_core(tmp_path: Path) -> None:
    from visionkit_core import TaskSpec, VisionTask

    spec = ImageClassifier.visionkit_task
    assert isinstance(spec, TaskSpec)
    assert (spec.monitor, spec.mode, spec.default_data, spec.default_backbone) == (
        "val/acc",
        "max",
        "digits",
        "resnet18",
    )
    model = ImageClassifier(num_classes=2, class_names=["cat", "dog"])
    assert isinstance(model, VisionTask)
    path = tmp_path / "model.ckpt"
    save_untrained(model, path)
    assert "visionkit" not in torch.load(path, map_location="cpu", weights_only=True)


def test_loading_a_pretrained_checkpoint_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ImageClassifier(num_classes=2)
    model.hparams.pretrained = True  # as if trained from pretrained weights
    path = tmp_path / "model.ckpt"
    save_untrained(model, path)
    with socket.socket() as sock:  # a proxy that refuses: any download attempt would fail
        sock.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setenv("https_proxy", proxy)

    loaded = ImageClassifier.load_from_checkpoint(path, weights_only=True)

    assert loaded.hparams.pretrained is False
    assert torch.equal(loaded.model.fc.weight, model.model.fc.weight)


def test_on_after_batch_transfer_normalises_uint8_images() -> None:
    model = ImageClassifier(num_classes=2, preprocessing={"mean": [0.5, 0.25, 0.0], "std": [0.25, 0.5, 1.0]})
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 3, 2, 3).contiguous()
    labels = torch.tensor([1, 0])

    out_images, out_labels = model.on_after_batch_transfer((images, labels), 0)

    expected = torch.tensor(
        [
            [-2.0, -1.2, 2.0],  # (x/255 - 0.5) / 0.25 for x = 0, 51, 255
            [-0.5, -0.1, 1.5],  # (x/255 - 0.25) / 0.5
            [0.0, 0.2, 1.0],  # (x/255 - 0.0) / 1.0
        ]
    )
    assert out_images.dtype == torch.float32
    assert torch.allclose(out_images[0, :, 0, :], expected, atol=1e-6)
    assert torch.equal(out_labels, labels)


def test_denormalize_inverts_normalize() -> None:
    model = ImageClassifier(num_classes=2)
    floats = torch.rand(2, 3, 8, 8)
    uint8 = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)

    assert torch.allclose(model.denormalize(model.normalize(floats)), floats, atol=1e-6)
    assert torch.allclose(model.denormalize(model.normalize(uint8)), uint8.float() / 255, atol=1e-6)


def test_preprocessing_comes_from_the_backbone_unless_given() -> None:
    timm_model = ImageClassifier(backbone="timm:resnet10t", num_classes=2)
    given = ImageClassifier(num_classes=2, preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3})

    assert timm_model.preprocessing["interpolation"] == "bicubic"
    assert timm_model.preprocessing["mean"] == [0.485, 0.456, 0.406]
    assert given.preprocessing["mean"] == [0.5, 0.5, 0.5]
    assert torch.equal(given.norm_std.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    assert "norm_mean" not in given.state_dict()  # non-persistent: rebuilt from hparams


def test_timm_backbone_trains_through_the_classifier(tmp_path: Path) -> None:
    model = ImageClassifier(
        backbone="timm:resnet10t", num_classes=2, backbone_options={"drop_path_rate": 0.1}
    )
    before = model.model.fc.weight.detach().clone()
    trainer = fast_trainer(tmp_path)

    trainer.fit(model, train_dataloaders=uint8_loader())

    assert trainer.state.finished
    assert not torch.equal(model.model.fc.weight, before)


def test_top5_accuracy_is_logged_with_more_than_five_classes(tmp_path: Path) -> None:
    model = ImageClassifier(num_classes=6)
    trainer = fast_trainer(tmp_path)

    trainer.validate(model, dataloaders=uint8_loader(num_classes=6))

    assert 0.0 <= float(trainer.callback_metrics["val/acc_top5"]) <= 1.0
    assert float(trainer.callback_metrics["val/acc_top5"]) >= float(trainer.callback_metrics["val/acc"])


def test_test_phase_logs_namespaced_metrics(tmp_path: Path) -> None:
    trainer = fast_trainer(tmp_path)

    (results,) = trainer.test(ImageClassifier(num_classes=2), dataloaders=uint8_loader())

    assert set(results) == {"test/loss", "test/acc", "test/recall/0", "test/recall/1"}  # recall per class


def test_predict_returns_probabilities(tmp_path: Path) -> None:
    trainer = fast_trainer(tmp_path)

    batches = trainer.predict(ImageClassifier(num_classes=2), dataloaders=uint8_loader(labels=False))

    (samples,) = batches  # type: ignore[misc]  # fast_dev_run: one batch, one Sample per input
    assert len(samples) == 4 and all(set(s) == {"label", "probs"} for s in samples)
    probs = torch.stack([s["probs"] for s in samples])
    assert probs.shape == (4, 2) and torch.allclose(probs.sum(dim=1), torch.ones(4))
    assert bool((probs >= 0).all()) and [int(s["label"]) for s in samples] == probs.argmax(1).tolist()


def test_sample_batches_and_the_deprecated_label_tensors_train_alike(tmp_path: Path) -> None:
    """``(images, {"label": labels})`` batches (the contract's Sample) and bare ``(images, labels)``
    (hookspec 1.1) give the same loss and the same media captions."""
    images, labels = next(iter(uint8_loader()))
    model = ImageClassifier(num_classes=2, class_names=["a", "b"])
    model.eval()
    sample_batch = model.on_after_batch_transfer((images, {"label": labels}), 0)
    tuple_batch = model.on_after_batch_transfer((images, labels), 0)
    with torch.no_grad():
        losses = [model.training_step(b, 0) for b in (sample_batch, tuple_batch)]
        captions = [[m.caption for m in model.media_samples(b, 2)] for b in (sample_batch, tuple_batch)]
    assert torch.equal(losses[0], losses[1]) and captions[0] == captions[1]
    assert captions[0][0].startswith("pred: ") and captions[0][0].endswith(" / true: a")
    model.validation_step(sample_batch, 0)
    shown, truth, pred = model.last_eval_output
    assert shown is sample_batch[0] and torch.equal(truth["label"], labels)
    assert set(pred) == {"label", "probs"} and pred["probs"].shape == (4, 2)


def test_optimizer_skips_decay_on_biases_and_norms_and_steps_the_schedule(tmp_path: Path) -> None:
    model = ImageClassifier(num_classes=2, weight_decay=0.05)
    trainer = fast_trainer(tmp_path)
    trainer.fit(model, train_dataloaders=uint8_loader())

    decay, no_decay = trainer.optimizers[0].param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.model.fc.bias) in no_decay_ids and id(model.model.bn1.weight) in no_decay_ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_learning_rate_warms_up_then_decays_on_a_cosine() -> None:
    factors = [lr_factor(step, total=100, warmup=10) for step in range(101)]

    assert factors[0] == pytest.approx(1 / 11)
    assert factors[:10] == sorted(factors[:10])  # linear warmup
    assert factors[10] == pytest.approx(1.0)
    assert factors[10:] == sorted(factors[10:], reverse=True)
    assert factors[100] == pytest.approx(0.01)
    assert lr_factor(5, total=None, warmup=0) == 1.0  # unknown length: constant after warmup


def test_weights_file_is_loaded_into_the_backbone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    donor = ImageClassifier(num_classes=2)
    path = tmp_path / "backbone.safetensors"
    save_file(donor.model.state_dict(), str(path))

    model = ImageClassifier(num_classes=2, weights=str(path))

    assert torch.equal(model.model.conv1.weight, donor.model.conv1.weight)
    assert torch.equal(model.model.fc.weight, donor.model.fc.weight)
    assert f"loaded 122/122 tensors from {path}" in capsys.readouterr().err


def test_class_names_must_match_the_class_count() -> None:
    with pytest.raises(UsageError, match="3 class names for num_classes=2"):
        ImageClassifier(num_classes=2, class_names=["a", "b", "c"])


def test_classification_task_is_registered() -> None:
    comp = manager.get_plugins().registry.resolve("task", "classification")

    assert comp.factory == "visionkit_classification.model:ImageClassifier"
    assert comp.load() is ImageClassifier
