"""wandb-images with keypoints: media_sample_of's keypoints drawn into a real offline wandb run's images."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import offline_wandb_env
from PIL import Image
from visionkit_wandb_images.render import draw_keypoints

from visionkit_core import MediaSample

GREEN, RED = (44, 160, 44), (214, 39, 40)


def test_visible_keypoints_are_drawn_in_and_invisible_ones_are_not() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    sample = MediaSample(
        image, "kp", true_keypoints=[[[5, 5, 1], [30, 5, 0]]], pred_keypoints=[[[20, 30, 1]]]
    )
    drawn = draw_keypoints(sample)
    assert tuple(drawn[5, 5]) == GREEN and tuple(drawn[30, 20]) == RED
    assert tuple(drawn[5, 30]) == (0, 0, 0)  # not visible: not drawn
    assert draw_keypoints(MediaSample(image)) is not None and not image.any()  # the input is left alone


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """log_media of one keypoint sample into a real offline wandb run (a fresh process: wandb keeps
    global state)."""
    tmp = tmp_path_factory.mktemp("wandb-kp")
    run_dir = tmp / "run"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from types import SimpleNamespace
        import torch
        from lightning.pytorch.loggers import WandbLogger
        from visionkit_core.kit.media import media_sample_of
        from visionkit_wandb_images.callback import WandbImagesCallback

        run_dir = Path({str(run_dir)!r})
        truth = {{"boxes": torch.tensor([[4.0, 4, 36, 36]]), "labels": torch.tensor([0]),
                 "keypoints": torch.tensor([[[10.0, 10], [30, 10]]]), "visibility": torch.tensor([[1, 0]])}}
        pred = {{"boxes": torch.tensor([[5.0, 5, 35, 35]]), "labels": torch.tensor([0]),
                "scores": torch.tensor([0.9]), "keypoints": torch.tensor([[[20.0, 30, 1], [30, 30, 1]]])}}
        sample = media_sample_of(torch.zeros(3, 40, 40, dtype=torch.uint8), truth, pred, ["person"])
        logger = WandbLogger(save_dir=str(run_dir), offline=True, project="kp")
        trainer = SimpleNamespace(loggers=[logger], global_step=0, lightning_module=None)
        WandbImagesCallback(run_dir=run_dir, class_names=["person"]).log_media(trainer, [sample])
        logger.experiment.finish()
        """
    )
    env = offline_wandb_env(tmp)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_the_offline_run_holds_the_image_with_its_keypoints_and_boxes(offline_run: Path) -> None:
    [run] = (offline_run / "wandb").glob("offline-run-*")
    [png] = (run / "files" / "media" / "images" / "val").glob("predictions_*.png")  # key val/predictions
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert tuple(pixels[10, 10]) == GREEN and tuple(pixels[30, 20]) == RED and tuple(pixels[30, 30]) == RED
    assert tuple(pixels[10, 30]) == (0, 0, 0)  # an invisible true keypoint
    assert (offline_run / "plots" / "val_predictions.png").read_bytes()[:4] == b"\x89PNG"
