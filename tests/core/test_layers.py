"""The three layers (docs/architecture.md): the core never imports a plugin; plugins never import each other.

The core (and its kit) reaches plugins only through the registry and hooks (the built-ins are
module-path strings in ``BUILTIN_PLUGINS``); a part two plugins need goes into the kit. Every
import statement counts, function-level ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists())


def _imports(package_dir: Path) -> dict[str, set[str]]:
    """Top-level package of every module each file imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "templates" in path.parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_built_in_plugins_are_found() -> None:
    assert {"visionkit_classification", "visionkit_devtools", "visionkit_timm"} <= set(PLUGINS)


def test_the_core_and_the_kit_import_no_plugin() -> None:
    bad = {
        f: sorted(n & set(PLUGINS)) for f, n in _imports(ROOT / "visionkit_core").items() if n & set(PLUGINS)
    }
    assert not bad, bad


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_plugin_imports_no_other_plugin(plugin: str) -> None:
    others = set(PLUGINS) - {plugin}
    bad = {f: sorted(n & others) for f, n in _imports(ROOT / "plugins" / plugin).items() if n & others}
    assert not bad, bad
