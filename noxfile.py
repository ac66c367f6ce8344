"""nox sessions: tests, lint, typecheck, plugin (the third-party plugin end to end; CI runs it), docs,
bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

EXAMPLE_PLUGIN = "examples/visionkit-plugin-example"


def _extra(name: str) -> list[str]:
    """The requirements of pyproject.toml's optional dependency group ``name``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: let pip read the extra (installs visionkit's dependencies too)
        return [f".[{name}]"]
    with open("pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["optional-dependencies"][name])


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff>=0.5")
    session.run(
        "ruff",
        "check",
        "visionkit_core",
        "plugins",
        "tests",
        "examples",
        "benchmarks",
        "scripts",
        "noxfile.py",
        *session.posargs,
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the core with mypy."""
    session.install("mypy>=1.10", "types-PyYAML", "pluggy>=1.5", "typer>=0.12")
    session.run("mypy", *session.posargs)


@nox.session(venv_backend="virtualenv")
def plugin(session: nox.Session) -> None:
    """Install the example plugin next to visionkit in a fresh env and run its end-to-end tests."""
    session.install("-e", ".")
    session.install(EXAMPLE_PLUGIN, "pytest>=8")
    session.run("pytest", f"{EXAMPLE_PLUGIN}/tests", *session.posargs)


@nox.session(venv_backend="virtualenv", default=False)
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with ``mkdocs build --strict`` (broken links and anchors fail).

    The generated reference pages are checked first: ``scripts/gen_reference.py --check`` fails
    when docs/reference/ is out of date with the code (rerun it without ``--check``).
    Extra arguments go to mkdocs, e.g. ``nox -s docs -- --site-dir /tmp/site``.
    """
    # The site needs neither torch nor lightning: mkdocstrings reads the source statically and
    # the CLI reference imports only typer and pluggy. So: visionkit without its dependencies,
    # the docs extra, and the two packages the command-line app is built from.
    session.install("--no-deps", "-e", ".")
    session.install(*_extra("docs"), "typer>=0.12", "pluggy>=1.5")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("python", "scripts/gen_reference.py", "--check")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session(venv_backend="virtualenv", default=False)
def bench(session: nox.Session) -> None:
    """Run the ratio benchmarks; writes benchmarks/results/<date>.json and <date>.md.

    Arguments go to benchmarks/run.py, e.g. ``nox -s bench -- --only loader,startup`` or ``-- --quick``.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)
