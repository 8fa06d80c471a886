"""inv deploy / destroy: the exact helmfile command lines, and every refusal before anything runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from astrago_deploy.core.errors import AstragoError, HelmfileError, InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.deploy import deployer as deploy
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {{server: "https://127.0.0.1:9"}}
users:
- name: u
  user: {{}}
contexts:
- name: astrago-dev
  context: {{cluster: nowhere, user: u}}
- name: astrago-prod
  context: {{cluster: nowhere, user: u}}
current-context: {current}
"""


def tools_with_context(layout: RepoLayout, tmp_path: Path, current: str) -> PinnedTools:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current=current))
    return PinnedTools(layout, environ={**os.environ, "KUBECONFIG": str(kubeconfig)})


def test_sync_command_line_with_selectors(synced_project: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(synced_project, tmp_path, "astrago-dev")
    plan = deploy.plan(synced_project, "dev", "sync", tier="infrastructure", app="harbor", tools=tools)
    bin_dir = synced_project.tools_bin
    assert plan.command.argv == [
        str(bin_dir / "helmfile"), "--helm-binary", str(bin_dir / "helm"),
        "-f", str(synced_project.helmfile), "-e", "dev", "--kube-context", "astrago-dev",
        "-l", "tier=infrastructure,app=harbor", "--skip-deps", "sync",
    ]
    assert plan.command.cwd == synced_project.root
    assert plan.command.env["KUBECONFIG"] == str(tmp_path / "kubeconfig")


def test_destroy_command_line(synced_project: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(synced_project, tmp_path, "astrago-prod")
    plan = deploy.plan(synced_project, "prod", "destroy", tools=tools)
    assert plan.command.argv[3:] == ["-f", str(synced_project.helmfile), "-e", "prod", "--kube-context",
                                     "astrago-prod", "--skip-deps", "destroy"]


def test_the_command_really_runs_helmfile_against_the_named_context(synced_project: RepoLayout, tmp_path: Path) -> None:
    """No cluster here: helmfile gets as far as helm talking to the (unreachable) API server."""
    tools = tools_with_context(synced_project, tmp_path, "astrago-dev")
    plan = deploy.plan(synced_project, "dev", "sync", app="keycloak", tools=tools)
    with pytest.raises(HelmfileError) as err:
        plan.command.run()
    assert "127.0.0.1:9" in err.value.stderr or "127.0.0.1:9" in err.value.stdout


def test_context_mismatch_is_refused(synced_project: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(synced_project, tmp_path, "astrago-prod")
    with pytest.raises(AstragoError, match=r"current kube context is 'astrago-prod', but dev deploys to 'astrago-dev'"):
        deploy.plan(synced_project, "dev", "sync", tools=tools)


def test_environment_without_context_is_refused(synced_project: RepoLayout, tmp_path: Path) -> None:
    values = synced_project.environments_dir / "dev" / "values.yaml"
    values.write_text(values.read_text().replace("kubeContext: astrago-dev", 'kubeContext: ""'))
    tools = tools_with_context(synced_project, tmp_path, "astrago-dev")
    with pytest.raises(AstragoError, match=r"cluster\.kubeContext is not set"):
        deploy.plan(synced_project, "dev", "sync", tools=tools)


def test_failing_verify_is_refused_before_anything_runs(synced_project: RepoLayout, tmp_path: Path) -> None:
    with (synced_project.chart_dir("harbor", "1.14.2") / "values.yaml").open("a") as handle:
        handle.write("# edited by hand\n")
    tools = tools_with_context(synced_project, tmp_path, "astrago-dev")
    with pytest.raises(AstragoError, match=r"(?s)refusing to sync dev: charts.verify failed:.*harbor"):
        deploy.plan(synced_project, "dev", "sync", tools=tools)


def test_apply_needs_the_helm_diff_plugin(synced_project: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(synced_project, tmp_path, "astrago-dev")
    with pytest.raises(AstragoError, match="needs the helm-diff plugin"):
        deploy.plan(synced_project, "dev", "apply", tools=tools)


@pytest.mark.parametrize(
    ("tier", "app", "message"),
    [("storage", None, "invalid --tier 'storage'"), (None, "nginx", "no release has app=nginx")],
)
def test_bad_selectors(synced_project: RepoLayout, tier: str | None, app: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        deploy.plan(synced_project, "dev", "sync", tier=tier, app=app)


def test_destroy_task_requires_confirmation(synced_project: RepoLayout) -> None:
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "destroy", "--env", "prod"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: destroy uninstalls releases of prod: add --yes to confirm (or --dry-run to check)"


def test_deploy_task_dry_run_prints_the_command(synced_project: RepoLayout, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current="astrago-prod"))
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root), "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "deploy", "--env", "prod",
                           "--tier", "monitoring", "--sync", "--dry-run"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first.startswith("sync prod (context astrago-prod, tier=monitoring): ")
    assert first.endswith("-e prod --kube-context astrago-prod -l tier=monitoring --skip-deps sync")
    assert second == "dry run: checks passed, nothing was run"


def test_deploy_streams_helmfile_output_and_keeps_the_whole_log(synced_project: RepoLayout, tmp_path: Path) -> None:
    """No cluster here: helm fails to reach the API server, after helmfile has said what it does."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current="astrago-dev"))
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root), "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "deploy", "--env", "dev",
                           "--app", "keycloak", "--sync"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    [log] = synced_project.logs_dir.iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-helmfile\.log", log.name)
    text = log.read_text()
    assert text.startswith(f"$ {synced_project.tools_bin / 'helmfile'} --helm-binary")
    assert "Upgrading release=keycloak-addons" in text
    assert "connection refused" in text
    assert text.endswith("# exit 1\n")
    # helmfile's lines were shown as they came (helmfile writes them to stderr), before the error.
    shown, error = proc.stderr.split("error: helmfile failed (exit 1): ", 1)
    assert "Upgrading release=keycloak-addons" in shown
    assert error.rstrip().endswith(f"connection refused\nfull output: {log}")
    assert "ARGS:" not in error  # the tail skips helmfile's repetition of helm's arguments
