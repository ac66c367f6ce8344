"""``visionkit plugins check`` and ``visionkit_core.testing``: conformance before any user sees a plugin.

Third-party plugins here are installed for real (a ``.dist-info`` with an entry point on the
subprocess's ``PYTHONPATH``), so discovery goes through ``importlib.metadata`` as after pip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

RunCli = Callable[..., subprocess.CompletedProcess[str]]
CLEAN_ENV = {"VISIONKIT_STRICT_PLUGINS": "", "VISIONKIT_PLUGINS": "", "VISIONKIT_DISABLE_PLUGIN_AUTOLOAD": ""}

MISSING_ATTRIBUTE = """
from visionkit_core import hookimpl

def tinynet(*, num_classes: int, pretrained: bool = False, width: int = 8):
    import torch
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

@hookimpl
def visionkit_register_backbones(registry):
    registry.add("good", "vkcheck_holes:tinynet")
    registry.add("typo", "vkcheck_holes:tiny_net")
    registry.add("nomodule", "vkcheck_nowhere.models:net")
"""

UNTYPED_OPTION = """
from visionkit_core import hookimpl

def net(*, num_classes: int, pretrained: bool = False, width=None, depth: int = 2):
    raise AssertionError("not built by --no-smoke")

@hookimpl
def visionkit_register_backbones(registry):
    registry.add("net", "vkcheck_untyped:net")
"""

# A task that trains and validates but whose predict_step raises: smoke:predict must name it.
PREDICT_RAISES = """
import dataclasses
from visionkit_core import hookimpl

def __getattr__(name):
    if name != "ExplodingClassifier":
        raise AttributeError(name)
    from visionkit_classification.model import ImageClassifier

    class ExplodingClassifier(ImageClassifier):
        visionkit_task = dataclasses.replace(
            ImageClassifier.visionkit_task, name="exploding", export_formats=()
        )

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            raise RuntimeError("predict exploded")

    globals()[name] = ExplodingClassifier
    return ExplodingClassifier

@hookimpl
def visionkit_register_tasks(registry):
    registry.add("exploding", "vkcheck_boom:ExplodingClassifier")
"""


def install(site: Path, name: str, body: str) -> None:
    """Write plugin ``name`` as the installed distribution ``vkcheck-<name>`` (module ``vkcheck_<name>``)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"vkcheck_{name}.py").write_text(body, encoding="utf-8")
    info = site / f"vkcheck_{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vkcheck-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[visionkit]\n{name} = vkcheck_{name}\n")


