"""The whole workflow from one checkpoint: validate, test, predict, export; resume; init-from.

Every command is a process of its own, forked by the CLI server of tests/cli_server.py (torch
and Lightning imported once, not once per command).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_server import Cli
from conftest import make_image_tree


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, Path]:
    """One small run on a train/val/test tree, trained once for every test in this module."""
    root = tmp_path_factory.mktemp("workflow")
    data = make_image_tree(
        root / "data", ["cat", "dog", "fox"], per_class=6, size=40, splits=("train", "val", "test")
    )
    out = Cli(request.config)(
        "train",
        "--data",
        data,
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--batch-size",
        "6",
        "--run-dir",
        root / "run",
        "--backbone",
        "timm:resnet10t",
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {
        "root": root,
        "data": data,
        "run": root / "run",
        "ckpt": root / "run" / "checkpoints" / "last.ckpt",
    }


#: A tiny network at 16 px: a killed and resumed run proves the same on it as on the digits demo.
TINY = ["--backbone", "timm:test_resnet", "--image-size", "16", "--batch-size", "6"]


@pytest.fixture
def cli(request: pytest.FixtureRequest) -> Cli:
    """``cli("predict", ..., cwd=...)``: one visionkit command, a process of its own."""
    return Cli(request.config)


def test_checkpoint_is_self_describing_and_loads_weights_only(trained: dict[str, Path]) -> None:
    ckpt = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    meta = ckpt["visionkit"]
    assert meta["class_names"] == ["cat", "dog", "fox"]
    assert meta["backbone"] == "timm:resnet10t" and meta["task"] == "classification"
    assert set(meta["preprocessing"]) >= {"mean", "std", "interpolation", "crop_pct"}
    assert meta["config"]["image_size"] == 32 and meta["config"]["epochs"] == 2
    assert meta["components"]["backbone"]["plugin"] == "visionkit_timm"
    assert meta["components"]["backbone"]["version"] and meta["visionkit_version"]


def test_validate_and_test_print_and_write_metrics(trained: dict[str, Path], cli: Cli) -> None:
    for command, split in (("validate", "val"), ("test", "test")):
        out = cli(command, "--ckpt", str(trained["ckpt"]), cwd=trained["root"])
        assert out.returncode == 0, out.stderr[-2000:]
        doc = json.loads((trained["run"] / f"{command}.json").read_text())
        assert doc["split"] == split and 0.0 <= doc["metrics"][f"{split}/acc"] <= 1.0
        assert f'"{split}/acc"' in out.stdout


def test_validate_refuses_data_with_other_classes(trained: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    other = make_image_tree(tmp_path / "other", ["cat", "dog", "wolf"], per_class=2, size=32)
    out = cli("validate", "--ckpt", str(trained["ckpt"]), "--data", str(other), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "missing from the data: fox" in out.stderr and "not in the checkpoint: wolf" in out.stderr


def test_predict_table_csv_json(trained: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    images = trained["data"] / "test"
    table = cli("predict", "--ckpt", str(trained["ckpt"]), str(images), "--topk", "2", cwd=tmp_path)
    assert table.returncode == 0, table.stderr[-2000:]
    assert len(table.stdout.strip().splitlines()) == 18
    out_csv = tmp_path / "p.csv"
    assert (
        cli(
            "predict", "--ckpt", str(trained["ckpt"]), str(images), "-o", str(out_csv), cwd=tmp_path
        ).returncode
        == 0
    )
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 18 and {r["class_1"] for r in rows} <= {"cat", "dog", "fox"}
    out_json = tmp_path / "p.json"
    assert (
        cli(
            "predict",
            "--ckpt",
            str(trained["ckpt"]),
            str(images / "cat" / "cat_0.jpg"),
            "-k",
            "3",
            "-o",
            str(out_json),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    (row,) = json.loads(out_json.read_text())
    assert abs(sum(p for _, p in row["top"]) - 1.0) < 1e-4 and len(row["top"]) == 3


def test_predict_skips_a_corrupt_file_and_names_it(
    trained: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    bad = tmp_path / "imgs"
    bad.mkdir()
    shutil.copy(trained["data"] / "test" / "dog" / "dog_0.jpg", bad / "good.jpg")
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = cli("predict", "--ckpt", str(trained["ckpt"]), str(bad), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broken.jpg" in out.stderr and "good.jpg" in out.stdout and "broken.jpg" not in out.stdout


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_is_verified_and_matches_predict(
    trained: dict[str, Path], tmp_path: Path, fmt: str, cli: Cli
) -> None:
    target = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    out = cli(
        "export", "--ckpt", str(trained["ckpt"]), "--format", fmt, "--output", str(target), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "max abs difference vs PyTorch" in out.stdout
    side = json.loads(Path(f"{target}.json").read_text())
    assert side["class_names"] == ["cat", "dog", "fox"] and side["input"]["center_crop"] == [32, 32]
    pred = tmp_path / "pred.json"
    images = sorted((trained["data"] / "test").rglob("*.jpg"))
    assert (
        cli(
            "predict", "--ckpt", str(trained["ckpt"]), *map(str, images), "-o", str(pred), cwd=tmp_path
        ).returncode
        == 0
    )
    expected = [row["top"][0][0] for row in json.loads(pred.read_text())]
    # A separate process that knows nothing of visionkit: the sidecar JSON and the runtime only.
    script = r"""
