"""Backbones from the torchvision and timm plugins: names, options, preprocessing, pretrained weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from visionkit_timm.backbones import create_timm_backbone
from visionkit_torchvision.backbones import build_torchvision_model

from visionkit_core.errors import ConfigError, UnknownNameError, UsageError
from visionkit_core.plugin.manager import Plugins, load_plugins
from visionkit_core.run.build import build_backbone

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return load_plugins(autoload=False)


@pytest.fixture
def no_weight_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub and Hugging Face caches, so nothing pretrained is available locally."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def closed_port_url() -> str:
    """A local URL nobody listens on: connecting is refused at once, online or not."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def logits_of(model: torch.nn.Module, size: int = 32) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.rand(2, 3, size, size))


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_resnet_family_is_builtin_in_the_default_namespace(plugins: Plugins, name: str) -> None:
    comp = plugins.registry.resolve("backbone", name)

    assert comp.qualname == f"visionkit:{name}"
    assert comp.factory == f"visionkit_torchvision.backbones:{name}"
    assert comp.origin.plugin == "visionkit_torchvision"


def test_torchvision_namespace_resolves_any_classifier(plugins: Plugins) -> None:
    comp = plugins.registry.resolve("backbone", "torchvision:resnet50")
    other = plugins.registry.resolve("backbone", "torchvision:convnext_tiny")

    assert comp.qualname == "torchvision:resnet50"
    assert callable(comp.load())
    assert other.load().__name__ == "convnext_tiny"


def test_torchvision_namespace_is_listed_only_when_asked(plugins: Plugins) -> None:
    default = [c.qualname for c in plugins.registry.listing("backbone")]
    listed = [c.name for c in plugins.registry.listing("backbone", namespace="torchvision")]

    assert not any(q.startswith(("torchvision:", "timm:")) for q in default)
    assert {"resnet18", "convnext_tiny", "vit_b_16", "mobilenet_v3_small"} <= set(listed)
    assert "fasterrcnn_resnet50_fpn" not in listed  # detection models are not classifiers


def test_unknown_torchvision_name_suggests_close_ones(plugins: Plugins) -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean: .*resnet50"):
        plugins.registry.resolve("backbone", "torchvision:resnet51")


def test_timm_namespace_resolves_plain_and_tagged_names(plugins: Plugins) -> None:
    plain = plugins.registry.resolve("backbone", "timm:resnet10t")
    tagged = plugins.registry.resolve("backbone", "timm:resnet10t.c3_in1k")

    assert plain.qualname == "timm:resnet10t"
    assert tagged.qualname == "timm:resnet10t.c3_in1k"


@pytest.mark.parametrize("name", ["timm:resnet10tt", "timm:resnet10t.no_such_tag"])
def test_unknown_timm_name_is_an_error_with_did_you_mean(plugins: Plugins, name: str) -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean: [^?]*\bresnet10t[,?]"):
        plugins.registry.resolve("backbone", name)


def test_unknown_backbone_option_is_a_config_error_with_suggestion(plugins: Plugins) -> None:
    with pytest.raises(ConfigError, match="did you mean 'drop_path_rate'"):
        build_backbone("timm:resnet10t", num_classes=2, options={"drop_path_rat": 0.1}, plugins=plugins)


def test_plugin_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, visionkit_torchvision.plugin, visionkit_timm.plugin, visionkit_classification.plugin\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- building ----------------------------------------------------------------------------


def test_builtin_resnet18_gives_logits_and_imagenet_preprocessing(plugins: Plugins) -> None:
    model = build_backbone("resnet18", num_classes=2, plugins=plugins)

    assert logits_of(model).shape == (2, 2)
    assert model.visionkit_backbone == "visionkit:resnet18"
    assert model.visionkit_preprocessing == {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    }


def test_resnet_zero_init_residual_option_is_applied(plugins: Plugins) -> None:
    model = build_backbone("resnet18", num_classes=2, options={"zero_init_residual": True}, plugins=plugins)

    assert torch.count_nonzero(model.layer1[0].bn2.weight) == 0


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "googlenet"])
def test_torchvision_models_return_one_logits_tensor_in_training(plugins: Plugins, name: str) -> None:
    model = build_backbone(f"torchvision:{name}", num_classes=3, plugins=plugins)
    model.train()

    out = model(torch.rand(2, 3, 64, 64))

    assert isinstance(out, torch.Tensor)  # no GoogLeNet auxiliary-output tuple
    assert out.shape == (2, 3)


