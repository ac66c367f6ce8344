"""RunConfig: precedence, validation with suggestions, YAML round trip, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visionkit_core.errors import ConfigError
from visionkit_core.run.config import REDACTED, RunConfig, check_options, resolve


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_demo() -> None:
    from visionkit_core.plugin.manager import load_plugins
    from visionkit_core.run.assemble import resolve_components

    cfg = resolve()
    # backbone and data are left to the task: its TaskSpec names its demo
    assert (cfg.backbone, cfg.task, cfg.data, cfg.loggers) == (None, "classification", None, ["csv"])
    resolved = resolve_components(cfg, load_plugins(autoload=False))
    chosen = (resolved.backbone.qualname, resolved.dataset.qualname)
    assert chosen == ("visionkit:resnet18", "visionkit:digits")


def test_precedence_defaults_config_set_flags(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", {"epochs": 3, "lr": 0.1, "batch_size": 8})
    b = write(tmp_path / "b.yaml", {"epochs": 4, "options": {"backbone": {"drop_path_rate": 0.2}}})
    cfg = resolve(
        [a, b], ["lr=0.5", "batch_size=16", "backbone.drop_path_rate=0.3"], {"batch_size": 32, "seed": None}
    )
    assert cfg.epochs == 4  # later file wins
    assert cfg.lr == 0.5  # --set beats files
    assert cfg.batch_size == 32  # flags beat --set
    assert cfg.seed == 42  # a flag not given changes nothing
    assert cfg.options == {"backbone": {"drop_path_rate": 0.3}}


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve([write(tmp_path / "c.yaml", {"epoch": 3})])
    assert "'epoch'" in str(err.value) and "did you mean 'epochs'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve(sets=["backbon.drop_path_rate=0.1"])
    assert "did you mean 'backbone'" in str(err.value)


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlr: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        resolve([bad])
    assert "bad.yaml" in str(err.value) and "line" in str(err.value)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"epochs": -1}, "--epochs"),
        ({"lr": 0.0}, "--lr"),
        ({"val_split": 1.5}, "--val-split"),
        ({"precision": "8-bit"}, "--precision"),
        ({"devices": "two"}, "--devices"),
    ],
)
def test_out_of_range_values_are_refused(flags: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(flags=flags)
    assert needle in str(err.value)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(sets=["epochs=many"])
    assert "epochs must be an int or null, got 'many'" in str(err.value)


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = resolve(
        sets=["backbone.drop_path_rate=0.1", "logger.wandb.project=demo", "trainer.gradient_clip_val=1.0"],
        flags={"epochs": 2, "loggers": ["csv", "wandb"], "callbacks": ["wandb-images"], "image_size": 48},
    )
    dumped = tmp_path / "cfg.yaml"
    dumped.write_text(cfg.to_yaml())
    again = resolve([dumped])
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()


def test_secrets_never_reach_the_dump() -> None:
    cfg = resolve(sets=["logger.wandb.api_key=abc123secret"], flags={"loggers": ["wandb"]})
    text = cfg.to_yaml()
    assert "abc123secret" not in text and REDACTED in text


def test_check_options_against_a_factory_signature() -> None:
    def factory(num_classes: int, pretrained: bool = False, drop_path_rate: float = 0.0) -> None: ...

    check_options("backbone", "x:net", factory, {"drop_path_rate": 0.1}, {"num_classes": "the dataset"})
    with pytest.raises(ConfigError) as err:
        check_options("backbone", "x:net", factory, {"drop_path_rat": 0.1}, {"num_classes": "the dataset"})
    msg = str(err.value)
    assert "drop_path_rat" in msg and "did you mean 'drop_path_rate'" in msg and "x:net" in msg
    with pytest.raises(ConfigError) as err:
        check_options("backbone", "x:net", factory, {"num_classes": 3}, {"num_classes": "the dataset"})
    assert "set by the dataset" in str(err.value)


def test_section_lookup() -> None:
    cfg = RunConfig(options={"logger": {"wandb": {"project": "p"}}, "data": {"hflip": False}})
    assert cfg.section("logger", "wandb") == {"project": "p"}
    assert cfg.section("logger", "csv") == {}
    assert cfg.section("data") == {"hflip": False}


def test_only_whole_secret_words_are_redacted() -> None:
    from visionkit_core.run.config import is_secret_key

    assert all(is_secret_key(k) for k in ("api_key", "WANDB_API_KEY", "hf_token", "password", "apikey"))
    assert not any(is_secret_key(k) for k in ("num_tokens", "token_dropout", "secretary_count", "keys"))


def test_options_of_a_qualified_logger_name_are_found() -> None:
    cfg = resolve(sets=["logger.visionkit:wandb.project=p", "logger.csv.flush_logs_every_n_steps=5"])
    assert cfg.section("logger", "visionkit:wandb") == {"project": "p"}
    assert cfg.section("logger", "visionkit:csv") == {"flush_logs_every_n_steps": 5}
