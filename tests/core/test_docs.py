"""The docs match the code: every command and option is in the CLI reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from visionkit_core.cli.app import build_app
from visionkit_core.plugin.manager import load_plugins

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    # duck-typed: Typer >= 0.2x ships its own click, whose Group is not a click.Group
    out = [(path, cmd)]
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        out += _walk(sub, (*path, name))
    return out


def test_walk_reaches_sub_commands() -> None:
    paths = {path for path, _ in _walk(typer.main.get_command(build_app(load_plugins(autoload=False))))}
    assert {("train",), ("config", "show"), ("plugins", "list"), ("data", "check")} <= paths


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    text = (DOCS / "cli.md").read_text()
    root = typer.main.get_command(build_app(load_plugins(autoload=False)))
    missing = []
    for path, cmd in _walk(root):
        if path and f"visionkit {' '.join(path)}" not in text and not _listed_group(path, text):
            missing.append(" ".join(path))
        for param in cmd.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--") and opt not in text:
                    missing.append(f"{' '.join(path)} {opt}")
    assert not missing, f"not in docs/cli.md: {missing}"


def _listed_group(path: tuple[str, ...], text: str) -> bool:
    # "visionkit tasks list | loggers list | callbacks list" documents several at once
    return f"{' '.join(path)}" in text


def test_docs_link_to_existing_pages() -> None:
    import re

    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w\-]+\.md)(?:#[\w\-]*)?\)", page.read_text()):
            assert (DOCS / target).is_file(), f"{page.name} links to missing {target}"
