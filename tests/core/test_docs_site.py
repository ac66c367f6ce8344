"""The documentation site (mkdocs.yml, docs/) matches the code, without needing mkdocs.

- the generated reference pages (``scripts/gen_reference.py``) are current, and name every
  CLI command and option, every hookspec and every public name;
- every page is in the navigation and every navigation entry exists; local links and images
  resolve; the images are small;
- every ``visionkit ...`` command in a shell code block of the guides parses against the CLI
  (parsed and type-converted by click, not run);
- every ``$ visionkit ...`` example in troubleshooting.md prints the documented ``Error:``
  line with exit code 2.

``mkdocs build --strict`` itself runs in ``nox -s docs`` (and CI), where mkdocs is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATED = {"reference/cli.md", "reference/hooks.md", "reference/api.md"}
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_script("gen_reference")


@pytest.fixture(scope="module")
def cli_root(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    monkeypatch_module.setenv("VISIONKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    return gen.build_cli()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def generated(cli_root: Any) -> dict[str, str]:
    return {str(path.relative_to(DOCS)): text for path, text in gen.generate().items()}


def pages() -> list[str]:
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


# -------------------------------------------------------------------------------------
# Generated references
# -------------------------------------------------------------------------------------


def test_generated_reference_pages_are_current(generated: dict[str, str]) -> None:
    assert set(generated) == GENERATED
    stale = [name for name, text in generated.items() if (DOCS / name).read_text() != text]
    assert not stale, f"out of date: {stale}; run python scripts/gen_reference.py and commit the result"


def test_cli_reference_names_every_command_and_option(cli_root: Any, generated: dict[str, str]) -> None:
    text = generated["reference/cli.md"]
    missing = []
    for path, cmd in gen.walk_commands(cli_root):
        if path:
            title = "visionkit " + " ".join(path)
            if not re.search(rf"^#+ {re.escape(title)} {{ #{gen._anchor(path)} }}$", text, re.M):
                missing.append(title)
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-") and opt not in text:
                    missing.append(f"{' '.join(path)} {opt}")
    assert not missing, f"not in docs/reference/cli.md: {missing}"
    names = gen.command_names(cli_root)
    expected = {"visionkit train", "visionkit config show", "visionkit plugins list", "visionkit data check"}
    assert expected <= set(names)


def test_cli_reference_shows_defaults_and_required_options(generated: dict[str, str]) -> None:
    text = generated["reference/cli.md"]
    assert re.search(r"^\| `--seed <int>` \| `42` \|", text, re.M)  # RunConfig's default
    assert re.search(r"^\| `--ckpt <path>` \| required \|", text, re.M)
    assert re.search(r"^\| `-k, --topk <int>` \| `5` \|", text, re.M)  # the option's own default


def test_hook_reference_names_every_hookspec(generated: dict[str, str]) -> None:
    from visionkit_core.plugin import hookspecs

    text = generated["reference/hooks.md"]
    specs = sorted(n for n in dir(hookspecs) if n.startswith("visionkit_"))
    assert sorted(gen.hookspec_names()) == specs
    for name in specs:
        info = gen.hook_info(name)
        link = rf"\[`{name}`\]\(#visionkit_core\.plugin\.hookspecs\.{name}\)"
        row = re.search(rf"^\| {link} \| (yes|no) \| ([\d.]+) \|", text, re.M)
        assert row, f"{name} has no row in the hook table"
        firstresult = getattr(hookspecs, name).visionkit_spec["firstresult"]
        assert row[1] == ("yes" if firstresult else "no") and row[2] == info["since"]
        assert re.search(rf"^        - {name}$", text, re.M), f"{name} is not rendered by mkdocstrings"
    assert f"**{hookspecs.HOOKSPEC_VERSION}**" in text


def test_api_reference_names_every_public_name(generated: dict[str, str]) -> None:
    import visionkit_core

    text = generated["reference/api.md"]
    rendered = set(re.findall(r"^::: ([\w.]+)$", text, re.M))
    for name in visionkit_core.__all__:
        assert any(r.rsplit(".", 1)[-1] == name for r in rendered), f"{name} is not on the API page"
    assert {"visionkit_core.plugin.contract.TaskSpec", "visionkit_core.plugin.registry.Registrar"} <= rendered


def test_testing_helpers_have_a_page() -> None:
    text = (DOCS / "reference" / "testing.md").read_text()
    assert re.search(r"^::: visionkit_core\.testing$", text, re.M)
    assert (ROOT / "visionkit_core" / "testing.py").is_file()


# -------------------------------------------------------------------------------------
# Site configuration and navigation
# -------------------------------------------------------------------------------------


def _mkdocs() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _nav_files(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in _nav_files(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_files(_mkdocs()["nav"])
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    missing = [f for f in nav if not (DOCS / f).is_file()]
    assert not missing, f"in the nav of mkdocs.yml but not in docs/: {missing}"
    orphans = sorted(set(pages()) - set(nav))
    assert not orphans, f"not reachable from the nav of mkdocs.yml: {orphans}"


def test_site_configuration() -> None:
    config = _mkdocs()
    assert config["docs_dir"] == "docs" and config["site_dir"] == "site" and config["strict"] is True
    assert config["theme"]["name"] == "material"
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    assert "mkdocstrings" in plugins and "search" in plugins
    for hook in config.get("hooks", []):
        assert (ROOT / hook).is_file()
    python = next(p for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    for ext in python["mkdocstrings"]["handlers"]["python"]["options"].get("extensions", []):
        assert (ROOT / str(ext).split(":")[0]).is_file()
    validation = config["validation"]
    assert validation["anchors"] == "warn" and validation["unrecognized_links"] == "warn"
    assert "site/" in (ROOT / ".gitignore").read_text().split()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^docs = \[\n(\s+"[^"\n]+",\n)*\s+"mkdocs-material>=', pyproject, re.M)
    assert '"mkdocs", "build", "--strict"' in (ROOT / "noxfile.py").read_text()
    assert re.search(r"^nox -s docs$", (ROOT / ".ci" / "run").read_text(), re.M)


_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_local_links_and_images_resolve() -> None:
    broken = []
    for name in pages():
        page = DOCS / name
        for link, image in _LINK.findall(_outside_code(page.read_text())):
            target = (link or image).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            if not path.exists():
                broken.append(f"{name}: {target}")
    assert not broken, f"links to missing files: {broken}"


def test_images_are_small() -> None:
    images = [p for p in (DOCS / "assets").rglob("*") if p.suffix in {".png", ".jpg", ".svg", ".webp"}]
    assert len(images) >= 4, "the classification guide's plots (scripts/make_doc_plots.py) are missing"
    big = [f"{p.relative_to(DOCS)}: {p.stat().st_size >> 10} KiB" for p in images if p.stat().st_size > 150e3]
    assert not big, f"images over 150 KB (scripts/make_doc_plots.py scales them down): {big}"


# -------------------------------------------------------------------------------------
# Commands in the guides
# -------------------------------------------------------------------------------------

_FENCE = re.compile(
    r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)\s*$",
    re.M | re.S,
)
_SHELL_STOP = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<"}


def _outside_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def shell_blocks(text: str) -> Iterator[tuple[str, str]]:
    """``(language, body)`` of every fenced code block in a shell language."""
    for match in _FENCE.finditer(text):
        if match["lang"] in SHELL_LANGS:
            yield match["lang"], match["body"]


def visionkit_commands(lang: str, body: str) -> Iterator[list[str]]:
    """The argument lists of the ``visionkit`` commands in one shell block."""
    lines: list[str] = []
    pending = ""
    for raw in body.splitlines():
        if lang == "console" and not pending:
            if not raw.startswith("$ "):
                continue
            raw = raw[2:]
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]  # VAR=value visionkit ...
        if words[:1] in (["srun"], ["time"], ["exec"]):
            words = words[1:]
        if "-m" in words and "visionkit_core" in words:  # python -m / torchrun ... -m visionkit_core
            words = ["visionkit", *words[words.index("visionkit_core") + 1 :]]
        if words[:1] != ["visionkit"]:
            continue
        args = []
        for word in words[1:]:
            if word in _SHELL_STOP or word.startswith((">", "2>")):
                break
            args.append(word)
        yield args


def guide_commands() -> list[tuple[str, list[str]]]:
    found = []
    for name in pages():
        if name in GENERATED:
            continue
        for lang, body in shell_blocks((DOCS / name).read_text()):
            if name == "troubleshooting.md" and lang == "console":
                continue  # these fail on purpose: test_troubleshooting_examples runs them
            found += [(name, args) for args in visionkit_commands(lang, body)]
    return found


def parse_command(root: Any, args: list[str]) -> tuple[str, ...]:
    """Parse ``visionkit ARGS`` like the CLI does (options, types, sub-commands) without running it."""
    cmd, ctx, path = root, root.make_context("visionkit", list(args)), ()
    while gen.subcommands(cmd):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        assert rest, f"visionkit {' '.join(path)}: no sub-command given"
        name, sub, rest = cmd.resolve_command(ctx, rest)
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd, path = sub, (*path, name)
    return path


def test_commands_in_the_guides_parse(cli_root: Any) -> None:
    commands = guide_commands()
    assert len(commands) >= 40, "fewer visionkit commands found in the guides than expected"
    seen, failures = set(), []
    for page, args in commands:
        if not args or args[0] in ("--help", "-h", "--version"):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                seen.add(parse_command(cli_root, args))
        except Exception as err:  # click's UsageError, BadParameter, NoSuchOption, ...
            message = getattr(err, "format_message", lambda e=err: str(e))()
            failures.append(f"{page}: visionkit {shlex.join(args)}\n    {type(err).__name__}: {message}")
    assert not failures, "commands in the docs that the CLI rejects:\n" + "\n".join(failures)
    assert {("train",), ("predict",), ("export",), ("data", "check")} <= seen


def test_a_wrong_command_in_a_guide_would_be_caught(cli_root: Any) -> None:
    md = (
        "```bash\nvisionkit train --epoch 5 \\\n    --data ./x   # comment\n"
        "VISIONKIT_DEBUG=1 visionkit predict --ckpt a.ckpt x.png > out.txt\n```\n"
    )
    (lang, body), *_ = shell_blocks(md)
    commands = list(visionkit_commands(lang, body))
    assert commands == [["train", "--epoch", "5", "--data", "./x"], ["predict", "--ckpt", "a.ckpt", "x.png"]]
    from typer._click.exceptions import BadParameter, NoSuchOption  # Typer's own click

    with pytest.raises(NoSuchOption, match="epoch"):
        parse_command(cli_root, commands[0])
    with pytest.raises(BadParameter, match="integer"):
        parse_command(cli_root, ["train", "--epochs", "ten"])
    assert parse_command(cli_root, commands[1]) == ("predict",)


# -------------------------------------------------------------------------------------
# Troubleshooting: the documented errors are the real ones
# -------------------------------------------------------------------------------------


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


#: The files the troubleshooting examples name, made in the folder they run in.
FIXTURES: dict[str, Callable[[Path], None]] = {
    "one-class": lambda d: [_png(d / "one-class" / "cat" / f"{i}.png") for i in range(2)],
    "loose-images": lambda d: [_png(d / "loose-images" / f"{i}.png") for i in range(2)],
    "mismatch": lambda d: [
        _png(d / "mismatch" / split / cls / "0.png")
        for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "owl")))
        for cls in classes
    ],
    "empty-class": lambda d: (_png(d / "empty-class" / "cat" / "0.png"), (d / "empty-class" / "dog").mkdir()),
    "val-only": lambda d: [_png(d / "val-only" / "val" / cls / "0.png") for cls in ("cat", "dog")],
    "photo.png": lambda d: _png(d / "photo.png"),
    "bad.yaml": lambda d: (d / "bad.yaml").write_text("epochs: [1\n"),
    "unknown-key.yaml": lambda d: (d / "unknown-key.yaml").write_text("epoch: 5\n"),
    "empty.ckpt": lambda d: (d / "empty.ckpt").write_bytes(b""),
    "junk.ckpt": lambda d: (d / "junk.ckpt").write_bytes(bytes(range(7, 71))),
    "junk.pt": lambda d: (d / "junk.pt").write_bytes(bytes(range(7, 71))),
    "runs": lambda d: (d / "runs").mkdir(exist_ok=True),
}


def troubleshooting_examples() -> list[tuple[str, str]]:
    """``(command, documented error line)`` of every console example in troubleshooting.md."""
    examples = []
    for lang, body in shell_blocks((DOCS / "troubleshooting.md").read_text()):
        if lang != "console":
            continue
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ visionkit "):
                error = lines[i + 1] if i + 1 < len(lines) else ""
                assert error.startswith("Error: "), f"{line!r} is not followed by its 'Error:' line"
                examples.append((line[2:], error))
    return examples


def test_troubleshooting_examples_print_the_documented_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionkit_core.cli import main
    from visionkit_core.plugin.manager import set_plugins

    examples = troubleshooting_examples()
    assert len(examples) >= 30
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VISIONKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VISIONKIT_DEBUG", raising=False)
    for make in FIXTURES.values():
        make(tmp_path)
    wrong = []
    try:
        for command, documented in examples:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(shlex.split(command)[1:])
                    code: Any = 0
                except SystemExit as exc:
                    code = exc.code
            errors = [line for line in err.getvalue().splitlines() if line.startswith("Error: ")]
            actual = errors[-1] if errors else err.getvalue().strip()[-300:]
            expected = documented.removesuffix("...")
            shortened = documented.endswith("...")
            ok = code == 2 and (actual.startswith(expected) if shortened else actual == expected)
            if not ok:
                wrong.append(f"$ {command}\n  documented: {documented}\n  actual (exit {code}): {actual}")
    finally:
        set_plugins(None)
    assert not wrong, "troubleshooting.md is out of date:\n" + "\n".join(wrong)


def test_troubleshooting_fixtures_are_named_on_the_page() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    unused = [name for name in FIXTURES if name not in text]
    assert not unused, f"fixtures no example uses: {unused}"
