"""nox sessions: what CI runs and what a person runs locally (`nox -l` lists them).

Sessions run in the project's own .venv (scripts/bootstrap made it, with the pinned tools),
so nothing is downloaded at session time: CI and air-gapped machines run them offline.
"""

from __future__ import annotations

import sys

import nox

from astrago_deploy import checks

PYTHON = sys.executable  # the .venv nox runs from: tools and the package are there

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def lint(session: nox.Session) -> None:
    """Lint: ruff, yamllint, helm lint, charts.verify, value-override and plaintext-secret checks."""
    session.run(PYTHON, "-m", "ruff", "check", "src", "tests", "tasks.py", "noxfile.py")
    session.run(PYTHON, "-m", "ruff", "format", "--check", "src", "tasks.py", "noxfile.py")
    checks.run_lint(session.log, session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package, tasks.py and this noxfile with mypy --strict."""
    session.run(PYTHON, "-m", "mypy", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest; arguments after -- go to pytest)."""
    session.run(PYTHON, "-m", "pytest", *(session.posargs or ["-q"]))
