"""The promotion body (`promote/body.py`): what promoting a candidate onto prod changes.

One real repository (a copy of the monorepo with the charts vendored from the mirror): the
target commit, then a candidate with an environment value that changes a Deployment and a
Secret value, then a lock bump of csi-driver-nfs with its upgrade report. Both sides are
checked out as git worktrees and rendered for real (prod and its customer site), the
candidate's patches checked for real; the summary is built once for the module.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments, promotion
from astrago_deploy.patches.check import check_patches
from astrago_deploy.promote.body import BODY_LIMIT, PromotionSummary, summarize, upgrade_report
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import git

SECRET = "promotion-plaintext-token-3f9a71"
ENVS = ["prod", "sample-site"]
REPORT = "reports/upgrades/csi-driver-nfs-v4.9.0-to-v4.10.0.md"


@dataclass(frozen=True)
class Promotion:
    root: Path
    old_commit: str
    new_commit: str
    old_tree: RepoLayout
    new_tree: RepoLayout
    old_render: Path
    new_render: Path
    summary: PromotionSummary  # prod at old_commit -> new_commit
    fresh: PromotionSummary  # the same candidate onto a prod branch that does not exist yet
    work: Path


def bump_csi_driver(layout: RepoLayout, mirror: Path, version: str) -> None:
    """The lock's csi-driver-nfs pinned to `version` (url, digests filled by a real sync)."""
    text = layout.lock_file.read_text()
    start, end = text.index("  csi-driver-nfs:\n"), text.index("  # NVIDIA GPU operator")
    block = re.sub(r"^    (url|digest|tree): .*\n", "", text[start:end], flags=re.M)
    layout.lock_file.write_text(text[:start] + block.replace("version: v4.9.0", f"version: {version}") + text[end:])
    ChartVendor(layout, Fetcher(mirror=Mirror(str(mirror)))).sync(["csi-driver-nfs"])


