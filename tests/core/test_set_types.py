"""``--set`` values are checked and converted against the factory's annotations."""

from __future__ import annotations

import subprocess
import time
import types
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from visionkit_core.errors import ConfigError
from visionkit_core.run.config import check_options
from visionkit_core.run.convert import option_specs, supported

if TYPE_CHECKING:
    from torch import nn  # only for the annotation below: not resolvable at run time

RunCli = Callable[..., subprocess.CompletedProcess[str]]


class Pool(Enum):
    AVG = "avg"
    MAX = "max"


def net(
    *,
    num_classes: int,
    pretrained: bool = False,
    drop_path_rate: float | None = None,
    depth: int = 3,
    act: Literal["relu", "gelu"] = "relu",
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    widths: list[int] | None = None,
    flip: bool = True,
    name: str = "net",
    weights_dir: Path | None = None,
    pool: Pool = Pool.AVG,
    extra: dict[str, float] | None = None,
    head: nn.Module | None = None,
    untyped=0.5,  # the default's type is used
    anything=None,  # nothing known: passed through
) -> nn.Module: ...


RESERVED = {"num_classes": "the dataset", "pretrained": "--pretrained"}


def convert(**options: Any) -> dict[str, Any]:
    return check_options("backbone", "x:net", net, options, RESERVED)


def error(**options: Any) -> str:
    with pytest.raises(ConfigError) as err:
        convert(**options)
    return str(err.value)


def test_numbers_are_converted_to_the_annotated_type() -> None:
    assert convert(drop_path_rate="1e-3", depth="4", untyped=2) == {
        "drop_path_rate": 0.001,
        "depth": 4,
        "untyped": 2.0,
    }
    assert type(convert(drop_path_rate=0)["drop_path_rate"]) is float


def test_a_value_of_the_wrong_type_names_option_value_and_expected_type() -> None:
    msg = error(drop_path_rate="abc")
    assert msg.startswith("--set backbone.drop_path_rate=abc: expected a float, got 'abc'")
    assert "float | None" in msg and "x:net" in msg
    assert error(depth=2.5).startswith("--set backbone.depth=2.5: expected an int, got 2.5")
    assert error(depth=True).startswith("--set backbone.depth=true: expected an int")


def test_booleans_accept_true_false_yes_no_one_zero() -> None:
    pairs = [("true", True), ("False", False), ("yes", True), ("no", False), ("1", True), (0, False)]
    for text, value in pairs:
        assert convert(flip=text) == {"flip": value}
    assert error(flip="maybe").startswith("--set backbone.flip=maybe: expected true or false")


def test_optional_accepts_none_and_null() -> None:
    assert convert(drop_path_rate="none", widths="null", weights_dir=None) == {
        "drop_path_rate": None,
        "widths": None,
        "weights_dir": None,
    }


def test_literal_values_must_be_one_of_the_choices() -> None:
    assert convert(act="gelu") == {"act": "gelu"}
    assert error(act="tanh").startswith("--set backbone.act=tanh: expected one of 'relu', 'gelu', got 'tanh'")


def test_lists_and_tuples_from_yaml_or_commas() -> None:
    assert convert(widths="8, 16,32") == {"widths": [8, 16, 32]}
    assert convert(widths=[8, "16"]) == {"widths": [8, 16]}
    assert convert(mean="0.4,0.5,0.6") == {"mean": (0.4, 0.5, 0.6)}
    assert "expected a list of ints" in error(widths="8,wide")


def test_strings_paths_enums_and_mappings() -> None:
    out = convert(name=7, weights_dir="~/w", pool="max", extra={"a": "1.5"})
    assert out == {"name": "7", "weights_dir": Path("~/w"), "pool": Pool.MAX, "extra": {"a": 1.5}}
    assert "expected a mapping" in error(extra="a=1")
    assert "expected one of 'avg', 'max'" in error(pool="min")


def test_unresolvable_or_missing_types_pass_values_through() -> None:
    marker = object()
    assert convert(head=marker, anything="x") == {"head": marker, "anything": "x"}


def test_converted_values_are_written_back_into_a_dict_argument() -> None:
    options: dict[str, Any] = {"depth": "5"}
    assert check_options("backbone", "x:net", net, options, RESERVED) == {"depth": 5}
    assert options == {"depth": 5}


def test_unknown_and_reserved_keys_are_still_refused() -> None:
    assert "did you mean 'depth'" in error(dept=3)
    assert "set by --pretrained" in error(pretrained=True)


def test_string_annotations_resolve_one_parameter_at_a_time() -> None:
    specs, takes_any = option_specs(net) or ({}, True)
    assert not takes_any
    assert specs["depth"].target is int and specs["untyped"].target is float
    assert specs["head"].problem and "nn.Module | None" in specs["head"].problem
    assert specs["anything"].problem == "no annotation and a default (None) of no usable type"