def test_timm_backbone_builds_with_requested_classes(plugins: Plugins) -> None:
    model = build_backbone("timm:resnet10t", num_classes=3, plugins=plugins)

    assert logits_of(model).shape == (2, 3)
    assert model.visionkit_preprocessing == {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bicubic",  # from timm's pretrained_cfg, not the torchvision default
        "crop_pct": 0.875,
    }


def test_timm_options_reach_the_model(plugins: Plugins) -> None:
    options = {"drop_rate": 0.25, "drop_path_rate": 0.1, "global_pool": "max"}
    model = build_backbone("timm:resnet10t", num_classes=2, options=options, plugins=plugins)

    assert model.drop_rate == 0.25
    assert model.global_pool.pool_type == "max"
    assert logits_of(model).shape == (2, 2)


# -- pretrained weights --------------------------------------------------------------------


def test_torchvision_pretrained_without_cache_or_network_fails_fast(
    no_weight_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Route downloads through a proxy that refuses connections: a real network failure, online or not.
    proxy = closed_port_url()
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)

    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        build_torchvision_model("resnet18", num_classes=2, pretrained=True)
    elapsed = time.monotonic() - start

    message = str(info.value)
    assert "torchvision:resnet18" in message
    assert "--no-pretrained" in message and "--weights FILE" in message
    assert str(no_weight_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "\n" not in message
    assert elapsed < 20  # seconds, not a hanging download


def test_timm_pretrained_offline_without_cache_fails_fast(
    no_weight_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        create_timm_backbone("resnet10t", num_classes=2, pretrained=True)
    elapsed = time.monotonic() - start

    message = str(info.value)
    assert "timm:resnet10t" in message and "HF_HUB_OFFLINE" in message
    assert "--no-pretrained" in message
    assert str(no_weight_caches / "hf" / "hub" / "models--timm--resnet10t.c3_in1k") in message
    assert elapsed < 20


def test_timm_pretrained_with_unreachable_hub_fails_fast(
    no_weight_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # Online mode (the test session itself runs with HF_HUB_OFFLINE=1), but a Hub nobody answers.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())

    start = time.monotonic()
    with pytest.raises(UsageError, match="--no-pretrained") as info:
        create_timm_backbone("resnet10t", num_classes=2, pretrained=True)

    assert "timm:resnet10t" in str(info.value)
    assert "the Hub is unreachable" in str(info.value)
    assert time.monotonic() - start < 20  # huggingface_hub alone would retry for ~50 s


def test_torchvision_pretrained_loads_from_torch_hub_cache_and_resizes_head(no_weight_caches: Path) -> None:
    import torchvision

    imagenet = torchvision.models.resnet18(num_classes=1000)
    cached = no_weight_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)

    model = build_torchvision_model("resnet18", num_classes=2, pretrained=True)

    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert model.fc.out_features == 2
    assert logits_of(model).shape == (2, 2)


class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_torchvision_pretrained_never_unpickles_code_from_the_cache(no_weight_caches: Path) -> None:
    import torchvision

    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    marker = no_weight_caches / "pwned"
    cached = no_weight_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save({**state, "payload": _Payload(marker)}, cached)
    with pytest.raises(UsageError) as err:
        build_torchvision_model("resnet18", num_classes=2, pretrained=True)
    assert not marker.exists()
    assert "torchvision:resnet18" in str(err.value)


def test_timm_pretrained_loads_from_hf_cache_without_network(
    no_weight_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    imagenet = timm.create_model("resnet10t", num_classes=1000)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = no_weight_caches / "hf" / "hub" / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(imagenet.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))

    model = create_timm_backbone("resnet10t", num_classes=3, pretrained=True)

    assert torch.equal(model.conv1[0].weight, imagenet.conv1[0].weight)
    assert model.fc.out_features == 3
    assert logits_of(model).shape == (2, 3)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
