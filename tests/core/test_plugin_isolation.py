"""Third-party plugins installed for real (dist-info on PYTHONPATH), seen through the CLI in a subprocess.

Each fixture writes installed distributions (``<name>-1.0.dist-info/{METADATA,entry_points.txt}``
plus the plugin module) into a folder that becomes the subprocess's ``PYTHONPATH``, so
discovery goes through ``importlib.metadata`` entry points exactly as after ``pip install``.
A plugin module records that it was imported by creating ``$VKFAKE_IMPORTS/<name>``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RunCli = Callable[..., subprocess.CompletedProcess[str]]

_PRELUDE = """\
from __future__ import annotations
import os, pathlib
if os.environ.get("VKFAKE_IMPORTS"):
    pathlib.Path(os.environ["VKFAKE_IMPORTS"], {name!r}).touch()
from visionkit_core import hookimpl
"""

GOOD = """
@hookimpl
def visionkit_register_backbones(registry):
    registry.add("net", "math:sqrt", description="a good net")
"""
BROKEN_ON_IMPORT = """
raise ImportError("cannot import name 'Missing' from 'somewhere'")
"""
RAISES_WHILE_REGISTERING = """
@hookimpl
def visionkit_register_datasets(registry):
    registry.add("images", "math:sqrt")

@hookimpl
def visionkit_register_callbacks(registry):
    raise RuntimeError("registration exploded")
"""
TYPO = """
@hookimpl
def visionkit_register_backbone(registry):
    raise AssertionError("never called")
"""
BROKEN_COMMAND = """
@hookimpl
def visionkit_add_commands(app):
    from typing import Annotated  # only local: Typer cannot resolve the annotation later
    import typer

    @app.command("broken-hello")
    def hello(name: Annotated[str, typer.Option()] = "x") -> None:
        print("never")
"""


def shared_namespace(name: str) -> str:
    return f"""
@hookimpl
def visionkit_register_backbones(registry):
    registry.add("shared:{name}net", "math:sqrt")
    registry.add("twin", "math:sqrt")
"""


def install_fake(site: Path, name: str, body: str, *, version: str = "1.0") -> str:
    """Write plugin ``name`` as installed distribution ``vkfake-<name>``; return the distribution name."""
    module = f"vkfake_{name}"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(_PRELUDE.format(name=name) + body, encoding="utf-8")
    info = site / f"vkfake_{name}-{version}.dist-info"
    info.mkdir()
    dist = f"vkfake-{name}"
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(f"[visionkit]\n{name} = {module}\n", encoding="utf-8")
    return dist


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An installed good plugin and one that raises on import."""
    site = tmp_path / "site"
    install_fake(site, "good", GOOD)
    install_fake(site, "broken", BROKEN_ON_IMPORT)
    return site


