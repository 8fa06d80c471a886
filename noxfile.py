"""nox sessions: what CI runs and what a person runs locally (`nox -l` lists them).

Sessions run in the project's own .venv (scripts/bootstrap made it, with the pinned tools),
so nothing is downloaded at session time: CI and air-gapped machines run them offline.
Render sessions are one per environment, discovered like the helmfile discovers them, so a
new customer folder gets its own session with no edit here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.lint import checks
from astrago_deploy.model import environments
from astrago_deploy.promote import gate

ROOT = Path(__file__).resolve().parent
PYTHON = sys.executable  # the .venv nox runs from: tools and the package are there
INV = [PYTHON, "-m", "invoke", "--search-root", str(ROOT)]
ENVIRONMENTS = [env.name for env in environments.discover(RepoLayout.at(ROOT))]

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "render", "validate", "images", "tests"]


@nox.session
def lint(session: nox.Session) -> None:
    """Lint: ruff, actionlint, yamllint, helm lint, charts.verify, overrides, plaintext secrets, generated values."""
    session.run(PYTHON, "-m", "ruff", "check", "src", "tests", "benchmarks", "tasks.py", "noxfile.py")
    session.run(PYTHON, "-m", "ruff", "format", "--check", "src", "tasks.py", "noxfile.py")
    actionlint(session)
    try:
        checks.run_lint(session.log, session.posargs, RepoLayout.at(ROOT))
    except AstragoError as exc:
        session.error(str(exc))


def actionlint(session: nox.Session) -> None:
    """The GitHub workflow and its local actions, checked by actionlint (the `ci` extra).

    Without it (machines that cannot install it: see pyproject.toml) the check is reported as
    not run; in GitHub Actions, where CI installs it, its absence is an error.
    """
    binary = Path(PYTHON).parent / "actionlint"
    if not binary.is_file():
        message = "actionlint is not installed (ASTRAGO_EXTRAS=dev,ci scripts/bootstrap): workflows not linted"
        if os.environ.get("GITHUB_ACTIONS") == "true":
            session.error(message)
        session.warn(message)
        return
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.y*ml"))
    # shellcheck and pyflakes are left out so the result is the same on every machine,
    # whatever happens to be on PATH there.
    session.run(str(binary), "-shellcheck=", "-pyflakes=", *workflows)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package, tasks.py and this noxfile with mypy --strict."""
    session.run(PYTHON, "-m", "mypy", *session.posargs)


@nox.session
@nox.parametrize("env", [nox.param(name, id=name) for name in ENVIRONMENTS])
def render(session: nox.Session, env: str) -> None:
    """Render one environment offline into rendered/<env>/ (helmfile template, vendored charts)."""
    session.run(*INV, "render", "--env", env, *session.posargs)


@nox.session
def validate(session: nox.Session) -> None:
    """Validate every rendered environment against Kubernetes and CRD schemas, offline."""
    session.run(*INV, "render", "--all")
    session.run(*INV, "validate", *session.posargs)


@nox.session
def images(session: nox.Session) -> None:
    """Build every environment's image inventory: every reference parses, offline ones match the site registry."""
    session.run(*INV, "images.list", "--all", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on every core (pytest -n auto; arguments after -- replace those), naming the 15 slowest."""
    # Each worker takes the next test when it is free (worksteal): the slow end-to-end tests
    # do not pile up on one worker. The slowest are named so a CI run shows where its minutes went.
    defaults = ["-q", "-n", "auto", "--dist", "worksteal", "--durations=15"]
    session.run(PYTHON, "-m", "pytest", *(session.posargs or defaults))


@nox.session(default=False)
def promotion(session: nox.Session) -> None:
    """Promotion gate: a pull request (`-- BASE HEAD`, or GitHub's) must promote; a pushed stage renders, validates."""
    layout = RepoLayout.at(ROOT)
    try:
        if len(session.posargs) not in (0, 2):
            raise AstragoError("usage: nox -s promotion [-- BASE HEAD] (without them, from GitHub Actions' event)")
        event = gate.PullRequest(*session.posargs) if session.posargs else gate.ci_event(os.environ)
        if isinstance(event, gate.PullRequest):
            result = gate.check(GitRepo(ROOT), layout, event.base, event.head)
        else:
            envs = gate.deployed_by_branch(layout, event.branch)
    except AstragoError as exc:
        session.error(str(exc))
    if isinstance(event, gate.PullRequest):
        for message in result.messages:
            (session.log if result.ok else session.warn)(message)
        if not result.ok:
            session.error(f"pull request into {result.base} refused: it is not a promotion along the path")
        return
    if not envs:
        session.log(f"{event.branch} is not a stage branch: nothing to render")
        return
    flags = [flag for env in envs for flag in ("--env", env)]
    session.run(*INV, "render", *flags)
    session.run(*INV, "validate", *flags)


@nox.session
def bench(session: nox.Session) -> None:
    """Print benchmark figures: sync, render vs helmfile, an upgrade, a promotion, registry and bundle vs skopeo."""
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run(PYTHON, str(script), *session.posargs)
