"""The kit's task base and optimiser: reload, names, normalisation, weights, and a schedule that
survives resuming with more epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from visionkit_core import UsageError
from visionkit_core.kit.optim import MIN_LR_RATIO, lr_factor, param_groups, schedule_lengths
from visionkit_core.kit.task import metric_key

from .tiny_task import Tiny, loader, trainer


def test_class_names_come_from_the_data_or_are_numbered() -> None:
    assert Tiny(class_names=["a", "b", "c"]).class_names == ["a", "b", "c"]
    assert Tiny().class_names == ["class_0", "class_1", "class_2"]


def test_normalisation_on_the_device_and_back() -> None:
    model = Tiny()
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = model.on_after_batch_transfer((images, torch.zeros(2)), 0)
    assert isinstance(out, tuple) and out[0][0, :, 0, 0].tolist() == pytest.approx(
        [-2.0, 0.00784, 2.0], abs=1e-3
    )
    as_dict = model.on_after_batch_transfer({"image": images, "mask": 1}, 0)
    assert torch.equal(as_dict["image"], out[0]) and as_dict["mask"] == 1
    assert torch.allclose(model.denormalize(out[0]) * 255, images.float(), atol=0.01)
    with pytest.raises(UsageError, match="positive stds"):
        model.set_normalization([0.5], [0.0])


def test_weights_load_into_the_first_module_they_fit(tmp_path: Path) -> None:
    model = Tiny()
    head = nn.Linear(4, 3)
    torch.save(head.state_dict(), tmp_path / "head.pt")
    summary = model.load_weights_into([model.net[0], model.net[4]], str(tmp_path / "head.pt"))
    assert "2" in summary and torch.equal(model.net[4].weight, head.weight)
    with pytest.raises(UsageError, match="matches nothing"):
        model.load_weights_into([model.net[0]], str(tmp_path / "head.pt"))


def test_param_groups_decay_weights_but_not_biases_or_norms() -> None:
    decay, no_decay = param_groups(Tiny().parameters(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.ndim for p in decay["params"]] == [4, 2] and all(p.ndim == 1 for p in no_decay["params"])


def test_lr_warms_up_then_follows_the_cosine_to_its_floor() -> None:
    factors = [lr_factor(step, total=100, warmup=10) for step in range(101)]
    assert factors[0] == pytest.approx(1 / 11) and max(factors) == pytest.approx(1.0, abs=1e-3)
    assert factors[-1] == pytest.approx(MIN_LR_RATIO) and factors == [
        *factors[:10],
        *sorted(factors[10:])[::-1],
    ]


def test_resuming_with_one_more_epoch_stretches_the_schedule(tmp_path: Path) -> None:
    """``--resume --epochs N+1``: the schedule is rebuilt for the longer run, never overrun."""
    model = Tiny()
    first = trainer(tmp_path, 2)
    first.fit(model, loader())
    assert schedule_lengths(first) == (8, 0)  # 8 steps; warmup: int(0.8) = 0
    first.save_checkpoint(tmp_path / "two.ckpt")
    longer = trainer(tmp_path, 3)
    longer.fit(Tiny(), loader(), ckpt_path=tmp_path / "two.ckpt")
    assert longer.global_step == 12 and schedule_lengths(longer) == (12, 1)
    lrs = [g["lr"] for g in longer.optimizers[0].param_groups]
    assert lrs == pytest.approx([0.1 * MIN_LR_RATIO] * 2)  # the end of the 12-step cosine


def test_reload_never_downloads_and_loads_weights_only(tmp_path: Path) -> None:
    model = Tiny(class_names=["x", "y", "z"], pretrained=True)
    fit = trainer(tmp_path, 1)
    fit.fit(model, loader())
    fit.save_checkpoint(tmp_path / "m.ckpt")
    again = Tiny.load_from_checkpoint(tmp_path / "m.ckpt")
    assert again.seen_pretrained is False and again.class_names == ["x", "y", "z"]
    assert torch.equal(again.net[0].weight, model.net[0].weight)


def test_metric_keys_have_no_spaces_or_slashes() -> None:
    assert metric_key("traffic light/red") == "traffic_light_red" and metric_key("//") == "class"


def test_a_checkpoints_preprocessing_wins_and_class_names_must_match() -> None:
    model = Tiny()
    kept = model.use_preprocessing({"mean": [0, 0, 0], "std": [1, 1, 1]}, {"mean": (0.5, 0.5, 0.5)})
    assert kept == {"mean": [0.5, 0.5, 0.5], "std": [1.0, 1.0, 1.0]} and model.preprocessing == kept
    assert model.norm_mean.flatten().tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(UsageError, match="got 2 class names for num_classes=3"):
        Tiny.check_class_names(3, ["a", "b"])
