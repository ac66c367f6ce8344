"""nox sessions: tests, lint, typecheck, plugin (the third-party plugin end to end; CI runs it), bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

EXAMPLE_PLUGIN = "examples/visionkit-plugin-example"


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
def bench(session: nox.Session) -> None:
    """Run the ratio benchmarks; writes benchmarks/results/<date>.json and <date>.md.

    Arguments go to benchmarks/run.py, e.g. ``nox -s bench -- --only loader,startup`` or ``-- --quick``.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)
