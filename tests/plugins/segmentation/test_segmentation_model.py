"""The Segmenter task: networks, loss and metrics, plots, predict at original size, export, weights."""

from __future__ import annotations

import csv
import math
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from seg_trees import CLASSES, make_masks_tree, scene
from torch.utils.data import DataLoader
from visionkit_segmentation.datamodule import SegmentationDataModule
from visionkit_segmentation.model import Segmenter
from visionkit_segmentation.networks import encoder_for
from visionkit_segmentation.outputs import iou_from_confusion

from visionkit_core import ConfigError, Prediction, UsageError


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_masks_tree(tmp_path_factory.mktemp("seg") / "tree")


def small_model(**kwargs) -> Segmenter:
    return Segmenter(**{"num_classes": 3, "class_names": CLASSES, **kwargs})


# -- metrics and loss -----------------------------------------------------------------------


def test_miou_leaves_out_classes_absent_from_truth_and_prediction():
    # rows: truth, columns: prediction; class 2 never occurs, class 1 is half right
    matrix = np.array([[8, 0, 0], [2, 2, 0], [0, 0, 0]])
    iou, miou, acc = iou_from_confusion(matrix)
    assert iou[0] == pytest.approx(8 / 10) and iou[1] == pytest.approx(2 / 4) and math.isnan(iou[2])
    assert miou == pytest.approx((0.8 + 0.5) / 2) and acc == pytest.approx(10 / 12)
    assert iou_from_confusion(np.zeros((3, 3)))[1:] == (0.0, 0.0)


def test_the_loss_ignores_255_and_is_zero_not_nan_when_everything_is_ignored():
    model = small_model()
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    masks = torch.randint(0, 3, (2, 8, 8))
    ignored = masks.clone()
    ignored[:, :4] = 255
    expected = torch.nn.functional.cross_entropy(logits[:, :, 4:], masks[:, 4:])
    assert model.loss(logits, ignored).item() == pytest.approx(expected.item(), rel=1e-5)
    all_ignored = model.loss(logits, torch.full_like(masks, 255))
    assert all_ignored.item() == 0.0
    all_ignored.backward()
    with_dice = small_model(dice=1.0).loss(logits, masks)
    assert with_dice.item() > model.loss(logits, masks).item()


def test_a_fit_logs_miou_pixel_accuracy_and_iou_per_class_and_writes_the_plots(tmp_path, tree):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = small_model()
    run_dir = tmp_path / "run"
    tb = TensorBoardLogger(str(run_dir), name="", version="tb")
    t = trainer(run_dir, logger=tb, callbacks=model.evaluation_callbacks(run_dir))
    t.fit(model, datamodule=SegmentationDataModule(str(tree), batch_size=4, image_size=32))
    metrics = t.callback_metrics
    for key in ("val/miou", "val/pixel_acc", "val/loss", "train/loss", "val/iou/background"):
        assert key in metrics, key
    assert 0.0 <= float(metrics["val/miou"]) <= 1.0
    plots = run_dir / "plots"
    for name in ("segmentation_samples.png", "per_class_iou.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((plots / "per_class_iou.csv").open()))
    assert [r["class"] for r in rows] == CLASSES
    assert float(rows[0]["iou"]) == pytest.approx(float(metrics["val/iou/background"]), abs=1e-5)
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"plots/segmentation_samples", "plots/per_class_iou"} <= set(events.Tags()["images"])


def test_a_datasets_dict_batches_reach_the_task_as_images_and_truth(tmp_path):
    # a third-party dataset whose DataSpec says batch="dict": {"image": uint8, "mask": int64}
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen)
    masks = torch.randint(0, 3, (8, 32, 32), generator=gen)
    samples = [{"image": images[i], "mask": masks[i]} for i in range(8)]
    model = small_model()
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1, callbacks=model.evaluation_callbacks(tmp_path))
    t.fit(model, DataLoader(samples, batch_size=4), DataLoader(samples, batch_size=4))
    assert {"train/loss", "val/miou", "val/loss"} <= set(t.callback_metrics)
    assert (tmp_path / "plots" / "segmentation_samples.png").is_file()  # drawn from (images, truth, pred)
    predicted = t.predict(model, DataLoader([{"image": images[0], "ok": True}], batch_size=1))
    assert predicted[0][0]["mask"].shape == (32, 32)  # predict batches stay dicts


