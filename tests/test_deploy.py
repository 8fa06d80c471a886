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

from .conftest import PROJECT, git
from .test_promotion import STAGES, origin_of

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


@pytest.fixture
def at_tips(synced_project: RepoLayout) -> RepoLayout:
    """The synced project with every stage branch (local; there is no origin) at its HEAD: deployable."""
    for stage in STAGES:
        git(synced_project.root, "branch", stage)
    return synced_project


def commit(root: Path, subject: str) -> str:
    git(root, "commit", "-q", "--allow-empty", "-m", subject)
    return git(root, "rev-parse", "HEAD").strip()


def inv_deploy(layout: RepoLayout, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASTRAGO_ROOT": str(layout.root), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "deploy", *args],
                          env=env, capture_output=True, text=True, timeout=600)


def tools_with_context(layout: RepoLayout, tmp_path: Path, current: str) -> PinnedTools:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current=current))
    return PinnedTools(layout, environ={**os.environ, "KUBECONFIG": str(kubeconfig)})


def test_sync_command_line_with_selectors(at_tips: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(at_tips, tmp_path, "astrago-dev")
    plan = deploy.plan(at_tips, "dev", "sync", tier="infrastructure", app="harbor", tools=tools)
    bin_dir = at_tips.tools_bin
    assert plan.command.argv == [
        str(bin_dir / "helmfile"), "--helm-binary", str(bin_dir / "helm"),
        "-f", str(at_tips.helmfile), "-e", "dev", "--kube-context", "astrago-dev",
        "-l", "tier=infrastructure,app=harbor", "--skip-deps", "sync",
    ]
    assert plan.command.cwd == at_tips.root
    assert plan.command.env["KUBECONFIG"] == str(tmp_path / "kubeconfig")


def test_destroy_command_line(synced_project: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(synced_project, tmp_path, "astrago-prod")
    plan = deploy.plan(synced_project, "prod", "destroy", tools=tools)
    assert plan.command.argv[3:] == ["-f", str(synced_project.helmfile), "-e", "prod", "--kube-context",
                                     "astrago-prod", "--skip-deps", "destroy"]
    assert plan.checkout is None  # destroy deploys nothing: no stage branch needed


def test_the_command_really_runs_helmfile_against_the_named_context(at_tips: RepoLayout, tmp_path: Path) -> None:
    """No cluster here: helmfile gets as far as helm talking to the (unreachable) API server."""
    tools = tools_with_context(at_tips, tmp_path, "astrago-dev")
    plan = deploy.plan(at_tips, "dev", "sync", app="keycloak", tools=tools)
    with pytest.raises(HelmfileError) as err:
        plan.command.run()
    assert "127.0.0.1:9" in err.value.stderr or "127.0.0.1:9" in err.value.stdout


def test_context_mismatch_is_refused(at_tips: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(at_tips, tmp_path, "astrago-prod")
    with pytest.raises(AstragoError, match=r"current kube context is 'astrago-prod', but dev deploys to 'astrago-dev'"):
        deploy.plan(at_tips, "dev", "sync", tools=tools)


def test_environment_without_context_is_refused(at_tips: RepoLayout, tmp_path: Path) -> None:
    values = at_tips.environments_dir / "dev" / "values.yaml"
    values.write_text(values.read_text().replace("kubeContext: astrago-dev", 'kubeContext: ""'))
    tools = tools_with_context(at_tips, tmp_path, "astrago-dev")
    with pytest.raises(AstragoError, match=r"cluster\.kubeContext is not set"):
        deploy.plan(at_tips, "dev", "sync", tools=tools)


def test_failing_verify_is_refused_before_anything_runs(at_tips: RepoLayout, tmp_path: Path) -> None:
    with (at_tips.chart_dir("harbor", "1.14.2") / "values.yaml").open("a") as handle:
        handle.write("# edited by hand\n")
    tools = tools_with_context(at_tips, tmp_path, "astrago-dev")
    with pytest.raises(AstragoError, match=r"(?s)refusing to sync dev: charts.verify failed:.*harbor"):
        deploy.plan(at_tips, "dev", "sync", tools=tools)


def test_apply_needs_the_helm_diff_plugin(at_tips: RepoLayout, tmp_path: Path) -> None:
    tools = tools_with_context(at_tips, tmp_path, "astrago-dev")
    with pytest.raises(AstragoError, match="needs the helm-diff plugin"):
        deploy.plan(at_tips, "dev", "apply", tools=tools)


@pytest.mark.parametrize(
    ("tier", "app", "message"),
    [("storage", None, "invalid --tier 'storage'"), (None, "nginx", "no release has app=nginx")],
)
def test_bad_selectors(at_tips: RepoLayout, tier: str | None, app: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        deploy.plan(at_tips, "dev", "sync", tier=tier, app=app)


def test_destroy_task_requires_confirmation(synced_project: RepoLayout) -> None:
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "destroy", "--env", "prod"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: destroy uninstalls releases of prod: add --yes to confirm (or --dry-run to check)"


def test_deploy_task_dry_run_prints_the_command(at_tips: RepoLayout, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current="astrago-prod"))
    env = {**os.environ, "ASTRAGO_ROOT": str(at_tips.root), "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "deploy", "--env", "prod",
                           "--tier", "monitoring", "--sync", "--dry-run"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    checkout, first, second = proc.stdout.strip().splitlines()
    head = git(at_tips.root, "rev-parse", "HEAD").strip()
    assert checkout == f"deploying {head[:12]} (initial): the tip of prod"
    assert first.startswith("sync prod (context astrago-prod, tier=monitoring): ")
    assert first.endswith("-e prod --kube-context astrago-prod -l tier=monitoring --skip-deps sync")
    assert second == "dry run: checks passed, nothing was run"


def test_deploy_streams_helmfile_output_and_keeps_the_whole_log(at_tips: RepoLayout, tmp_path: Path) -> None:
    """No cluster here: helm fails to reach the API server, after helmfile has said what it does."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current="astrago-dev"))
    env = {**os.environ, "ASTRAGO_ROOT": str(at_tips.root), "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "deploy", "--env", "dev",
                           "--app", "keycloak", "--sync"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    [log] = at_tips.logs_dir.iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-helmfile\.log", log.name)
    text = log.read_text()
    assert text.startswith(f"$ {at_tips.tools_bin / 'helmfile'} --helm-binary")
    assert "Upgrading release=keycloak-addons" in text
    assert "connection refused" in text
    assert text.endswith("# exit 1\n")
    # helmfile's lines were shown as they came (helmfile writes them to stderr), before the error.
    shown, error = proc.stderr.split("error: helmfile failed (exit 1): ", 1)
    assert "Upgrading release=keycloak-addons" in shown
    assert error.rstrip().endswith(f"connection refused\nfull output: {log}")
    assert "ARGS:" not in error  # the tail skips helmfile's repetition of helm's arguments


# --- what is checked out must be deployable ---------------------------------------------------------


def test_a_commit_not_at_the_stage_tip_is_refused_naming_both_and_the_fixes(at_tips: RepoLayout) -> None:
    tip = git(at_tips.root, "rev-parse", "HEAD").strip()
    head = commit(at_tips.root, "not promoted")
    with pytest.raises(InputError) as err:
        deploy.plan(at_tips, "prod", "sync")
    assert str(err.value) == (
        f"refusing to deploy prod: HEAD is {head[:12]}, not the tip of prod, which prod deploys from ({tip[:12]}), "
        "and carries no prod promotion tag; check out that tip (`git checkout prod`) or promote it "
        f"(`inv env.promote prod --commit {head[:12]}`); --allow-ref deploys it anyway"
    )
    with pytest.raises(InputError, match=r"or merge it into dev; --allow-ref"):
        deploy.checked_out_commit(at_tips, "dev")


def test_the_stage_tip_is_deployable_and_origin_is_what_counts(
    tmp_path: Path, synced_project: RepoLayout
) -> None:
    root = synced_project.root
    for stage in STAGES:
        git(root, "branch", stage)
    head = git(root, "rev-parse", "HEAD").strip()
    assert deploy.checked_out_commit(synced_project, "stage").line == f"deploying {head[:12]} (initial): the tip of stage"
    # With an origin, its branch decides: a local stage branch ahead of it holds what origin never took.
    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "origin.git"))
    origin_of(root, tmp_path / "origin.git")
    git(root, "checkout", "-q", "stage")
    ahead = commit(root, "only local")
    with pytest.raises(InputError, match=rf"HEAD is {ahead[:12]}, not the tip of origin/stage, .*"
                                         r"\(`git fetch origin && git checkout origin/stage`\)"):
        deploy.checked_out_commit(synced_project, "stage")
    git(root, "checkout", "-q", "--detach", "origin/stage")
    assert deploy.checked_out_commit(synced_project, "stage").line.endswith(": the tip of origin/stage")


def test_a_commit_carrying_the_stages_promotion_tag_is_deployable(at_tips: RepoLayout) -> None:
    root = at_tips.root
    promoted = commit(root, "promoted, then the branch moved on")
    git(root, "tag", "-a", "-m", "promotion", "prod/2025.01.02-1", promoted)
    git(root, "tag", "-a", "-m", "promotion", "stage/2025.01.02-1", promoted)
    assert deploy.checked_out_commit(at_tips, "prod").line == (
        f"deploying {promoted[:12]} (promoted, then the branch moved on): promotion tag prod/2025.01.02-1"
    )
    git(root, "tag", "-d", "prod/2025.01.02-1")
    with pytest.raises(InputError, match="carries no prod promotion tag"):  # another stage's tag is not prod's
        deploy.checked_out_commit(at_tips, "prod")


def test_a_customer_site_deploys_from_the_last_stage(at_tips: RepoLayout) -> None:
    root = at_tips.root
    git(root, "checkout", "-q", "dev")
    on_dev = commit(root, "on dev only")
    with pytest.raises(InputError, match=rf"HEAD is {on_dev[:12]}, not the tip of prod, which sample-site deploys "
                                         r"from \(a customer site: the last stage\)"):
        deploy.checked_out_commit(at_tips, "sample-site")
    git(root, "checkout", "-q", "prod")
    assert deploy.checked_out_commit(at_tips, "sample-site").line.endswith(": the tip of prod")


def test_without_stage_branches_deploy_asks_for_them(synced_project: RepoLayout) -> None:
    head = git(synced_project.root, "rev-parse", "HEAD").strip()
    with pytest.raises(InputError) as err:
        deploy.checked_out_commit(synced_project, "dev")
    assert str(err.value) == (
        f"refusing to deploy dev: HEAD is {head[:12]}, but there is no branch dev, which dev deploys from; create "
        "the stage branches with `inv env.branches`, or --allow-ref deploys it anyway"
    )
    allowed = deploy.checked_out_commit(synced_project, "dev", allow_ref=True)
    assert allowed.overridden and allowed.line.startswith(f"warning: --allow-ref: deploying {head[:12]} (initial)")


def test_deploy_dry_run_refuses_too_and_allow_ref_deploys_with_a_warning(at_tips: RepoLayout, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(current="astrago-prod"))
    head = commit(at_tips.root, "not promoted")
    refused = inv_deploy(at_tips, kubeconfig, "--env", "prod", "--sync", "--dry-run")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: refusing to deploy prod: HEAD is {head[:12]}, not the tip of prod")
    allowed = inv_deploy(at_tips, kubeconfig, "--env", "prod", "--sync", "--dry-run", "--allow-ref")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stderr == (
        f"warning: --allow-ref: deploying {head[:12]} (not promoted), which is not the tip of prod and carries no "
        "prod promotion tag\n"
    )
    assert allowed.stdout.strip().splitlines()[-1] == "dry run: checks passed, nothing was run"