def render(tree: RepoLayout, tools: PinnedTools, out: Path) -> Path:
    Renderer(tree, tools, out).render([environments.get(tree, env) for env in ENVS])
    return out


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory, synced_template: RepoLayout, mirror: Path) -> Promotion:
    work = tmp_path_factory.mktemp("promotion")
    root = work / "repo"
    shutil.copytree(synced_template.root, root, symlinks=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    old_commit = git(root, "rev-parse", "HEAD").strip()

    releases = root / "environments" / "prod" / "releases"
    (releases / "astrago.yaml").write_text("core:\n  replicaCount: 3\n")
    (releases / "harbor.yaml").write_text(f"trivy:\n  gitHubToken: {SECRET}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "prod: three astrago-core replicas, a Trivy token")
    layout = RepoLayout.at(root)
    bump_csi_driver(layout, mirror, "v4.10.0")
    (root / REPORT).parent.mkdir(parents=True)
    (root / REPORT).write_text("# Upgrade csi-driver-nfs: v4.9.0 -> v4.10.0\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "csi-driver-nfs v4.10.0")
    new_commit = git(root, "rev-parse", "HEAD").strip()

    old_path = work / "old"
    git(root, "worktree", "add", "-q", "--detach", str(old_path), old_commit)
    shutil.copytree(synced_template.external_dir, old_path / "charts" / "external", dirs_exist_ok=True)
    old_tree = RepoLayout.at(old_path)
    tools = PinnedTools(layout)
    old_render = render(old_tree, tools, work / "render-old")
    new_render = render(layout, tools, work / "render-new")
    patches = check_patches(layout, env_names=ENVS, tools=tools)
    commits = promotion.commits(GitRepo(root), new_commit, old_commit)
    summary = summarize(
        "prod", old_commit, new_commit, commits, old_tree, layout, old_render, new_render, ENVS, patches,
        work / "out" / "prod.diff",
    )  # fmt: skip
    every = promotion.commits(GitRepo(root), new_commit)
    fresh = summarize(
        "prod", "", new_commit, every, None, layout, None, new_render, ENVS, patches, work / "out" / "fresh.diff"
    )
    return Promotion(root, old_commit, new_commit, old_tree, layout, old_render, new_render, summary, fresh, work)


def everything(summary: PromotionSummary) -> dict[str, str]:
    return {
        "markdown": summary.markdown("reports/promotions/prod.diff"),
        "text": summary.text(),
        "json": json.dumps(summary.as_json()),
        "full diff": summary.full_diff.read_text(),
    }


# --- what changed ------------------------------------------------------------------------------


def test_the_changed_deployment_appears_in_every_output(promoted: Promotion) -> None:
    summary = promoted.summary
    resources = summary.as_json()["resources"]
    for env in ENVS:
        assert {"change": "changed", "release": "astrago", "resource": "Deployment/astrago/astrago-core"} in resources[
            env
        ]["changes"]
    body = summary.markdown()
    assert "  - changed `Deployment/astrago/astrago-core` (astrago)\n" in body
    assert "-  replicas: 1\n+  replicas: 3\n" in body
    assert "+  replicas: 3\n" in summary.full_diff.read_text()
    # Nothing of the target that did not change is listed as changed.
    assert not any(c["release"] == "keycloak-addons" for c in resources["prod"]["changes"])


def test_environments_with_the_same_changes_are_grouped(promoted: Promotion) -> None:
    body = promoted.summary.markdown()
    resources = promoted.summary.as_json()["resources"]
    assert resources["prod"] == resources["sample-site"]
    assert "- **prod, sample-site**: 2 added, 0 removed, 10 changed\n" in body
    # The site pulls through its registry, so its images differ from prod's and are listed apart.
    images = body.split("## Images\n", 1)[1].split("## Patches\n", 1)[0]
    prod, site = images.split("**sample-site**\n")
    assert prod.lstrip("\n").startswith("**prod**\n\n- added ")
    assert "- added `registry.k8s.io/sig-storage/nfsplugin:v4.10.0`\n" in prod
    assert "- removed `registry.k8s.io/sig-storage/nfsplugin:v4.9.0`\n" in prod
    assert "- added `192.168.50.10:30002/sig-storage/nfsplugin:v4.10.0`\n" in site


def test_a_secret_value_never_appears_not_even_base64_encoded(promoted: Promotion) -> None:
    encoded = base64.b64encode(SECRET.encode()).decode()
    harbor_secrets = [
        c
        for c in promoted.summary.as_json()["resources"]["prod"]["changes"]
        if c["release"] == "harbor" and c["resource"].startswith("Secret/")
    ]
    assert harbor_secrets, "the token must change a Secret, or this test proves nothing"
    assert SECRET in (promoted.root / "environments" / "prod" / "releases" / "harbor.yaml").read_text()
    for summary in (promoted.summary, promoted.fresh):
        for name, text in everything(summary).items():
            assert SECRET not in text, name
            assert encoded not in text, name
            assert encoded.rstrip("=") not in text, name
    assert "sha256:" in promoted.summary.full_diff.read_text()


# --- charts ------------------------------------------------------------------------------------


def test_the_lock_change_has_its_semver_kind_and_upgrade_report(promoted: Promotion) -> None:
    assert promoted.summary.as_json()["charts"] == [
        {"name": "csi-driver-nfs", "old": "v4.9.0", "new": "v4.10.0", "bump": "minor", "report": REPORT}
    ]
    body = promoted.summary.markdown()
    assert f"| csi-driver-nfs | v4.9.0 | v4.10.0 | minor | [{Path(REPORT).name}]({REPORT}) |" in body
    assert "  csi-driver-nfs v4.9.0 -> v4.10.0 (minor)\n" in promoted.summary.text()


def test_a_new_branch_adds_every_chart_without_a_report(promoted: Promotion) -> None:
    charts = promoted.fresh.as_json()["charts"]
    assert [(c["name"], c["old"], c["bump"], c["report"]) for c in charts] == [
        ("csi-driver-nfs", None, "added", None),
        ("gpu-operator", None, "added", None),
        ("harbor", None, "added", None),
        ("ingress-nginx", None, "added", None),
        ("kube-prometheus-stack", None, "added", None),
    ]


def test_the_upgrade_report_is_found_by_name_or_by_the_last_step(tmp_path: Path) -> None:
    folder = tmp_path / "reports" / "upgrades"
    folder.mkdir(parents=True)
    for stem in ("harbor-1.14.2-to-1.15.0", "harbor-1.15.0-to-1.16.0", "gpu-operator-addons-1.0.0-to-v25.3.4"):
        (folder / f"{stem}.md").write_text("#\n")
    tree = RepoLayout.at(tmp_path)
    assert upgrade_report(tree, "harbor", "1.14.2", "1.15.0") == "reports/upgrades/harbor-1.14.2-to-1.15.0.md"
    # Two upgrades between target and candidate: the one reaching the candidate's version.
    assert upgrade_report(tree, "harbor", "1.14.2", "1.16.0") == "reports/upgrades/harbor-1.15.0-to-1.16.0.md"
    assert upgrade_report(tree, "harbor", "1.14.2", "1.17.0") is None
    # Another chart whose name starts with this one's is not this chart's report.
    assert upgrade_report(tree, "gpu-operator", "v25.3.3", "v25.3.4") is None


# --- the body's size ---------------------------------------------------------------------------


def test_a_new_branch_diff_is_cut_per_resource_under_the_limit(promoted: Promotion) -> None:
    fresh = promoted.fresh
    counts = fresh.as_json()["resources"]["prod"]["counts"]
    assert counts["removed"] == counts["changed"] == 0 and counts["added"] > 50
    assert fresh.full_diff_chars > BODY_LIMIT
    body = fresh.markdown("reports/promotions/fresh.diff")
    assert len(body) <= len(body.encode("utf-8")) < BODY_LIMIT
    cut = re.search(r"_(\d+) resource diff\(s\) \((\d+) characters\) left out to keep this body under", body)
    assert cut is not None, body[-500:]
    assert "the full diff is in `reports/promotions/fresh.diff`._" in body
    assert int(cut.group(2)) < fresh.full_diff_chars
    # Cut per resource: every resource shown is shown whole.
    shown = re.findall(r"^# added (\S+): (\S+)$", body, flags=re.M)
    assert 0 < len(shown) < 2 * counts["added"]
    full = fresh.full_diff.read_text()
    for release, resource in shown[:5]:
        part = full.split(f"### prod added {release}: {resource}\n", 1)[1].split("\n### ", 1)[0]
        assert part.rstrip("\n") in body


@pytest.mark.parametrize("limit", [2_000, 6_000, 20_000])
def test_a_tiny_limit_is_kept_too(promoted: Promotion, limit: int) -> None:
    for summary in (promoted.summary, promoted.fresh):
        body = summary.markdown("full.diff", limit=limit)
        assert len(body.encode("utf-8")) < limit  # so in characters too, whatever GitHub counts
        assert body.startswith("# Promote prod: ")
        assert body.endswith("_Generated by `inv env.promote`._\n")
        assert "full.diff" in body


def test_a_small_diff_is_shown_whole(promoted: Promotion) -> None:
    body = promoted.summary.markdown("prod.diff")
    assert "left out" not in body
    assert "The full rendered diff is also in `prod.diff`." in body
    assert len(body) < BODY_LIMIT


# --- text and json -----------------------------------------------------------------------------


def test_the_stdout_summary_counts_everything(promoted: Promotion) -> None:
    text = promoted.summary.text()
    lines = text.splitlines()
    assert lines[0] == f"promote prod: 2 commit(s), {promoted.old_commit[:12]} -> {promoted.new_commit[:12]}"
    assert "charts: 1 changed" in lines
    prod = next(line for line in lines if line.startswith("prod: "))
    assert re.fullmatch(r"prod: resources \d+ added, \d+ removed, \d+ changed; images \d+ added, \d+ removed", prod)
    assert any(line.startswith("sample-site: resources ") for line in lines)
    assert re.search(r"^patches: \d+ applied, 0 stale, 0 failed$", text, flags=re.M)
    assert promoted.fresh.text().splitlines()[0].endswith(f"(new branch) -> {promoted.new_commit[:12]}")


def test_the_json_shape(promoted: Promotion) -> None:
    data: dict[str, Any] = json.loads(json.dumps(promoted.summary.as_json()))
    assert set(data) == {
        "target", "from", "to", "commits", "charts", "environments", "resources", "images", "patches", "full_diff",
    }  # fmt: skip
    assert (data["target"], data["from"], data["to"]) == ("prod", promoted.old_commit, promoted.new_commit)
    assert [c["subject"] for c in data["commits"]] == [
        "prod: three astrago-core replicas, a Trivy token",
        "csi-driver-nfs v4.10.0",
    ]
    assert set(data["commits"][0]) == {"sha", "date", "subject", "kind"}
    assert data["environments"] == ENVS
    for env in ENVS:
        assert set(data["resources"][env]) == {"counts", "changes"}
        assert set(data["resources"][env]["counts"]) == {"added", "removed", "changed"}
        assert sum(data["resources"][env]["counts"].values()) == len(data["resources"][env]["changes"])
        assert set(data["images"][env]) == {"added", "removed"}
    assert "registry.k8s.io/sig-storage/nfsplugin:v4.9.0" in data["images"]["prod"]["removed"]
    assert data["patches"]["status"] == "applied"
    assert data["patches"]["results"] and {"patch", "target", "status", "reason", "release", "envs"} == set(
        data["patches"]["results"][0]
    )
    assert data["full_diff"] == {
        "path": str(promoted.summary.full_diff),
        "characters": promoted.summary.full_diff_chars,
    }
    assert promoted.fresh.as_json()["from"] is None