# -- networks -----------------------------------------------------------------------------------


def test_sizes_off_the_stride_are_padded_and_cropped_back():
    model = small_model().eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 50, 70)).shape == (2, 3, 50, 70)


def test_the_default_network_records_its_decoder_widths_and_old_checkpoints_keep_theirs(tmp_path):
    model = small_model()
    assert model.hparams.backbone == "timm:mobilenetv4_conv_small"
    assert model.hparams.decoder_channels == [64, 32, 16, 8]  # recorded: a new default keeps them
    # a visionkit 0.2 checkpoint: resnet18 at depth 4 under smp's widths, none recorded
    old = small_model(backbone="resnet18", decoder_channels=[128, 64, 32, 16]).eval()
    hparams = {**old.hparams, "decoder_channels": None}
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": old.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    reloaded = Segmenter.load_from_checkpoint(path).eval()
    assert reloaded.hparams.decoder_channels == [128, 64, 32, 16]
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(image), old(image))


@pytest.mark.parametrize(
    ("arch", "backbone"),
    [("fpn", "resnet18"), ("deeplabv3plus", "timm:resnet18"), ("tv:lraspp_mobilenet_v3_large", "resnet18")],
)
def test_other_architectures_build_and_give_full_size_logits(arch, backbone):
    model = small_model(arch=arch, backbone=backbone).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 40, 48)).shape == (1, 3, 40, 48)


def test_backbone_names_map_to_smp_encoders():
    assert encoder_for("timm:convnext_tiny") == "tu-convnext_tiny"
    assert encoder_for("resnet34") == encoder_for("torchvision:resnet34") == "resnet34"
    assert encoder_for("smp:mobilenet_v2") == "mobilenet_v2"
    with pytest.raises(UsageError, match="timm:<model>"):
        encoder_for("torchvision:vit_b_16")


def test_unknown_architectures_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="unet"):
        small_model(arch="unett")
    with pytest.raises(ConfigError, match="drop_path_rate"):
        small_model(backbone_options={"global_pool": "avg"}, backbone="timm:resnet18")
    assert small_model(backbone="timm:resnet18", backbone_options={"drop_path_rate": 0.1}) is not None


# -- pretrained and local weights -------------------------------------------------------------------


def fake_hf_cache(root: Path, repo_id: str, tensors: dict[str, torch.Tensor]) -> None:
    """A Hugging Face cache holding ``repo_id``'s model.safetensors, as `hf download` leaves it."""
    from safetensors.torch import save_file

    repo = root / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap.name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(snap / "model.safetensors"))


@pytest.mark.parametrize(("backbone", "source"), [("timm:resnet18", "timm"), ("resnet18", "smp-hub")])
def test_pretrained_offline_fails_fast_naming_the_fix(tmp_path, monkeypatch, backbone, source):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(UsageError) as err:
        small_model(backbone=backbone, pretrained=True)
    assert time.monotonic() - start < 15
    assert "--no-pretrained" in str(err.value) and "--weights FILE" in str(err.value)
    assert source in str(err.value)


def test_pretrained_timm_encoder_loads_from_the_cache_and_checkpoints_never_reload(tmp_path, monkeypatch):
    import timm

    weights = timm.create_model("resnet18").state_dict()
    weights["conv1.weight"] = torch.full_like(weights["conv1.weight"], 0.125)
    cache = tmp_path / "hub"
    fake_hf_cache(cache, "timm/resnet18.a1_in1k", weights)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = small_model(backbone="timm:resnet18", pretrained=True)
    assert torch.equal(model.model.net.encoder.model.conv1.weight, weights["conv1.weight"])

    t = trainer(tmp_path, max_epochs=0)
    t.strategy.connect(model)
    t.save_checkpoint(tmp_path / "m.ckpt")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "gone"))  # nothing to load from any more
    again = Segmenter.load_from_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(again.model.net.encoder.model.conv1.weight, weights["conv1.weight"])


