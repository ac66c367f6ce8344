"""visionkit_core.kit.weights: loading local weight files safely and reporting what matched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from visionkit_core.errors import UsageError
from visionkit_core.kit.weights import LoadReport, load_weights, read_state_dict


def small_net(num_classes: int = 2, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def assert_same_params(a: nn.Module, b: nn.Module, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if not key.startswith(skip):
            assert torch.equal(sa[key], sb[key]), key


class WritesAFile:
    """A pickle payload that would create a file when unpickled unsafely."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def test_safetensors_file_loads_every_tensor(tmp_path: Path) -> None:
    source, target = small_net(seed=1), small_net(seed=2)
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))

    report = load_weights(target, path)

    assert_same_params(source, target)
    assert len(report.loaded) == len(source.state_dict())
    assert (report.missing, report.unexpected, report.shape_mismatch) == ([], [], [])
    assert report.summary().startswith(f"loaded 9/9 tensors from {path}")


def test_pytorch_state_dict_loads_every_tensor(tmp_path: Path) -> None:
    source, target = small_net(seed=1), small_net(seed=2)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)

    report = load_weights(target, path)

    assert_same_params(source, target)
    assert sorted(report.loaded) == sorted(source.state_dict())


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
@pytest.mark.parametrize("prefix", ["model.", "module.", "backbone.", "module.model."])
def test_nested_and_prefixed_checkpoints_are_unwrapped(tmp_path: Path, wrapper: str, prefix: str) -> None:
    source, target = small_net(seed=1), small_net(seed=2)
    path = tmp_path / "ckpt.pt"
    state = {f"{prefix}{k}": v for k, v in source.state_dict().items()}
    torch.save({wrapper: state, "epoch": 3, "optimizer_states": []}, path)

    report = load_weights(target, path)

    assert_same_params(source, target)
    assert report.unexpected == []


def test_head_for_another_class_count_is_skipped_and_reported(tmp_path: Path) -> None:
    source, target = small_net(num_classes=5, seed=1), small_net(num_classes=2, seed=2)
    head_before = target[5].weight.detach().clone()
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))

    report = load_weights(target, path)

    assert report.shape_mismatch == [("5.weight", (5, 4), (2, 4)), ("5.bias", (5,), (2,))]
    assert torch.equal(target[5].weight, head_before)
    assert_same_params(source, target, skip=("5.",))
    assert "skipped (shape differs): 5.weight, 5.bias" in report.summary()


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path) -> None:
    source = small_net(seed=1)
    state = dict(source.state_dict())
    del state["0.bias"]
    state["extra.weight"] = torch.ones(2)
    path = tmp_path / "w.pt"
    torch.save(state, path)

    report = load_weights(small_net(seed=2), path)

    assert report.missing == ["0.bias"]
    assert report.unexpected == ["extra.weight"]
    assert isinstance(report, LoadReport)


def test_file_that_matches_nothing_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(3, 3)}, str(path))

    with pytest.raises(UsageError, match=r"other\.safetensors.*matches nothing"):
        load_weights(small_net(), path)


def test_unsafe_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    created = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": WritesAFile(created)}, path)

    with pytest.raises(UsageError) as info:
        load_weights(small_net(), path)

    message = str(info.value)
    assert "evil.pt" in message
    assert "io.open" in message  # the offending global, from torch's UnpicklingError
    assert "\n" not in message
    assert not created.exists()


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.pt' does not exist"):
        load_weights(small_net(), tmp_path / "nope.pt")


@pytest.mark.parametrize("name", ["junk.pt", "junk.safetensors"])
def test_unreadable_file_is_an_error_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a checkpoint")

    with pytest.raises(UsageError, match=rf"cannot read weights file .*{name}"):
        read_state_dict(path)


def test_file_without_tensors_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 1, "note": "no weights here"}, path)

    with pytest.raises(UsageError, match="holds no tensors"):
        read_state_dict(path)


def test_weights_module_imports_without_torch() -> None:
    code = "import sys, visionkit_core.kit.weights; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("old", "new"), [("training.weights", "kit.weights"), ("media", "kit.media")])
def test_a_moved_module_still_imports_under_its_old_path_and_warns(old: str, new: str) -> None:
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        f"    import visionkit_core.{old} as old, visionkit_core.{new} as new\n"
        "assert all(getattr(old, n) is getattr(new, n) for n in new.__all__)\n"
        "print([str(w.message) for w in seen if w.category is DeprecationWarning])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"visionkit_core.{old} moved to visionkit_core.{new}" in out.stdout