@pytest.fixture
def cli(run_cli: RunCli, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli`` with a clean plugin environment; ``site`` goes on PYTHONPATH."""
    imports = tmp_path / "imports"
    imports.mkdir()

    def run(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {
            "PYTHONPATH": str(site),
            "VKFAKE_IMPORTS": str(imports),
            "VISIONKIT_STRICT_PLUGINS": "",
            "VISIONKIT_DISABLE_PLUGIN_AUTOLOAD": "",
            "VISIONKIT_PLUGINS": "",
            "VISIONKIT_DEBUG": "",
        }
        return run_cli(list(args), env={**base, **env})

    run.imported = lambda: sorted(p.name for p in imports.iterdir())  # type: ignore[attr-defined]
    return run


def plugins_json(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)["plugins"]}


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("visionkit: warning:")]


# -- a plugin that raises on import -------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["plugins", "list"]])
def test_commands_work_and_name_a_plugin_that_raises_on_import(cli, site: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    out = cli(site, *args)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    [warning] = warnings(out.stderr)  # once, on one line
    assert "plugin 'broken' (vkfake-broken 1.0) failed: import: ImportError: cannot import name" in warning


def test_plugins_list_records_the_failure_and_keeps_the_good_plugin(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    plugins = plugins_json(cli(site, "plugins", "list", "--json"))
    broken, good = plugins["broken"], plugins["good"]
    assert (broken["status"], broken["distribution"], broken["version"]) == ("failed", "vkfake-broken", "1.0")
    assert broken["errors"] == ["import: ImportError: cannot import name 'Missing' from 'somewhere'"]
    assert (good["status"], good["builtin"], good["registered"]) == ("loaded", False, ["backbone good:net"])
    assert plugins["visionkit_torchvision"]["builtin"] is True


def test_version_lists_plugin_versions(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(site, "--version")
    assert out.returncode == 0
    assert "good: vkfake-good 1.0 [loaded]" in out.stdout
    assert "broken: vkfake-broken 1.0 [failed]" in out.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_strict_mode_fails_naming_the_plugin(cli, site: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    out = (
        cli(site, "--strict-plugins", "--help")
        if how == "flag"
        else cli(site, "--help", VISIONKIT_STRICT_PLUGINS="1")
    )
    assert out.returncode == 3
    assert "plugin 'broken' (vkfake-broken 1.0) failed: import: ImportError" in out.stderr
    assert "Traceback" not in out.stderr


def test_autoload_switch_loads_builtins_only(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(
        site, "plugins", "list", "--json", VISIONKIT_DISABLE_PLUGIN_AUTOLOAD="1", VISIONKIT_STRICT_PLUGINS="1"
    )
    assert all(p["builtin"] for p in plugins_json(out).values())
    assert out.stderr == "" and cli.imported() == []


def test_allow_list_loads_only_the_named_plugins(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(site, "plugins", "list", "--json", VISIONKIT_PLUGINS="good", VISIONKIT_STRICT_PLUGINS="1")
    plugins = plugins_json(out)
    assert plugins["good"]["status"] == "loaded" and plugins["broken"]["status"] == "disabled"
    assert warnings(out.stderr) == [] and cli.imported() == ["good"]


def test_no_plugin_blocks_one(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(site, "--strict-plugins", "--no-plugin", "broken", "plugins", "list", "--json")
    plugins = plugins_json(out)
    assert plugins["broken"]["status"] == "disabled" and plugins["good"]["status"] == "loaded"
    assert warnings(out.stderr) == [] and cli.imported() == ["good"]


# -- failures after import ----------------------------------------------------------------


def test_a_hook_raising_while_registering_skips_the_whole_plugin(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "halfway", RAISES_WHILE_REGISTERING)
    out = cli(site, "datasets", "list")
    assert out.returncode == 0 and "halfway:images" not in out.stdout  # its other hook's work is dropped too
    [warning] = warnings(out.stderr)
    assert "'halfway' (vkfake-halfway 1.0) failed: visionkit_register_callbacks: RuntimeError" in warning
    assert warning.count("registration exploded") == 1
    assert cli(site, "datasets", "list", VISIONKIT_STRICT_PLUGINS="1").returncode == 3


def test_an_unknown_hook_is_reported_by_check_pending_with_a_suggestion(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "typo", TYPO)
    plugin = plugins_json(cli(site, "plugins", "list", "--json"))["typo"]
    assert plugin["status"] == "failed"
    assert plugin["errors"] == [
        "unknown hook: PluginValidationError: implements unknown hook "
        "'visionkit_register_backbone' (did you mean visionkit_register_backbones?)"
    ]


def test_a_command_that_cannot_be_built_does_not_break_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "badcmd", BROKEN_COMMAND)
    out = cli(site, "--help")
    assert out.returncode == 0 and "broken-hello" not in out.stdout
    [warning] = warnings(out.stderr)
    assert "'badcmd' (vkfake-badcmd 1.0) failed: visionkit_add_commands: NameError" in warning
    assert plugins_json(cli(site, "plugins", "list", "--json"))["badcmd"]["status"] == "failed"


# -- conflicts and names ------------------------------------------------------------------


@pytest.fixture
def rivals(tmp_path: Path) -> Path:
    """Two distributions that both claim the namespace ``shared`` and both add a bare ``twin``."""
    site = tmp_path / "site"
    install_fake(site, "alpha", shared_namespace("alpha"))
    install_fake(site, "beta", shared_namespace("beta"))
    return site


def test_two_distributions_claiming_a_namespace_is_an_error_naming_both(cli, rivals: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(rivals, "train", "--backbone", "shared:alphanet", "--epochs", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    error = out.stderr.splitlines()[-1]
    assert error.startswith("Error: namespace 'shared' is claimed by two distributions")
    assert "vkfake-alpha 1.0" in error and "vkfake-beta 1.0" in error
    beta = plugins_json(cli(rivals, "plugins", "list", "--json"))["beta"]
    assert any("vkfake-alpha" in e and "vkfake-beta" in e for e in beta["errors"])


def test_a_bare_name_in_several_namespaces_lists_the_qualified_names(cli, rivals: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(rivals, "train", "--backbone", "twin", "--epochs", "1")
    assert out.returncode == 2
    assert "backbone name 'twin' is ambiguous: it is provided as alpha:twin, beta:twin" in out.stderr


def test_an_unknown_namespace_lists_the_installed_ones(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(site, "train", "--backbone", "nosuch:net", "--epochs", "1")
    assert out.returncode == 2
    assert "unknown backbone namespace 'nosuch'" in out.stderr
    assert "installed backbone namespaces: good, timm, torchvision, visionkit" in out.stderr


def test_a_conflict_stays_an_error_after_another_plugin_is_skipped(cli, rivals: Path) -> None:  # type: ignore[no-untyped-def]
    install_fake(rivals, "badcmd", BROKEN_COMMAND)  # skipped after the registry was built: it is rebuilt
    out = cli(rivals, "train", "--backbone", "shared:alphanet", "--epochs", "1")
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].startswith("Error: namespace 'shared' is claimed by two distributions")


# -- a broken plugin is named wherever its names are asked for -----------------------------

RAISES_AFTER_NAMING_A_NAMESPACE = """
@hookimpl
def visionkit_register_backbones(registry):
    registry.add("elsewhere:net", "math:sqrt")
    raise RuntimeError("registration exploded")
"""
BAD_FACTORY_STRING = """
@hookimpl
def visionkit_register_backbones(registry):
    registry.add("tinynet", "vkfake_acme.models:nope")
"""


def last_error(out: subprocess.CompletedProcess[str]) -> str:
    return out.stderr.strip().splitlines()[-1]


def test_a_name_of_a_plugin_that_failed_to_import_names_the_plugin_and_its_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "acme", BROKEN_ON_IMPORT)
    out = cli(site, "train", "--backbone", "acme:tinynet", "--epochs", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert last_error(out) == (
        "Error: backbone 'acme:tinynet' is unavailable: plugin 'acme' (vkfake-acme 1.0) is installed but "
        "failed to load: ImportError: cannot import name 'Missing' from 'somewhere'; fix or reinstall it "
        "(VISIONKIT_DEBUG=1 for the traceback)"
    )


def test_debug_shows_the_traceback_of_the_plugin_that_failed_to_import(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "acme", BROKEN_ON_IMPORT)
    out = cli(site, "train", "--backbone", "acme:tinynet", "--epochs", "1", VISIONKIT_DEBUG="1")
    assert out.returncode != 0
    assert str(site / "vkfake_acme" / "__init__.py") in out.stderr  # where the plugin's import failed
    assert "ImportError: cannot import name 'Missing' from 'somewhere'" in out.stderr
    assert "PluginUnavailableError: backbone 'acme:tinynet' is unavailable" in out.stderr


def test_a_namespace_named_by_a_plugin_whose_registration_raised_names_it(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "odd", RAISES_AFTER_NAMING_A_NAMESPACE)
    out = cli(site, "train", "--backbone", "elsewhere:net", "--epochs", "1")
    assert out.returncode == 2
    assert last_error(out).startswith(
        "Error: backbone 'elsewhere:net' is unavailable: plugin 'odd' (vkfake-odd 1.0) is installed but "
        "failed to load: visionkit_register_backbones: RuntimeError: registration exploded; fix or "
    )


def test_a_disabled_plugins_name_says_it_is_disabled(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(site, "--no-plugin", "good", "train", "--backbone", "good:net", "--epochs", "1")
    assert out.returncode == 2
    assert (
        "backbone 'good:net' is unavailable: plugin 'good' (vkfake-good 1.0) is installed but disabled"
        in (last_error(out))
    )


def test_a_factory_string_that_cannot_be_imported_names_plugin_component_and_string(
    cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    install_fake(site, "acme", BAD_FACTORY_STRING)
    (site / "vkfake_acme" / "models.py").write_text("TINY = 1\n", encoding="utf-8")
    out = cli(site, "train", "--backbone", "acme:tinynet", "--epochs", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "unexpected" not in out.stderr
    assert last_error(out) == (
        "Error: backbone 'acme:tinynet' from plugin 'acme' (vkfake-acme 1.0): cannot import "
        "'vkfake_acme.models:nope': AttributeError: module 'vkfake_acme.models' has no attribute 'nope'"
    )
