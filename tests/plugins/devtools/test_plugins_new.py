"""``visionkit plugins new``: the skeleton installs with pip, shows up, works, and its own test passes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from visionkit_devtools.scaffold import plugin_names

from visionkit_core.errors import UsageError

RunCli = Callable[..., subprocess.CompletedProcess[str]]
HOOKS = {
    "visionkit_register_backbones",
    "visionkit_register_tasks",
    "visionkit_register_datasets",
    "visionkit_register_callbacks",
    "visionkit_register_loggers",
    "visionkit_claim_data",
    "visionkit_add_commands",
    "visionkit_configure_trainer",
}


def pip_install_target(package: Path, target: Path) -> None:
    """``pip install`` ``package`` into ``target`` (for PYTHONPATH); offline when setuptools is here."""
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        *isolation,
        "--target",
        str(target),
    ]
    subprocess.run([*cmd, str(package)], check=True, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``plugins new acme`` run through the CLI, then pip-installed: (package folder, site folder)."""
    parent = tmp_path_factory.mktemp("new")
    out = subprocess.run(
        [sys.executable, "-m", "visionkit_core", "plugins", "new", "acme", "--dir", str(parent)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    package = parent / "visionkit-acme"
    assert f"Created visionkit-acme in {package}" in out.stdout
    pip_install_target(package, parent / "site")
    return package, parent / "site"


def test_the_skeleton_has_the_entry_point_every_hook_and_a_test(installed: tuple[Path, Path]) -> None:
    package, _ = installed
    files = sorted(
        str(p.relative_to(package)) for p in package.rglob("*") if p.is_file() and "build" not in p.parts
    )
    assert [f for f in files if ".egg-info" not in f] == [
        "README.md",
        "pyproject.toml",
        "src/visionkit_acme/__init__.py",
        "src/visionkit_acme/components.py",
        "src/visionkit_acme/plugin.py",
        "tests/test_plugin.py",
    ]
    assert (
        '[project.entry-points.visionkit]\nacme = "visionkit_acme.plugin"'
        in (package / "pyproject.toml").read_text()
    )
    plugin_source = (package / "src/visionkit_acme/plugin.py").read_text()
    assert all(f"def {hook}(" in plugin_source for hook in HOOKS)
    assert "import torch" not in plugin_source


def test_the_installed_skeleton_shows_up_in_plugins_list(
    installed: tuple[Path, Path], run_cli: RunCli
) -> None:
    _, site = installed
    out = run_cli(
        ["plugins", "list", "--json"], env={"PYTHONPATH": str(site), "VISIONKIT_STRICT_PLUGINS": "1"}
    )
    assert out.returncode == 0, out.stderr
    acme = next(p for p in json.loads(out.stdout)["plugins"] if p["name"] == "acme")
    assert (acme["distribution"], acme["version"], acme["status"]) == ("visionkit-acme", "0.1.0", "loaded")
    assert set(acme["hooks"]) == HOOKS
    assert acme["registered"] == [
        "backbone acme:tinynet",
        "task acme:smooth-classifier",
        "dataset acme:toy",
        "callback acme:epoch-file",
        "logger acme:jsonl",
    ]
    hello = run_cli(["acme-hello", "--name", "there"], env={"PYTHONPATH": str(site)})
    assert hello.returncode == 0 and hello.stdout.strip() == "Hello, there! (from visionkit-acme)"


#: The skeleton's three tests in two pytest runs (each a fresh interpreter importing torch; the CLI
#: test starts another): together they were ~40 CPU s, the per-test budget.
SKELETON_TESTS = {
    "registers_its_components or conforms": "2 passed, 1 deselected",
    "trains_one_epoch": "1 passed, 2 deselected",
}


@pytest.mark.slow
@pytest.mark.parametrize("selection", list(SKELETON_TESTS))
def test_the_skeletons_own_tests_pass_once_installed(
    installed: tuple[Path, Path], tmp_path: Path, selection: str
) -> None:
    package, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")]
    cmd += ["-k", selection, "--basetemp", str(tmp_path / "t")]
    out = subprocess.run(cmd, cwd=package, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert SKELETON_TESTS[selection] in out.stdout


def test_new_refuses_a_folder_that_is_not_empty(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "visionkit-acme").mkdir()
    (tmp_path / "visionkit-acme" / "keep.txt").write_text("mine")
    out = run_cli(["plugins", "new", "acme", "--dir", str(tmp_path)])
    assert out.returncode == 2 and "already exists and is not empty" in out.stderr
    assert (tmp_path / "visionkit-acme" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["A", "x", "1net", "my plugin", "timm", "visionkit-core", "wandb-images"])
def test_invalid_or_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        plugin_names(name)


def test_names_derive_package_and_distribution() -> None:
    names = plugin_names("visionkit-My_Net")
    assert (names.name, names.package, names.distribution) == (
        "my_net",
        "visionkit_my_net",
        "visionkit-my-net",
    )


def test_plugins_new_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom visionkit_core.cli import main\n"
        f"try:\n    main(['plugins', 'new', 'light', '--dir', {str(tmp_path)!r}])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(sorted(m for m in ('torch', 'lightning', 'timm', 'wandb') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"
