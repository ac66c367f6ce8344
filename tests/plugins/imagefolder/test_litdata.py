"""Streaming data: `data convert --to litdata` and `--data litdata:DIR`, one process and 2-process CPU DDP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import cli_server
import pytest
from conftest import make_image_tree
from recipe_data import write_multilabel_manifest
from visionkit_imagefolder.streaming import StreamingDataModule

from visionkit_core.plugin.manager import get_plugins, use_plugins
from visionkit_core.run.assemble import resolve_data, run_train
from visionkit_core.run.config import resolve
from visionkit_core.workflows.predict import predict

SMALL = ["--epochs", "1", "--image-size", "16", "--batch-size", "4", "--backbone", "timm:test_resnet"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli_server.visionkit(*args, cwd=cwd)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An ImageFolder tree (3 classes, 8 train + 4 val each, one unreadable file) converted to shards."""
    tmp = tmp_path_factory.mktemp("litdata")
    root = make_image_tree(tmp / "tree", ["cat", "dog", "fox"], per_class=8, size=20, splits=("train",))
    make_image_tree(root, ["cat", "dog", "fox"], per_class=4, size=20, splits=("val",))
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = _cli(["data", "convert", str(root), "--to", "litdata", "shards"], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"tmp": tmp, "tree": root, "shards": tmp / "shards", "out": out}


def test_convert_writes_litdata_shards_per_split_and_leaves_out_unreadable_images(
    shards: dict[str, Any],
) -> None:
    out, folder = shards["out"], shards["shards"]
    meta = json.loads((folder / "visionkit.json").read_text())
    assert meta["class_names"] == ["cat", "dog", "fox"] and meta["multilabel"] is False
    assert meta["splits"] == {"train": 24, "val": 12} and meta["class_counts"] == [8, 8, 8]
    assert meta["left_out"] == [str(shards["tree"] / "train" / "dog" / "broken.jpg")]
    assert all((folder / split / "index.json").is_file() for split in ("train", "val"))
    assert "left out unreadable image" in out.stderr and "broken.jpg" in out.stderr
    assert "Train on them with: visionkit train --data litdata:shards" in out.stdout


def test_a_converted_folder_is_found_by_name_and_by_path(shards: dict[str, Any]) -> None:
    plugins = get_plugins()
    by_name, root = resolve_data(f"litdata:{shards['shards']}", plugins)
    assert by_name.qualname == f"litdata:{shards['shards']}" and root is None
    by_path, root = resolve_data(str(shards["shards"]), plugins)
    assert by_path.namespace == "litdata" and root == str(shards["shards"])


def test_training_on_litdata_shards_and_predicting_from_its_checkpoint(
    shards: dict[str, Any], tmp_path: Path
) -> None:
    flags = {"data": f"litdata:{shards['shards']}", "epochs": 1, "image_size": 16, "batch_size": 4}
    config = resolve(flags={**flags, "backbone": "timm:test_resnet", "run_dir": str(tmp_path / "run")})
    result = run_train(config, echo=lambda _: None)
    summary = result.summary
    assert summary["dataset"] == f"litdata:{shards['shards']}" and summary["global_step"] == 6  # 24 / 4
    assert 0.0 <= summary["metrics"]["val/acc"] <= 1.0 and summary["class_names"] == ["cat", "dog", "fox"]
    with use_plugins(get_plugins()):
        out = predict(tmp_path / "run" / "checkpoints" / "last.ckpt", [shards["tree"] / "val" / "cat"])
    assert out.predicted == 4


def test_two_process_cpu_ddp_streams_each_rank_its_own_share(shards: dict[str, Any]) -> None:
    args = ["train", "--data", "litdata:shards", *SMALL, "--devices", "2", "--strategy", "ddp"]
    out = _cli([*args, "--accelerator", "cpu", "--run-dir", "ddp"], shards["tmp"])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((shards["tmp"] / "ddp" / "summary.json").read_text())
    assert summary["global_step"] == 3  # 24 samples over 2 ranks, batch 4: 3 steps each, not 6
    assert out.stdout.count("Final val/acc") == 1


def test_a_multilabel_manifest_converts_to_multi_hot_shards(tmp_path: Path) -> None:
    csv = write_multilabel_manifest(tmp_path / "ml", n=15)
    out = _cli(["data", "convert", str(csv), "--to", "litdata", "mlshards"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    dm = StreamingDataModule.bound(str(tmp_path / "mlshards"))(batch_size=4, image_size=16, num_workers=0)
    info = dm.data_info()
    assert info.class_names == ["blue", "green", "red"] and info.extra["multilabel"] is True
    dm.setup("fit")
    images, truth = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    targets = truth["multi_hot"]
    assert (
        images.shape == (4, 3, 16, 16) and targets.shape == (4, 3) and str(targets.dtype) == "torch.float32"
    )