import json, sys
import numpy as np
from PIL import Image
model, side_path, fmt, *files = sys.argv[1:]
side = json.load(open(side_path))
inp = side["input"]
def load(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short = inp["resize_shorter_side_to"]
    scale = short / min(w, h)
    img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
    ch, cw = inp["center_crop"]
    left, top = (img.size[0] - cw) // 2, (img.size[1] - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    return (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)
batch = np.stack([load(f) for f in files])
if fmt == "onnx":
    import onnxruntime as ort
    logits = ort.InferenceSession(model).run(["logits"], {"images": batch})[0]
else:
    import torch
    logits = torch.jit.load(model)(torch.from_numpy(batch)).detach().numpy()
print(json.dumps([side["class_names"][i] for i in logits.argmax(1)]))
"""
    got = subprocess.run(
        [sys.executable, "-c", script, str(target), f"{target}.json", fmt, *map(str, images)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert "visionkit" not in got.stderr
    assert json.loads(got.stdout) == expected


def test_bad_checkpoints_are_clear_usage_errors(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("hello")
    for name, needle in (
        ("missing.ckpt", "not found"),
        ("empty.ckpt", "empty"),
        ("text.ckpt", "cannot be read"),
    ):
        out = cli("predict", "--ckpt", str(tmp_path / name), str(tmp_path), cwd=tmp_path)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_init_from_reinitialises_a_head_of_another_size(
    trained: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    data = make_image_tree(tmp_path / "two", ["a", "b"], per_class=6, size=40)
    out = cli(
        "train",
        "--init-from",
        str(trained["ckpt"]),
        "--data",
        str(data),
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "6",
        "--backbone",
        "timm:resnet10t",
        "--run-dir",
        "run2",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fc.weight" in out.stderr and "skipped" in out.stderr  # the 3-class head does not fit 2 classes
    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert summary["class_names"] == ["a", "b"] and summary["epochs"] == 1


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "summary.json").read_text())["metrics"]


def test_killed_run_resumes_exactly(trained: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    """SIGKILL after the first epoch, --resume last: the same final metrics as an uninterrupted run."""
    args = ["train", "--data", str(trained["data"]), *TINY, "--epochs", "6", "--deterministic", "--seed", "7"]
    full = cli(*args, "--run-dir", "full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = cli.start(*args, "--run-dir", "cut", cwd=tmp_path)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # last.ckpt is written atomically: it exists only when complete
    assert proc.wait().returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "summary.json").exists()  # it really did not finish
    assert torch.load(last, weights_only=True)["epoch"] < 5
    resumed = cli("train", "--resume", "last", "--run-dir", "cut", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _metrics(tmp_path / "full"), _metrics(tmp_path / "cut")
    for key in ("val/acc", "val/loss", "train/loss_epoch"):
        assert abs(a[key] - b[key]) <= 1e-6, (key, a[key], b[key])


def test_resume_falls_back_past_a_truncated_last_ckpt(
    trained: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    out = cli("train", "--resume", "last", "--run-dir", str(run), "--epochs", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "continuing from the newest checkpoint that loads instead" in out.stderr
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3


def test_predict_step_results_split_into_one_entry_per_input() -> None:
    """A list, a tensor batched on dim 0 and a Sample batched on dim 0 each give one entry per input
    (predict and serve pair them with the input files); anything else is a clear usage error."""
    from visionkit_core.errors import UsageError
    from visionkit_core.workflows.predict import per_input

    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]], requires_grad=True)
    split = per_input({"label": probs.argmax(1), "probs": probs})
    assert [s["label"].item() for s in split] == [1, 0] and torch.equal(split[1]["probs"], probs[1].detach())
    assert [t.tolist() for t in per_input(probs)] == [pytest.approx([0.2, 0.8]), pytest.approx([0.6, 0.4])]
    assert per_input([{"label": 1}, {"label": 0}]) == [{"label": 1}, {"label": 0}]
    with pytest.raises(UsageError, match="predict_step returned int; return a list"):
        per_input(3)
    with pytest.raises(
        UsageError, match=r"a Sample whose fields are not all batched on dim 0 \(label, probs\)"
    ):
        per_input({"label": torch.tensor(1), "probs": probs})
