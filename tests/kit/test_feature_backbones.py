"""Feature backbones: registered timm and torchvision backbones give declared multi-scale feature maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionkit_core import FeatureLevel, UsageError
from visionkit_core.kit import build_feature_backbone
from visionkit_core.kit.backbones import FeatureBackbone, check_feature_maps


@pytest.mark.parametrize(
    ("name", "indices", "expected"),
    [
        ("timm:test_resnet", (1, 2), [(32, 4), (48, 8)]),
        ("resnet18", (1, 2, 4), [(64, 4), (128, 8), (512, 32)]),
    ],
)
def test_a_feature_backbone_gives_the_maps_it_declares(
    name: str, indices: tuple[int, ...], expected: list[tuple[int, int]]
) -> None:
    features = build_feature_backbone(name, out_indices=indices)
    assert features.levels == [FeatureLevel(c, r) for c, r in expected]
    assert features.module.visionkit_backbone.endswith(name)  # the qualified name
    with torch.no_grad():
        maps = features.module.eval()(torch.rand(2, 3, 64, 64))
    assert isinstance(maps, list)
    assert [tuple(m.shape) for m in maps] == [(2, c, 64 // r, 64 // r) for c, r in expected]


def test_all_levels_when_no_indices_are_given() -> None:
    assert build_feature_backbone("timm:test_resnet").reductions == [2, 4, 8, 16, 32]


def test_a_logits_only_backbone_is_refused_naming_it() -> None:
    with pytest.raises(UsageError, match=r"'torchvision:alexnet' .*gives only class logits"):
        build_feature_backbone("torchvision:alexnet")


def test_levels_that_do_not_exist_are_refused_naming_them() -> None:
    with pytest.raises(UsageError, match=r"out_indices=\(7,\)"):
        build_feature_backbone("resnet18", out_indices=(7,))
    with pytest.raises(
        UsageError, match=r"timm:test_resnet cannot give feature maps with out_indices=\(9,\)"
    ):
        build_feature_backbone("timm:test_resnet", out_indices=(9,))


def test_options_are_checked_and_reserved_ones_refused() -> None:
    from visionkit_core import ConfigError

    with pytest.raises(ConfigError, match="unknown option 'dropp_rate'"):
        build_feature_backbone("timm:test_resnet", dropp_rate=0.1)
    assert build_feature_backbone("timm:test_resnet", out_indices=(1,), drop_path_rate=0.1).channels == [32]


def test_weights_of_the_classifier_load_into_the_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import timm

    torch.manual_seed(3)
    classifier = timm.create_model("test_resnet", num_classes=5)
    torch.save(classifier.state_dict(), tmp_path / "w.pt")
    features = build_feature_backbone("timm:test_resnet", weights=str(tmp_path / "w.pt"), out_indices=(1,))
    assert "from " + str(tmp_path / "w.pt") in capsys.readouterr().err
    assert torch.equal(
        features.module.state_dict()["conv1.0.weight"], classifier.state_dict()["conv1.0.weight"]
    )


def test_a_weights_file_for_another_network_is_refused_naming_it(tmp_path: Path) -> None:
    torch.save({"encoder.stem.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match=r"other.pt' matches nothing in the model"):
        build_feature_backbone("timm:test_resnet", weights=str(tmp_path / "other.pt"))


def test_the_maps_are_checked_against_the_declared_levels() -> None:
    features = build_feature_backbone("timm:test_resnet", out_indices=(1, 2))
    assert check_feature_maps(features) == "(1, 3, 64, 64) -> 2 feature maps: 32@1/4, 48@1/8"
    wrong = FeatureBackbone(features.module, [FeatureLevel(32, 4), FeatureLevel(64, 8)])
    with pytest.raises(AssertionError, match=r"feature map 1 is \(1, 48, 8, 8\), but visionkit_feature_info"):
        check_feature_maps(wrong)