def test_lightning_style_unions_keep_unknown_members_passing() -> None:
    class Profiler: ...

    def trainer(profiler: Profiler | str | None = None, limit: int | float | None = None) -> None: ...

    assert supported(Profiler | str | None)
    prof = Profiler()
    out = check_options("trainer", "T", trainer, {"profiler": prof, "limit": "0.5"})
    assert out["profiler"] is prof and out["limit"] == 0.5


class Head: ...


def test_a_class_annotation_is_no_command_line_type_but_a_union_with_one_is() -> None:
    def factory(head: Head | None = None, profiler: Head | str | None = None) -> None: ...

    specs, _ = option_specs(factory) or ({}, True)
    assert "is not a type --set values can be converted to" in (specs["head"].problem or "")
    assert specs["profiler"].problem is None and not supported(Head) and supported(Head | str)


def test_command_line_spellings_of_literals_enums_and_dates() -> None:
    import datetime

    def factory(bits: Literal["16", "32"] = "32", pool: Pool = Pool.AVG, tag: str = "") -> None: ...

    out = check_options("data", "x:d", factory, {"bits": 16, "pool": "MAX", "tag": datetime.date(2024, 1, 2)})
    assert out == {"bits": "16", "pool": Pool.MAX, "tag": "2024-01-02"}


def test_build_backbone_hands_the_factory_converted_values() -> None:
    from visionkit_core import hookimpl
    from visionkit_core.plugin.manager import load_plugins
    from visionkit_core.run.build import build_backbone

    received: dict[str, Any] = {}

    class Net:
        visionkit_backbone = ""

    def tiny(*, num_classes: int, pretrained: bool = False, width: int = 16, scale: float = 1.0) -> Net:
        received.update(num_classes=num_classes, width=width, scale=scale)
        return Net()

    module = types.ModuleType("vk_settypes")
    module.visionkit_register_backbones = hookimpl(lambda registry: registry.add("tiny", tiny))  # type: ignore[attr-defined]
    plugins = load_plugins(builtins=(), autoload=False, extra=[("settypes", module)])
    build_backbone("settypes:tiny", num_classes=3, options={"width": "8", "scale": 2}, plugins=plugins)
    assert received == {"num_classes": 3, "width": 8, "scale": 2.0}
    assert type(received["scale"]) is float


# -- the CLI: exit 2, one line, before anything is built -----------------------------


def test_config_show_rejects_a_bad_value(run_cli: RunCli) -> None:
    out = run_cli(["config", "show", "--backbone", "timm:resnet10t", "--set", "backbone.drop_path_rate=abc"])
    assert out.returncode == 2, out.stderr
    assert "--set backbone.drop_path_rate=abc: expected a float, got 'abc'" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_config_show_prints_a_good_value(run_cli: RunCli) -> None:
    out = run_cli(["config", "show", "--set", "data.crop_pct=0.9", "--set", "data.hflip=no"])
    assert out.returncode == 0, out.stderr
    assert "crop_pct: 0.9" in out.stdout and "hflip: false" in out.stdout


def test_config_file_values_are_checked_too(run_cli: RunCli, tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("options:\n  data:\n    crop_pct: [0.9]\n", encoding="utf-8")
    out = run_cli(["config", "show", "--config", str(cfg)])
    assert out.returncode == 2, out.stderr
    assert "data.crop_pct=[0.9]: expected a float, got [0.9]" in out.stderr


def test_train_stops_on_a_bad_value_before_building_anything(run_cli: RunCli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    args = ["train", "--backbone", "timm:resnet10t", "--set", "backbone.drop_path_rate=abc"]
    out = run_cli([*args, "--epochs", "1", "--run-dir", str(run_dir)])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--set backbone.drop_path_rate=abc: expected a float, got 'abc'" in out.stderr
    assert "timm:resnet10t" in out.stderr and "Traceback" not in out.stderr
    assert not run_dir.exists()  # no run directory, no datamodule, no model
    assert time.perf_counter() - started < 120


def test_a_none_default_takes_null_whatever_the_annotation_says() -> None:
    """``x: float = None`` (implicit Optional): ``--set x=null`` gives None on every Python version."""

    def factory(x: float = None, y: int = 3) -> None:  # type: ignore[assignment]  # noqa: RUF013
        pass

    assert check_options("task", "t", factory, {"x": "null", "y": "4"}) == {"x": None, "y": 4}
    with pytest.raises(ConfigError, match=r"--set task.y=null: expected an int"):
        check_options("task", "t", factory, {"y": "null"})
