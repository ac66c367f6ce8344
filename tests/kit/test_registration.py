"""kit.registration: registration hooks written as tables are real hookimpls that register exactly
what the hand-written hooks did, mix with hand-written hooks, and fail clearly when misassigned."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from visionkit_core import hookimpl
from visionkit_core.kit.registration import (
    HOOKS,
    Entry,
    Namespace,
    backbones,
    callbacks,
    coco_or_yolo,
    datasets,
    loggers,
    registration,
    tasks,
)
from visionkit_core.plugin import manager
from visionkit_core.plugin.manager import BUILTIN_PLUGINS, Plugins, load_plugins
from visionkit_core.plugin.registry import KINDS


def load(**plugins: Any) -> Plugins:
    """Only these plugins (name -> module or object), registered as third-party ones."""
    return load_plugins(builtins=(), autoload=False, extra=list(plugins.items()))


def names_of(plugins: Plugins, kind: str) -> dict[str, tuple[Any, str, Any]]:
    return {c.qualname: (c.factory, c.description, c.check) for c in plugins.registry.static_components(kind)}


def test_a_table_registers_what_the_hand_written_hook_registered() -> None:
    @hookimpl
    def visionkit_register_datasets(registry: Any) -> None:
        registry.add("toy", "math:sqrt", description="a toy", check="math:floor")
        registry.add("acme:other", "math:cos")
        registry.add_namespace("zoo", "math:tan", "math:ceil", description="every zoo set")

    table = datasets(
        Entry("toy", "math:sqrt", "a toy", check="math:floor"),
        Entry("acme:other", "math:cos"),
        Namespace("zoo", "math:tan", "math:ceil", "every zoo set"),
    )
    by_hand = load(hand=SimpleNamespace(visionkit_register_datasets=visionkit_register_datasets))
    by_table = load(hand=SimpleNamespace(visionkit_register_datasets=table))

    assert (
        names_of(by_table, "dataset")
        == names_of(by_hand, "dataset")
        == {
            "hand:toy": ("math:sqrt", "a toy", "math:floor"),
            "acme:other": ("math:cos", "", None),
        }
    )
    (provider,) = by_table.registry.providers("dataset")
    assert (provider.namespace, provider.resolve, provider.list_names, provider.description) == (
        "zoo",
        "math:tan",
        "math:ceil",
        "every zoo set",
    )
    assert by_table.infos["hand"].registered == by_hand.infos["hand"].registered


@pytest.mark.parametrize(
    ("helper", "kind"),
    [
        (backbones, "backbone"),
        (tasks, "task"),
        (datasets, "dataset"),
        (callbacks, "callback"),
        (loggers, "logger"),
    ],
)
def test_each_helper_is_a_named_hookimpl_for_its_kind(helper: Any, kind: str) -> None:
    hook = helper(Entry("thing", "math:sqrt", "a thing"))
    assert HOOKS[kind] == hook.__name__
    assert hook.kind == kind and hook.rows == (Entry("thing", "math:sqrt", "a thing"),)
    plugins = load(acme=SimpleNamespace(**{HOOKS[kind]: hook}))
    assert plugins.infos["acme"].hooks == [HOOKS[kind]]
    assert [c.qualname for c in plugins.registry.static_components(kind)] == ["acme:thing"]
    assert set(HOOKS) == set(KINDS)
    assert HOOKS == manager._REGISTER_HOOKS  # the hooks the core calls for each kind


def test_tables_and_hand_written_hooks_mix_in_one_plugin_module() -> None:
    module = ModuleType("acme_plugin")
    module.visionkit_register_tasks = tasks(Entry("smooth", "math:sqrt", "a task"))  # type: ignore[attr-defined]

    @hookimpl(tryfirst=True)
    def visionkit_claim_data(path: Path) -> str | None:
        return "acme:toy" if path.name == "toy" else None

    module.visionkit_claim_data = visionkit_claim_data  # type: ignore[attr-defined]
    plugins = load(acme=module)

    assert sorted(plugins.infos["acme"].hooks) == ["visionkit_claim_data", "visionkit_register_tasks"]
    assert plugins.pm.hook.visionkit_claim_data(path=Path("toy"), task=None) == "acme:toy"
    assert [c.qualname for c in plugins.registry.static_components("task")] == ["acme:smooth"]


def test_a_table_assigned_to_another_kinds_hook_fails_that_plugin_naming_the_fix() -> None:
    plugins = load(
        acme=SimpleNamespace(visionkit_register_datasets=tasks(Entry("smooth", "math:sqrt"))),
        good=SimpleNamespace(visionkit_register_datasets=datasets(Entry("toy", "math:sqrt"))),
    )
    assert [c.qualname for c in plugins.registry.static_components("dataset")] == ["good:toy"]
    (error,) = plugins.infos["acme"].errors
    assert plugins.infos["acme"].status == "failed"
    assert error == (
        "visionkit_register_datasets: TypeError: tasks(...) is assigned to visionkit_register_datasets: "
        "assign it to visionkit_register_tasks, and write dataset rows with datasets(...)"
    )


def test_rows_must_be_entries_or_namespaces_and_the_kind_known() -> None:
    with pytest.raises(TypeError, match="visionkit_register_tasks rows must be Entry or Namespace"):
        tasks(("smooth", "math:sqrt", "a task"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown component kind 'model'"):
        registration("model", Entry("x", "math:sqrt"))


def test_every_builtin_registration_hook_is_a_table_on_its_plugin_module() -> None:
    """The built-in plugins declare their components as tables (visionkit_callbacks excepted: its
    hooks decide per run); pluggy finds each as a module attribute named for its hook."""
    tables = {}
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        for kind, hook_name in HOOKS.items():
            hook = getattr(module, hook_name, None)
            if hook is not None and hasattr(hook, "rows"):
                assert hook.kind == kind, (module_name, hook_name)
                tables[module_name.partition(".")[0], kind] = [getattr(r, "name", None) for r in hook.rows]
    assert tables[("visionkit_classification", "task")] == ["classification", "multilabel"]
    assert tables[("visionkit_loggers", "logger")] == ["csv", "tensorboard", "wandb"]
    assert tables[("visionkit_detection", "dataset")] == ["coco", "yolo", "shapes"]
    assert tables[("visionkit_torchvision", "backbone")][:5] == [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    assert {plugin for plugin, _ in tables} >= {
        "visionkit_classification",
        "visionkit_detection",
        "visionkit_imagefolder",
        "visionkit_instance_segmentation",
        "visionkit_keypoints",
        "visionkit_loggers",
        "visionkit_segmentation",
        "visionkit_timm",
        "visionkit_torchvision",
        "visionkit_wandb_images",
    }


def test_the_registration_module_and_the_builtin_plugin_modules_import_no_torch() -> None:
    modules = ", ".join(["visionkit_core.kit.registration", *BUILTIN_PLUGINS])
    code = (
        f"import sys, {modules}\n"
        "heavy = [m for m in ('torch', 'lightning', 'timm', 'wandb', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- coco_or_yolo: the stat-only look a claim hook takes ------------------------------------------


def test_coco_or_yolo_finds_the_coco_train_file_by_prefix(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text("not read")
    (tmp_path / "annotations" / "instances_val.json").write_text("{}")

    assert coco_or_yolo(tmp_path, "person_keypoints") == (
        "coco",
        tmp_path / "annotations" / "person_keypoints_train2017.json",
    )
    assert coco_or_yolo(tmp_path, "instances") is None  # a val file alone is not a training set


@pytest.mark.parametrize("name", ["data.yaml", "dataset.yaml"])
def test_coco_or_yolo_finds_a_yolo_yaml_in_a_folder(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("names: [a]\n")
    assert coco_or_yolo(tmp_path) == ("yolo", tmp_path / name)


def test_coco_or_yolo_takes_a_yaml_file_and_refuses_other_paths(tmp_path: Path) -> None:
    yaml_file = tmp_path / "pose.yml"
    yaml_file.write_text("kpt_shape: [3, 3]\n")
    (tmp_path / "notes.txt").write_text("x")

    assert coco_or_yolo(yaml_file) == ("yolo", yaml_file)
    assert coco_or_yolo(tmp_path / "notes.txt") is None
    assert coco_or_yolo(tmp_path / "missing") is None
    assert coco_or_yolo(tmp_path / "empty") is None
