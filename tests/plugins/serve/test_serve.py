"""``visionkit serve``: a real LitServe process on a loopback port, real HTTP, answers equal to ``predict``.

One tiny classifier is trained once; one server process (dynamic batching on) is started for the
module and stopped with SIGINT (LitServe stops and joins its workers, so their CPU seconds are
counted). Segmentation masks and an exported model are served through the same code in-process.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cli_server
import pytest
import requests
from cli_server import Cli
from conftest import make_image_tree
from seg_trees import make_masks_tree

from visionkit_core.run.assemble import run_train
from visionkit_core.run.config import resolve

TINY = {"backbone": "timm:test_resnet", "loggers": ["csv"], "seed": 0, "num_workers": 0}


def train(tmp: Path, sets: tuple[str, ...] = (), **flags: Any) -> Path:
    config = resolve(sets=sets, flags={**TINY, "run_dir": str(tmp / "run"), **flags})
    result = run_train(config, echo=lambda _: None)
    return Path(result.run_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture
def cli(request: pytest.FixtureRequest) -> Cli:
    """``cli("predict", ..., cwd=...)``: one visionkit command, a process of its own forked by the
    CLI server of tests/cli_server.py (torch imported once, not once per command)."""
    return Cli(request.config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("serve")
    data = make_image_tree(tmp / "data", ["cat", "dog", "fox"], per_class=6, size=40)
    ckpt = train(tmp, data=str(data), epochs=2, image_size=32, batch_size=6, lr=0.01)
    return {"tmp": tmp, "data": data, "ckpt": ckpt}


@pytest.fixture(scope="module")
def server(classifier: dict[str, Path]) -> Iterator[str]:
    port = free_port()
    args = ["serve", "--ckpt", str(classifier["ckpt"]), "--port", str(port), "--max-batch-size", "8"]
    args += ["--batch-timeout", "0.05", "--max-request-mb", "1"]
    log = (classifier["tmp"] / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "visionkit_core", *args],
        cwd=classifier["tmp"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the whole server can be stopped by its id
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (classifier["tmp"] / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the server did not become healthy in 180 s")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # LitServe's own shutdown: workers stopped and joined
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def by_name(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {Path(r["path"]).name: r["top"] for r in rows}


def same_top(got: dict[str, list[Any]], expected: dict[str, list[Any]]) -> None:
    assert got.keys() == expected.keys()
    for name, top in expected.items():
        assert [c for c, _ in got[name]] == [c for c, _ in top], name
        assert [p for _, p in got[name]] == pytest.approx([p for _, p in top], abs=2e-5), name


def test_health_and_info_describe_the_model(server: str, classifier: dict[str, Path]) -> None:
    assert requests.get(f"{server}/health", timeout=10).status_code == 200
    info = requests.get(f"{server}/info", timeout=10).json()
    assert info["task"] == "classification" and info["classes"] == ["cat", "dog", "fox"]
    assert info["preprocessing"]["image_size"] == 32 and "mean" in info["preprocessing"]
    assert {"visionkit", "torch", "litserve"} <= set(info["versions"])
    assert info["server"]["max_batch_size"] == 8


def test_concurrent_requests_answer_what_predict_writes(
    server: str, classifier: dict[str, Path], cli: Cli
) -> None:
    images = sorted((classifier["data"] / "val").rglob("*.jpg"))
    out = classifier["tmp"] / "predict.json"
    done = cli(
        "predict", "--ckpt", str(classifier["ckpt"]), *map(str, images), "-o", str(out), cwd=classifier["tmp"]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = by_name(json.loads(out.read_text()))

    def multipart(path: Path) -> list[dict[str, Any]]:
        with path.open("rb") as f:
            r = requests.post(f"{server}/predict", files={"image": (path.name, f, "image/jpeg")}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def base64_json(path: Path) -> list[dict[str, Any]]:
        body = {"images": [{"name": path.name, "data": base64.b64encode(path.read_bytes()).decode()}]}
        r = requests.post(f"{server}/predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=12) as pool:  # 12 clients at once: batches of up to 8 form
        answers = list(
            pool.map(lambda ip: (multipart if ip[0] % 2 else base64_json)(ip[1]), enumerate(images))
        )
    assert all(len(a) == 1 for a in answers)
    same_top(by_name([a[0] for a in answers]), expected)
    # several images in one request, in order, at their original size
    files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in images[:5]]
    many = requests.post(f"{server}/predict", files=files, data={"topk": "2"}, timeout=60).json()
    assert [r["path"] for r in many] == [p.name for p in images[:5]] and all(len(r["top"]) == 2 for r in many)
    one = requests.post(
        f"{server}/predict", json={"image": base64.b64encode(images[0].read_bytes()).decode()}, timeout=60
    )
    assert one.json()[0]["path"] == "image_0" and one.json()[0]["top"] == expected[images[0].name]


def test_twenty_malformed_requests_get_4xx_json_and_the_server_keeps_serving(
    server: str, classifier: dict[str, Path]
) -> None:
    good = sorted((classifier["data"] / "val").rglob("*.jpg"))[0].read_bytes()
    text = b"hello, I am not an image"
    b64 = base64.b64encode
    url = f"{server}/predict"
    bad: list[tuple[str, dict[str, Any]]] = [
        ("text/plain body", {"data": b"hello", "headers": {"Content-Type": "text/plain"}}),
        ("no content type", {"data": b"hello", "headers": {"Content-Type": ""}}),
        ("xml body", {"data": b"<a/>", "headers": {"Content-Type": "application/xml"}}),
        ("broken JSON", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("JSON list", {"json": [1, 2]}),
        ("JSON without image", {"json": {"picture": "abc"}}),
        ("image not a string", {"json": {"image": 42}}),
        ("images not a list", {"json": {"images": "abc"}}),
        ("bad base64", {"json": {"image": "%%%not-base64%%%"}}),
        ("base64 of text", {"json": {"image": b64(text).decode()}}),
        ("empty image list", {"json": {"images": []}}),
        ("multipart text file", {"files": {"image": ("notes.jpg", text, "image/jpeg")}}),
        ("multipart empty file", {"files": {"image": ("empty.png", b"", "image/png")}}),
        ("multipart wrong field", {"files": {"picture": ("a.jpg", good, "image/jpeg")}}),
        ("multipart image as text field", {"data": {"image": "not a file"}, "files": {"x": ("x", b"x")}}),
        ("PNG header, garbage", {"files": {"image": ("x.png", b"\x89PNG\r\n\x1a\n" + text, "image/png")}}),
        ("too large", {"data": b"0" * (2 * 1024 * 1024), "headers": {"Content-Type": "application/json"}}),
        ("bad topk", {"json": {"image": b64(good).decode(), "topk": 0}}),
        ("bad threshold", {"json": {"image": b64(good).decode(), "threshold": "high"}}),
        ("one good one bad image", {"json": {"images": [b64(good).decode(), b64(text).decode()]}}),
    ]
    assert len(bad) == 20
    for name, kwargs in bad:
        r = requests.post(url, timeout=60, **kwargs)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert isinstance(r.json().get("error"), str) and r.json()["error"], name
    assert requests.get(url, timeout=10).status_code == 405
    assert requests.get(f"{server}/health", timeout=10).status_code == 200

    # a bad request batched with good ones fails alone
    def post(data: bytes) -> int:
        return requests.post(url, json={"image": b64(data).decode()}, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(post, [good, text, good, good, text, good]))
    assert codes == [200, 400, 200, 200, 400, 200]


def test_serve_refuses_bad_arguments_as_usage_errors(classifier: dict[str, Path], cli: Cli) -> None:
    tmp = classifier["tmp"]
    both = cli("serve", "--ckpt", str(classifier["ckpt"]), "--model", "x.onnx", cwd=tmp)
    assert both.returncode == 2 and "exactly one of --ckpt" in both.stderr
    missing = cli("serve", "--model", "nothing.onnx", cwd=tmp)
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr


def test_a_missing_serve_package_names_the_pip_command(classifier: dict[str, Path]) -> None:
    # a process of its own where litserve cannot be imported, as where it is not installed
    args = ["serve", "--ckpt", str(classifier["ckpt"])]
    out = cli_server.visionkit(*args, cwd=classifier["tmp"], block=["litserve"], timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'visionkit[serve]'" in out.stderr and "Traceback" not in out.stderr


def test_segmentation_masks_are_served_as_predict_writes_them(tmp_path: Path, cli: Cli) -> None:
    from visionkit_serve.model import Job, Served

    data = make_masks_tree(tmp_path / "data", counts={"train": 8, "val": 4})
    ckpt = train(tmp_path, task="segmentation", data=str(data), epochs=1, image_size=32, batch_size=4)
    images = sorted((data / "val" / "images").iterdir())
    assert cli("predict", "--ckpt", str(ckpt), *map(str, images), "-o", "masks", cwd=tmp_path).returncode == 0
    served = Served(ckpt=ckpt)
    jobs = [served.decode(Job([(p.name, p.read_bytes())], {})) for p in images]
    served.predict(jobs)
    for path, job in zip(images, jobs, strict=True):
        (answer,) = served.answer(job)
        png = f"{path.stem}.png"
        assert answer["path"] == path.name and list(answer["files"]) == [png]
        assert base64.b64decode(answer["files"][png]) == (tmp_path / "masks" / png).read_bytes()


@pytest.mark.parametrize("task", ["multilabel", "detection"])
def test_label_sets_and_boxes_are_served_as_predict_writes_them(tmp_path: Path, task: str) -> None:
    from det_trees import make_coco_tree
    from visionkit_serve.model import Job, Served

    from visionkit_core.workflows.predict import predict

    if task == "multilabel":
        from recipe_data import write_multilabel_manifest

        data = write_multilabel_manifest(tmp_path / "data", n=20, size=16)
        ckpt = train(tmp_path, task=task, data=str(data), epochs=1, image_size=16, batch_size=8)
        images = sorted(data.parent.rglob("*.png"))[:5] or sorted(data.parent.rglob("*.jpg"))[:5]
    else:
        data = make_coco_tree(tmp_path / "coco", {"train": 8, "val": 4}, size=64)
        # barely trained: keep low-scoring boxes so there are some to compare
        sets = ("task.score_thresh=0.001",)
        ckpt = train(
            tmp_path, sets, task=task, data=str(data), epochs=4, image_size=64, batch_size=4, lr=0.01
        )
        images = sorted(p for p in (data / "val").iterdir() if p.suffix in (".jpg", ".png"))
    assert images
    out = tmp_path / "predict.json"
    threshold = None if task == "multilabel" else 0.0  # multilabel: its tuned per-class thresholds
    predict(ckpt, images, out, {"topk": 5, "threshold": threshold, "overlay": False}, accelerator="cpu")
    served = Served(ckpt=ckpt)
    job = served.decode(Job([(p.name, p.read_bytes()) for p in images], {"threshold": threshold}))
    served.predict([job])
    answer, expected = served.answer(job), json.loads(out.read_text())
    rows = answer["predictions"] if task == "multilabel" else answer
    want = expected["predictions"] if task == "multilabel" else expected
    assert [r["path"] for r in rows] == [p.name for p in images]
    assert [{**r, "path": w["path"]} for r, w in zip(rows, want, strict=True)] == want
    if task == "detection":
        assert sum(len(r["boxes"]) for r in rows) > 0  # boxes to compare, not empty lists


def test_an_exported_model_is_served_with_the_answers_of_its_checkpoint(classifier: dict[str, Path]) -> None:
    from visionkit_export.export import export_checkpoint
    from visionkit_serve.model import Job, Served

    model = export_checkpoint(
        classifier["ckpt"], "torchscript", classifier["tmp"] / "model.torchscript.pt"
    ).path
    images = sorted((classifier["data"] / "val").rglob("*.jpg"))[:6]
    answers = []
    for source in ({"ckpt": classifier["ckpt"]}, {"model": model}):
        served = Served(**source)
        job = served.decode(Job([(p.name, p.read_bytes()) for p in images], {}))
        served.predict([job])
        answers.append(by_name(served.answer(job)))
    same_top(answers[1], answers[0])
    assert Served(model=model).info()["format"] == "torchscript"
