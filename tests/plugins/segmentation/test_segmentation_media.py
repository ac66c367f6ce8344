"""wandb-images over the task contract: segmentation masks to wandb (offline, real files) and TensorBoard."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from conftest import offline_wandb_env
from lightning.pytorch.loggers import TensorBoardLogger
from seg_trees import CLASSES, make_masks_tree
from visionkit_wandb_images.callback import WandbImagesCallback
from visionkit_wandb_images.render import media_grid, wandb_media

from visionkit_core import MediaSample


def fit(run_dir: Path, tree: Path, loggers) -> L.Trainer:
    from visionkit_segmentation.datamodule import SegmentationDataModule
    from visionkit_segmentation.model import Segmenter

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=loggers,
        callbacks=[WandbImagesCallback(num_samples=3, run_dir=run_dir)],
        default_root_dir=run_dir,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    dm = SegmentationDataModule(str(tree), batch_size=4, image_size=32)
    trainer.fit(Segmenter(num_classes=3, class_names=CLASSES), datamodule=dm)
    return trainer


def test_segmentation_samples_become_a_grid_png_and_tensorboard_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tree = make_masks_tree(tmp_path / "tree")
    run_dir = tmp_path / "run"
    trainer = fit(run_dir, tree, [TensorBoardLogger(str(run_dir), name="", version="tb")])
    assert (run_dir / "plots" / "val_predictions.png").read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("val/predictions")] == [trainer.global_step]


def test_the_samples_picked_from_a_batch_keep_their_own_masks(tmp_path):
    from visionkit_segmentation.datamodule import SegmentationDataModule
    from visionkit_segmentation.model import Segmenter

    dm = SegmentationDataModule(str(make_masks_tree(tmp_path / "tree")), batch_size=4, image_size=32)
    dm.setup("fit")
    model = Segmenter(num_classes=3, class_names=CLASSES).eval()
    batch = model.on_after_batch_transfer(dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0), 0)
    samples = WandbImagesCallback(num_samples=3)._media(model, batch, 3)  # images 0, 2 and 3 of 4
    assert samples is not None and len(samples) == 3
    for s in samples:  # the red channel encodes the class: each image shown with its own truth
        assert np.mean(np.round(s.image[..., 0] / 60.0) == s.true_mask) > 0.9


def test_wandb_arguments_carry_masks_with_class_labels_boxes_and_captions():
    image = np.zeros((8, 8, 3), np.uint8)
    seg = MediaSample(
        image, "pixel acc 0.50", true_mask=np.eye(8, dtype=np.uint8), pred_mask=np.zeros((8, 8))
    )
    det = MediaSample(image, "2 boxes", true_boxes=[[1, 1, 4, 4]], true_labels=[1], pred_boxes=[[0, 0, 3, 3]],
                      pred_labels=[2], pred_scores=[0.9])  # fmt: skip
    kwargs = wandb_media([seg], CLASSES)
    assert kwargs["caption"] == ["pixel acc 0.50"]
    masks = kwargs["masks"][0]
    assert set(masks) == {"ground_truth", "prediction"}
    assert masks["ground_truth"]["class_labels"] == {0: "background", 1: "disc", 2: "bar"}
    assert np.array_equal(masks["ground_truth"]["mask_data"], np.eye(8, dtype=np.uint8))
    boxes = wandb_media([det], CLASSES)["boxes"][0]
    [pred] = boxes["predictions"]["box_data"]
    assert pred["position"] == {"minX": 0.0, "minY": 0.0, "maxX": 3.0, "maxY": 3.0}
    assert pred["class_id"] == 2 and pred["scores"] == {"score": 0.9} and pred["box_caption"] == "bar"
    assert "masks" not in wandb_media([MediaSample(image, "pred: a / true: a")], CLASSES)
    # image | truth | prediction for masks; one panel for the boxes sample
    fig = media_grid([seg, det], CLASSES)
    assert len([ax for ax in fig.axes if ax.images]) == 4


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """A real segmentation fit with wandb offline, in a fresh process (wandb keeps global state)."""
    tmp = tmp_path_factory.mktemp("wandb-seg")
    tree = make_masks_tree(tmp / "tree")
    run_dir = tmp / "run"
    here = Path(__file__).resolve().parent
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path[:0] = [{str(here)!r}, {str(here.parents[1])!r}]
        from lightning.pytorch.loggers import WandbLogger
        from test_segmentation_media import fit
        run_dir = Path({str(run_dir)!r})
        logger = WandbLogger(save_dir=str(run_dir), offline=True, project="seg")
        fit(run_dir, Path({str(tree)!r}), [logger])
        logger.experiment.finish()
        """
    )
    env = offline_wandb_env(tmp)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = (run_dir / "wandb").glob("offline-run-*")
    return run


def test_wandb_offline_run_holds_the_images_and_their_truth_and_prediction_masks(offline_run):
    media = offline_run / "files" / "media"
    images = list((media / "images" / "val").glob("predictions_*.png"))  # the key "val/predictions"
    masks = list((media / "images" / "mask" / "val").glob("predictions_*.mask.png"))
    assert len(images) == 3
    assert len(masks) == 6  # ground_truth and prediction for each image


def test_a_module_with_caption_only_media_samples_gets_a_captioned_grid(tmp_path):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Captioned(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3 * 8 * 8, 2)
            self.seen: list[int] = []

        def forward(self, x):
            return self.net(x.float().flatten(1))

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def media_samples(self, batch, limit):
            self.seen.append(len(batch[0]))
            pixels = batch[0][:limit].permute(0, 2, 3, 1).numpy()
            return [MediaSample(img, f"true: {int(t)}") for img, t in zip(pixels, batch[1], strict=False)]

    data = TensorDataset(torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 2, (16,)))
    module = Captioned()
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[WandbImagesCallback(num_samples=4, run_dir=tmp_path)], enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    assert module.seen == [2, 2]  # two of each of the two validation batches, spread over the set
    assert (tmp_path / "plots" / "val_predictions.png").read_bytes()[:4] == b"\x89PNG"