@pytest.mark.parametrize("backbone", ["timm:resnet18", "resnet18"])
def test_weights_file_loads_a_classifier_state_dict_into_the_encoder(tmp_path, backbone):
    import torchvision

    if backbone.startswith("timm:"):
        import timm

        state = timm.create_model("resnet18").state_dict()
    else:
        state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"], -0.5)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    model = small_model(backbone=backbone, weights=str(path))
    encoder = model.model.net.encoder
    encoder = getattr(encoder, "model", encoder)
    assert torch.equal(encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


# -- predict ------------------------------------------------------------------------------------------


def test_predict_writes_class_index_masks_at_the_original_size(tmp_path):
    files = []
    for i, (h, w) in enumerate([(45, 70), (64, 30)]):
        image, _ = scene(i, size=w, height=h)
        files.append(tmp_path / f"in_{i}.png")
        Image.fromarray(image).save(files[-1])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    files.append(tmp_path / "broken.jpg")
    dataset = SegmentationDataModule.predict_dataset(files, {"image_size": 32, "mean": [0.5] * 3})
    assert dataset[0]["image"].shape == (3, 32, 32) and dataset[0]["size"] == (45, 70)
    assert dataset[2]["ok"] is False
    model = small_model().eval()
    loader = DataLoader(dataset, batch_size=3, collate_fn=dataset.collate_fn)
    [batch] = trainer(tmp_path).predict(model, loader)
    assert batch[0]["mask"].shape == (45, 70) and batch[1]["mask"].shape == (64, 30) and batch[2] is None
    assert set(batch[0]) == {"mask"} and batch[0]["mask"].dtype == torch.uint8
    predictions = [
        Prediction(str(f), v, None if v is None else tuple(v["mask"].shape))
        for f, v in zip(files, batch, strict=True)
    ]
    out = tmp_path / "masks"
    lines = model.write_predictions(predictions[:2], out, {"overlay": True})
    assert len(lines) == 2 and "in_0.png" in lines[0]
    with Image.open(out / "in_0.png") as im:
        assert im.mode == "L" and im.size == (70, 45)
        assert np.array_equal(np.asarray(im), batch[0]["mask"].numpy())
    with Image.open(out / "in_1_overlay.png") as im:
        assert im.mode == "RGB" and im.size == (30, 64)
    assert sorted(p.name for p in out.iterdir()) == [
        "in_0.png",
        "in_0_overlay.png",
        "in_1.png",
        "in_1_overlay.png",
    ]
    summary = model.write_predictions(predictions[:1], None, {})
    assert summary[0].startswith(f"{files[0]}: 70x45 ") and "%" in summary[0]
    assert not (tmp_path / "none").exists()


def test_media_samples_hold_the_image_and_both_masks(tree):
    dm = SegmentationDataModule(str(tree), batch_size=4, image_size=32)
    dm.setup("fit")
    model = small_model().eval()
    batch = model.on_after_batch_transfer(dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0), 0)
    samples = model.media_samples(batch, limit=3)
    assert len(samples) == 3
    s = samples[0]
    assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
    assert s.true_mask.shape == s.pred_mask.shape == (32, 32)
    assert np.array_equal(s.true_mask, batch[1]["mask"][0].numpy())
    assert s.caption.startswith("pixel acc ")


# -- export ---------------------------------------------------------------------------------------------


def test_the_export_spec_runs_in_onnxruntime_at_another_batch_and_image_size(tmp_path):
    import onnxruntime as ort

    model = small_model().eval()
    spec = model.export_spec(32)
    assert spec.check_input.shape[0] != spec.example_input.shape[0]
    assert spec.check_input.shape[2:] != spec.example_input.shape[2:]
    names = {axis: torch.export.Dim(name) for axis, name in spec.dynamic_axes["images"].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            spec.module,
            (spec.example_input,),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamo=True,
            dynamic_shapes=(names,),
            external_data=False,
        )
    program.save(str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": spec.check_input.numpy()})[0]
    with torch.no_grad():
        expected = spec.module(spec.check_input).numpy()
    assert got.shape == (3, 3, *spec.check_input.shape[2:])
    assert np.abs(got - expected).max() <= spec.tolerance
    assert spec.sidecar["class_names"] == CLASSES and spec.sidecar["output"]["shape"][1] == 3


def test_the_export_module_scripts_for_torchscript_at_any_size():
    spec = small_model().eval().export_spec(32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(spec.module)
    with torch.no_grad():
        assert torch.allclose(scripted(spec.check_input), spec.module(spec.check_input), atol=1e-5)
