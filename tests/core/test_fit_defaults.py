"""Defaults that fit the data: batch size, lr and epochs chosen from the training set's size and the task.

A user who gives no --batch-size/--lr/--epochs gets values that fit the data, stated in one line
of output and recorded with their reasons in config.yaml; a value the user (or the resumed
checkpoint) gave is never replaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import make_image_tree

from visionkit_core.plugin.contract import DataInfo, TaskSpec
from visionkit_core.run.config import RunConfig
from visionkit_core.run.defaults import choose, fit_batch, fit_epochs, optimizer_steps

CLASSIFY = TaskSpec(name="classification", monitor="val/acc", default_batch_size=64)
DETECT = TaskSpec(name="detection", monitor="val/map")  # TaskSpec's default: batch 16, lr 2e-3


@pytest.fixture(scope="module")
def tree_40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree with 40 training images (2 classes x 20) and 8 validation images."""
    root = tmp_path_factory.mktemp("fit") / "data"
    make_image_tree(root, ["cat", "dog"], per_class=20, size=16, splits=("train",))
    make_image_tree(root, ["cat", "dog"], per_class=4, size=16, splits=("val",))
    return root


@pytest.mark.parametrize(
    ("train_size", "spec", "batch"),
    [
        (40, CLASSIFY, 4),  # 64 would be 1 step an epoch; 4 gives 10
        (1437, CLASSIFY, 64),  # the digits demo keeps its batch (22 steps)
        (160, DETECT, 16),  # the detection tree: 10 steps at the task's 16
        (128, DETECT, 8),  # 160 images with 20 % held out
        (12, DETECT, 2),  # never below 2 (BatchNorm)
    ],
)
def test_the_batch_is_the_tasks_halved_until_an_epoch_has_ten_steps(train_size, spec, batch) -> None:  # type: ignore[no-untyped-def]
    assert fit_batch(train_size, spec.default_batch_size) == batch


def test_steps_count_full_batches_per_device_and_accumulation() -> None:
    assert optimizer_steps(40, 4) == 10 and optimizer_steps(43, 4) == 10  # the partial batch is dropped
    assert optimizer_steps(40, 4, world=2) == 5 and optimizer_steps(40, 4, accumulate=3) == 4
    assert optimizer_steps(3, 64) == 1  # one (partial) batch when the data is smaller than it
    assert fit_batch(160, 16, world=2) == 8  # each of 2 devices sees 80 images


def test_lr_scales_with_the_square_root_of_the_batch_and_epochs_give_about_500_steps() -> None:
    chosen = choose(RunConfig(), CLASSIFY, 40)
    assert [chosen.choices[k].value for k in ("batch_size", "lr", "epochs")] == [4, 5e-4, 50]
    assert chosen.steps_per_epoch == 10
    assert "64 gives 1 optimizer step an epoch" in chosen.choices["batch_size"].reason
    assert fit_epochs(10) == 50 and fit_epochs(400) == 10 and fit_epochs(1) == 100


def test_given_values_are_kept_and_an_unknown_size_keeps_the_tasks_defaults() -> None:
    given = choose(RunConfig(batch_size=8, lr=1e-3, epochs=3), CLASSIFY, 40)
    assert not any(c.chosen for c in given.choices.values()) and given.line() is None
    assert given.apply(RunConfig(batch_size=8)).batch_size == 8
    unknown = choose(RunConfig(), DETECT, None)
    assert [unknown.choices[k].value for k in ("batch_size", "lr", "epochs")] == [16, 2e-3, 10]
    assert "unknown size" in (unknown.line() or "")


TINY = {"backbone": "timm:test_resnet", "image_size": 16}


def test_an_explicit_batch_size_stays_and_a_chosen_one_reaches_the_datamodule(tree_40: Path) -> None:
    from visionkit_core.plugin.manager import get_plugins
    from visionkit_core.run.assemble import build_fit_parts
    from visionkit_core.run.config import resolve
    from visionkit_core.run.resolve import validate_components

    def parts(**flags):  # type: ignore[no-untyped-def]
        config = resolve(flags={"data": str(tree_40), **TINY, **flags})
        return build_fit_parts(validate_components(config, plugins))

    plugins = get_plugins()
    given = parts(batch_size=8)
    assert given.resolved.config.batch_size == 8 and given.datamodule.batch_size == 8
    assert given.defaults.choices["batch_size"].reason == "given"
    chosen = parts()
    assert chosen.info.train_size == 40 and isinstance(chosen.info, DataInfo)
    assert chosen.resolved.config.batch_size == chosen.datamodule.batch_size == 4
    assert chosen.datamodule.hparams["batch_size"] == 4  # what the checkpoint records
    assert chosen.model.hparams["lr"] == 5e-4 and chosen.resolved.config.epochs == 50


def test_a_40_image_tree_trains_at_batch_4_says_so_records_why_and_resume_keeps_it(
    tmp_path: Path, tree_40: Path
) -> None:
    from visionkit_core.cli.options import config_and_resume
    from visionkit_core.run.assemble import run_train

    run, said = tmp_path / "run", []
    flags = {"data": str(tree_40), "epochs": 1, "run_dir": str(run), **TINY}
    config, _ = config_and_resume({**flags, "sets": ["trainer.limit_val_batches=1"]})
    run_train(config, echo=said.append)
    assert len(said) == 1 and said[0].startswith("visionkit: 40 training samples, 10 optimizer steps")
    assert "batch size 4" in said[0] and "lr 0.0005" in said[0] and "--batch-size/--lr to choose" in said[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["batch_size"], config["lr"], config["epochs"]) == (4, 5e-4, 1)
    defaults = config["derived"]["defaults"]
    assert defaults["batch_size"]["value"] == 4
    assert "gives 1 optimizer step" in defaults["batch_size"]["reason"]
    assert defaults["epochs"]["reason"] == "given" and defaults["optimizer_steps_per_epoch"] == 10
    assert config["derived"]["runtime"]["batch_size"] == 4  # what the loader really used

    config, point = config_and_resume({"resume": "last", "run_dir": str(run), "epochs": 2})
    said.clear()
    run_train(config, resume=point, echo=said.append)
    assert said == []  # nothing chosen: the checkpoint's values
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["batch_size"], config["lr"], config["epochs"]) == (4, 5e-4, 2)
    assert config["derived"]["defaults"]["batch_size"]["reason"] == "the checkpoint's (--resume)"
