"""The kit's pretrained-weight cache: cached files are used, missing ones fail fast and clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionkit_core import UsageError
from visionkit_core.kit.weights import hf_hub_cache_dir, timm_pretrained_kwargs, torch_hub_file


def test_the_hub_cache_follows_the_environment_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_hub_cache_dir() == str(tmp_path / "hf" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hf_hub_cache_dir() == str(tmp_path / "c")


def test_a_cached_timm_file_is_used_and_a_missing_one_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"timm:test_resnet.*HF_HUB_OFFLINE") as err:
        timm_pretrained_kwargs("test_resnet")
    assert "models--timm--test_resnet" in str(err.value)
    repo = tmp_path / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "model.safetensors").write_bytes(b"x")
    overlay = timm_pretrained_kwargs("test_resnet")["pretrained_cfg_overlay"]
    assert overlay["file"] == str(repo / "snapshots" / "abc" / "model.safetensors")


def test_torch_hub_files_are_found_in_the_cache_or_refused_when_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = "http://127.0.0.1:9/weights/net-1234.pth"  # nothing listens on the discard port
    with pytest.raises(UsageError, match=r"tv:net.*not in the torch hub cache"):
        torch_hub_file("tv:net", url)
    cached = tmp_path / "hub" / "checkpoints" / "net-1234.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert torch_hub_file("tv:net", url) == cached