def check(run_cli: RunCli, site: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = (
        {**CLEAN_ENV, "PYTHONPATH": str(site)}
        if site
        else {**CLEAN_ENV, "VISIONKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    )
    return run_cli(["plugins", "check", *args], env=env)


def lines(out: subprocess.CompletedProcess[str], status: str) -> list[str]:
    return [line for line in out.stdout.splitlines() if line.startswith(f"{status} ")]


def test_the_built_in_plugins_pass_the_contract(run_cli: RunCli) -> None:
    out = check(run_cli, None, "--no-smoke")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert not lines(out, "FAIL")
    assert out.stdout.splitlines()[-1].endswith("all passed")
    from visionkit_core.plugin.manager import BUILTIN_PLUGINS

    for module in BUILTIN_PLUGINS:  # every built-in was checked
        assert f"ok {module.split('.')[0]} plugin {module.split('.')[0]}: load:" in out.stdout, module


#: The built-ins' smoke runs in four groups of ~20 CPU s each (the suite's budget, issue 22):
#: group -> (plugins or components of them, lines the output must hold, smoke phases given to --skip).
#: Only the ONNX exports of the dense and R-CNN tasks (10-30 CPU s each through torch.onnx's dynamo
#: exporter) are skipped, because a dedicated test runs the same export and checks more (the
#: onnxruntime-vs-PyTorch check of `visionkit export`, then the sidecar and the outputs against the
#: task's own inference): in tests/plugins/segmentation/test_segmentation_e2e.py,
#: tests/plugins/detection/test_detection.py, tests/plugins/instance_segmentation/
#: test_instance_segmentation.py (`visionkit export`) and tests/plugins/keypoints/test_keypoint_task.py
#: (export_checkpoint, what `visionkit export` runs), each test_onnx_export_... / test_exported_onnx_...
#: The export phase itself runs here for classification and multilabel (ONNX and TorchScript) and
#: TorchScript for segmentation and detection; every other phase of every built-in runs here.
SMOKE_GROUPS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "classification-and-run-parts": (
        [
            "visionkit:classification",
            "visionkit_imagefolder",
            "visionkit_loggers",
            "visionkit_callbacks",
            "visionkit_wandb_images",
            "visionkit_devtools",
            "visionkit_sweep",
            "visionkit_serve",
            "visionkit_export",
            "visionkit_data",
        ],
        [
            "ok visionkit_classification task visionkit:classification: smoke:train: 1 batch of digits",
            "ok visionkit_classification task visionkit:classification: smoke:predict: 2 files",
            "ok visionkit_classification task visionkit:classification: smoke:export-onnx:",
            # --init-from reaches the task; --resume last --epochs 2 extends the run (last.ckpt, not last-v1)
            "ok visionkit_classification task visionkit:classification: smoke:init-from: --init-from: ",
            "ok visionkit_classification task visionkit:classification: smoke:resume: --resume last",
            "ok visionkit_imagefolder dataset visionkit:imagefolder: smoke:batch: train (4, 3, 32, 32)",
            "ok visionkit_imagefolder dataset visionkit:digits: smoke:setup: 10 classes",
            "ok visionkit_loggers logger visionkit:csv:",
        ],
        [],
    ),
    "multilabel-and-timm": (
        ["visionkit:multilabel", "visionkit_timm"],
        [
            "ok visionkit_timm backbone timm:*: list:",
            "ok visionkit_timm backbone timm:resnet10t: smoke:forward:",
            "ok visionkit_timm backbone timm:resnet10t: smoke:features:",
            "ok visionkit_classification task visionkit:multilabel: smoke:train: 1 batch of digit-sets",
            "ok visionkit_classification task visionkit:multilabel: smoke:export-onnx:",
        ],
        [],
    ),
    "dense-tasks": (
        ["visionkit_segmentation", "visionkit_detection"],
        [
            "ok visionkit_segmentation task visionkit:segmentation: smoke:train:",
            "ok visionkit_segmentation task visionkit:segmentation: smoke:resume: --resume last --epochs 2",
            "ok visionkit_segmentation task visionkit:segmentation: smoke:export-torchscript:",
            "ok visionkit_detection task visionkit:detection: smoke:train:",
            "ok visionkit_detection task visionkit:detection: smoke:init-from: --init-from: ",
            "ok visionkit_detection task visionkit:detection: smoke:export-torchscript:",
        ],
        ["smoke:export-onnx"],
    ),
    # --init-from loads the whole checkpoint (R-CNN tasks load `weights` into the whole model, its
    # backbone or the trunk, whichever it fits)
    "rcnn-tasks-and-torchvision": (
        ["visionkit_instance_segmentation", "visionkit_keypoints", "visionkit_torchvision"],
        [
            "ok visionkit_torchvision backbone visionkit:resnet18: smoke:forward: (1, 3, 32, 32) -> (1, 3)",
            "ok visionkit_torchvision backbone visionkit:resnet18: smoke:features: (1, 3, 32, 32) -> 5",
            *(
                f"ok visionkit_{plugin} task visionkit:{task}: smoke:{phase}"
                for plugin, task in (
                    ("instance_segmentation", "instance-segmentation"),
                    ("keypoints", "keypoints"),
                )
                for phase in ("train:", "validate:", "predict:", "resume: --resume", "init-from: --init")
            ),
            "ok visionkit_instance_segmentation dataset visionkit:instance-shapes: smoke:batch: train 4 x",
            "ok visionkit_keypoints dataset visionkit:stick-figures: smoke:batch: train 4 x",
        ],
        ["smoke:export-onnx"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("group", list(SMOKE_GROUPS))
def test_the_built_in_plugins_pass_their_smoke_runs(run_cli: RunCli, group: str) -> None:
    """Each group's plugins pass every check; the phases in the group's ``--skip`` list are reported
    as skipped and nothing else is (but what a built-in cannot run here: a test split it lacks, a
    dataset that needs a folder)."""
    plugins, expected_lines, skipped = SMOKE_GROUPS[group]
    out = check(run_cli, None, *plugins, *(f"--skip={phase}" for phase in skipped))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert not lines(out, "FAIL")
    for expected in expected_lines:
        assert any(line.startswith(expected) for line in out.stdout.splitlines()), expected
    asked = [line for line in lines(out, "skip") if line.endswith("not run (--skip)")]
    assert {line.split(": ")[1] for line in asked} == set(skipped), asked
    assert out.stdout.splitlines()[-1].endswith("all passed")
    assert "GPU available" not in out.stdout + out.stderr  # the smoke runs are quiet


def test_every_built_in_plugin_is_in_a_smoke_group() -> None:
    """Every built-in plugin is in a group, whole or component by component; each component in one."""
    from visionkit_core.kit.checks.conformance import component_name, components_of, selected
    from visionkit_core.plugin.manager import BUILTIN_PLUGINS, load_plugins

    plugins = load_plugins(autoload=False)
    builtins = [module.split(".")[0] for module in BUILTIN_PLUGINS]
    every = {p: [component_name(c) for c in components_of(plugins, p)] for p in builtins}
    loaded, checked = set(), []
    for names, _, _ in SMOKE_GROUPS.values():
        for plugin, only in selected(plugins, names).items():
            loaded.add(plugin)
            checked += [(plugin, name) for name in (every[plugin] if only is None else only)]
    assert loaded == set(builtins)
    assert sorted(checked) == sorted((p, name) for p in builtins for name in every[p])


def test_no_smoke_json_report_of_the_built_ins(run_cli: RunCli) -> None:
    out = check(run_cli, None, "visionkit_timm", "visionkit_loggers", "--no-smoke", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["plugins"] == ["visionkit_timm", "visionkit_loggers"]
    checks = {(r["name"], r["check"]) for r in report["results"]}
    assert ("timm:*", "import") in checks and ("visionkit:wandb", "options") in checks
    assert not any(c.startswith("smoke:") for _, c in checks)
    wandb = next(r for r in report["results"] if r["name"] == "visionkit:wandb" and r["check"] == "options")
    assert "tags: list[str] | None" in wandb["message"]


def test_a_registration_string_to_a_missing_attribute_or_module_is_named(
    run_cli: RunCli, tmp_path: Path
) -> None:
    install(tmp_path / "site", "holes", MISSING_ATTRIBUTE)
    out = check(run_cli, tmp_path / "site", "holes")
    assert out.returncode == 1, out.stdout + out.stderr
    failed = lines(out, "FAIL")
    assert len(failed) == 2, out.stdout
    assert failed[0].startswith("FAIL holes backbone holes:typo: import: vkcheck_holes:tiny_net: ")
    assert "tiny_net" in failed[0]
    assert failed[1].startswith("FAIL holes backbone holes:nomodule: import: vkcheck_nowhere.models:net: ")
    assert "vkcheck_nowhere" in failed[1]
    assert "ok holes backbone holes:good: smoke:forward: (1, 3, 32, 32) -> (1, 3) logits" in out.stdout
    assert "2 failed" in out.stdout.splitlines()[-1] and "Traceback" not in out.stderr


def test_an_option_without_a_usable_type_is_named(run_cli: RunCli, tmp_path: Path) -> None:
    install(tmp_path / "site", "untyped", UNTYPED_OPTION)
    out = check(run_cli, tmp_path / "site", "untyped", "--no-smoke")
    assert out.returncode == 1, out.stdout + out.stderr
    (failed,) = lines(out, "FAIL")
    assert failed.startswith("FAIL untyped backbone untyped:net: options: --set cannot check width")
    assert "no annotation and a default (None) of no usable type" in failed
    assert "depth" not in failed.partition("(")[0]


@pytest.mark.slow
def test_a_task_whose_predict_step_raises_is_named_with_the_phase(run_cli: RunCli, tmp_path: Path) -> None:
    install(tmp_path / "site", "boom", PREDICT_RAISES)
    out = check(run_cli, tmp_path / "site", "boom")
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr[-2000:]
    assert "ok boom task boom:exploding: smoke:train: 1 batch of digits" in out.stdout
    assert "ok boom task boom:exploding: smoke:validate:" in out.stdout
    (failed,) = lines(out, "FAIL")
    assert failed.startswith("FAIL boom task boom:exploding: smoke:predict: RuntimeError: predict exploded")
    assert "in predict_step" in failed  # where it was raised


def test_a_component_name_checks_that_component_and_an_unknown_phase_is_a_usage_error(
    run_cli: RunCli,
) -> None:
    out = check(run_cli, None, "visionkit:multilabel", "timm:*", "--no-smoke")
    assert out.returncode == 0, out.stdout + out.stderr
    names = {line.split(" ")[3].rstrip(":") for line in lines(out, "ok")}  # ok PLUGIN KIND NAME: CHECK:
    assert {"visionkit_classification", "visionkit:multilabel", "visionkit_timm", "timm:*"} <= names
    assert all(n.startswith(("visionkit_", "visionkit:multilabel", "timm:")) for n in names), names
    out = check(run_cli, None, "visionkit_timm", "--skip", "smoke:export-onnx", "--skip", "resumee")
    assert out.returncode == 2 and not out.stdout
    assert "--skip smoke:resumee: not a smoke phase; the phases are smoke:forward" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unknown_plugin_name_is_a_usage_error(run_cli: RunCli) -> None:
    out = check(run_cli, None, "nosuchplugin")
    assert out.returncode == 2
    assert "no plugin named 'nosuchplugin'" in out.stderr and "visionkit_timm" in out.stderr


# -- visionkit_core.testing, in process ----------------------------------------------------


def _plugin(name: str, factory: object) -> object:
    from visionkit_core import hookimpl
    from visionkit_core.plugin.manager import load_plugins

    module = types.ModuleType(f"vkcheck_{name}")
    module.visionkit_register_backbones = hookimpl(lambda registry: registry.add("net", factory))  # type: ignore[attr-defined]
    return load_plugins(builtins=(), autoload=False, extra=[(name, module)])


def test_assert_plugin_conforms_passes_a_good_plugin_and_lists_failures() -> None:
    from visionkit_core.testing import assert_plugin_conforms, check_plugin

    def good(*, num_classes: int, pretrained: bool = False, width: int = 4) -> object:
        import torch

        return torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, num_classes)
        )

    def wrong_shape(*, num_classes: int, pretrained: bool = False) -> object:
        import torch

        return torch.nn.Identity()

    report = assert_plugin_conforms("fine", plugins=_plugin("fine", good))
    assert [r.check for r in report.results] == ["load", "import", "options", "smoke:forward"]
    assert report.results[2].message == "width: int"

    skipped = check_plugin("fine", plugins=_plugin("fine", good), skip=["forward"]).results[-1]
    assert (skipped.check, skipped.status, skipped.message) == ("smoke:forward", "skip", "not run (--skip)")

    bad = _plugin("shapeless", wrong_shape)
    assert not check_plugin("shapeless", plugins=bad).ok
    with pytest.raises(AssertionError) as err:
        assert_plugin_conforms("shapeless", plugins=bad)
    assert "FAIL shapeless backbone shapeless:net: smoke:forward:" in str(err.value)
    assert "must give (1, 3) logits" in str(err.value)


def test_make_imagefolder_writes_real_pngs(tmp_path: Path) -> None:
    from PIL import Image

    from visionkit_core.testing import make_imagefolder, write_images

    root = make_imagefolder(tmp_path / "data", classes=("cat", "dog", "owl"), per_class=2, size=24)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert len(files) == 2 * 3 * 2 and files[0] == "train/cat/cat_0.png"
    with Image.open(root / "val" / "owl" / "owl_1.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (24, 24))
    flat = make_imagefolder(tmp_path / "flat", classes=("a", "b"), per_class=3, splits=())
    assert sorted(p.name for p in flat.iterdir()) == ["a", "b"]
    assert [p.name for p in write_images(tmp_path / "in", 2)] == ["image_0.png", "image_1.png"]


def test_the_testing_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, visionkit_core.testing\n"
        "heavy = ('torch', 'lightning', 'timm', 'wandb', 'PIL', 'numpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
