"""inv render and inv diff on the real monorepo content and vendored upstream charts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render import diff as render_diff
from astrago_deploy.render.generated import NORMALIZED
from astrago_deploy.render.manifests import digest_secret, is_digest, load_documents, value_digest
from astrago_deploy.render.renderer import (
    Renderer,
    describe_normalized,
    parallelism,
    render_key,
    split_releases,
)
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT, git, make_project, snapshot

RELEASES = {"csi-driver-nfs", "gpu-operator-addons", "gpu-operator", "harbor", "ingress-nginx", "prometheus",
            "gpu-process-exporter", "gpu-monitoring", "keycloak-addons", "keycloak-postgresql", "keycloak",
            "astrago-mariadb", "astrago"}


def renderer(layout: RepoLayout, out: Path | None = None) -> Renderer:
    return Renderer(layout, PinnedTools(layout), out or layout.rendered_dir)


def render_all(layout: RepoLayout, out: Path | None = None) -> dict[str, bytes]:
    renderer(layout, out).render(environments.discover(layout))
    return snapshot(out or layout.rendered_dir)


def test_render_every_environment_is_per_release_and_reproducible(synced_project: RepoLayout, tmp_path: Path) -> None:
    first = render_all(synced_project)
    envs = {e.name for e in environments.discover(synced_project)}
    assert envs == {"dev", "stage", "prod", "sample-site"}
    for env in envs:
        assert {f"{env}/{r}.yaml" for r in RELEASES} <= set(first)
    # A second, uncached render into another folder gives byte-identical release files.
    second = render_all(synced_project, tmp_path / "again")
    releases_only = {k: v for k, v in first.items() if k.endswith(".yaml")}
    assert releases_only == {k: v for k, v in second.items() if k.endswith(".yaml")}
    # harbor generates nothing (its values name existing Secrets): nothing needed normalizing,
    # and the Secret values it does render show as digests.
    harbor = first["dev/harbor.yaml"].decode()
    assert NORMALIZED not in harbor
    assert json.loads(first["dev/.summary.json"])["normalized"] == {}
    trivy = next(d for d in load_documents(harbor) if d["kind"] == "Secret" and d["metadata"]["name"] == "harbor-trivy")
    assert trivy["data"]["gitHubToken"] == value_digest("", base64_encoded=True)
    assert all(is_digest(value) for value in trivy["data"].values())


def test_cache_skips_unchanged_environments_and_notices_changes(synced_project: RepoLayout) -> None:
    r = renderer(synced_project)
    dev, prod = environments.get(synced_project, "dev"), environments.get(synced_project, "prod")
    assert [x.cached for x in r.render([dev, prod])] == [False, False]
    assert [x.cached for x in r.render([dev, prod])] == [True, True]
    # What lands is the rendered tree only: no staging marker, no mkdtemp 0700, nothing left aside.
    out = synced_project.rendered_dir / "dev"
    assert not (out / ".astrago-temp").exists()
    assert out.stat().st_mode & 0o700 == 0o700 and out.stat().st_mode & 0o055 == 0o055 & ~os.umask(os.umask(0))
    assert sorted(p.name for p in synced_project.rendered_dir.iterdir()) == ["dev", "prod"]
    override = synced_project.environments_dir / "dev" / "releases" / "astrago.yaml"
    override.write_text(override.read_text().replace("replicaCount: 1", "replicaCount: 4", 1))
    results = {x.env: x for x in r.render([dev, prod])}
    assert not results["dev"].cached and results["prod"].cached
    assert "replicas: 4" in (synced_project.rendered_dir / "dev" / "astrago.yaml").read_text()
    # A hand edit of a vendored chart also invalidates the cache.
    with (synced_project.chart_dir("harbor", "1.14.2") / "values.yaml").open("a") as handle:
        handle.write("\n# touched\n")
    assert [x.cached for x in r.render([dev, prod])] == [False, False]


def test_render_task_json(synced_project: RepoLayout) -> None:
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "render", "--env", "dev",
                           "--json"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"dev"}
    assert set(data["dev"]["documents"]) == RELEASES
    assert data["dev"]["documents"]["harbor"] > 10
    assert data["dev"]["seconds"] > 0
    assert data["dev"]["normalized"] == {}


def test_render_task_refuses_when_charts_are_not_vendored(project: RepoLayout) -> None:
    env = {**os.environ, "ASTRAGO_ROOT": str(project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "render"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: not vendored: csi-driver-nfs-v4.9.0, gpu-operator-v25.3.4, harbor-1.14.2, ingress-nginx-4.11.3, "
        "kube-prometheus-stack-58.0.1; "
        "run `inv charts.sync` (offline: set CHARTS_MIRROR)"
    )


def test_a_helmfile_error_names_the_environment(synced_project: RepoLayout) -> None:
    values = synced_project.environments_dir / "dev" / "values.yaml"
    values.write_text(values.read_text().replace("server: 10.61.3.2", 'server: ""'))
    with pytest.raises(AstragoError, match=r"(?s)render failed:\ndev: .*nfs.server must be set"):
        renderer(synced_project).render([environments.get(synced_project, "dev")])
    assert not (synced_project.rendered_dir / "dev").exists()


def test_parallelism_is_bounded_by_cores_and_memory() -> None:
    assert 1 <= parallelism(10) <= (os.cpu_count() or 1)
    assert parallelism(1) == 1


def test_split_releases_and_describe_what_was_normalized() -> None:
    stream = "# astrago.io/release: a env=dev\n---\nkind: ConfigMap\n# astrago.io/release: b env=dev\n---\nkind: Secret\n"
    assert split_releases(stream) == {"a": "---\nkind: ConfigMap\n", "b": "---\nkind: Secret\n"}
    items = ["Secret/h/core data.secret", "Secret/h/core data.tls.key", "Deployment/h/core spec.x"]
    assert describe_normalized(items) == "Secret/h/core (data.secret, data.tls.key); Deployment/h/core (spec.x)"


def test_diff_against_a_ref_uses_a_worktree_and_redacts_secrets(synced_project: RepoLayout, mirror: Path) -> None:
    root = synced_project.root
    override = synced_project.environments_dir / "dev" / "releases" / "astrago.yaml"
    override.write_text(override.read_text().replace("replicaCount: 1", "replicaCount: 2", 1))
    (synced_project.environments_dir / "dev" / "releases" / "gpu-operator-addons.yaml").write_text(
        "devicePlugin:\n  enabled: false\n")
    status_before = git(root, "status", "--porcelain")
    head_before = git(root, "rev-parse", "HEAD")
    result = {d.env: d for d in render_diff.compare(synced_project, "HEAD", ["dev", "prod"], str(mirror))}
    assert result["prod"].changes == []
    dev = {(c.change, c.resource) for c in result["dev"].changes}
    assert ("changed", "Deployment/astrago/astrago-core") in dev
    assert ("removed", "ConfigMap/gpu-operator/device-plugin-config") in dev
    core = next(c for c in result["dev"].changes if c.resource == "Deployment/astrago/astrago-core")
    assert "-  replicas: 1\n+  replicas: 2\n" in core.diff
    assert git(root, "status", "--porcelain") == status_before
    assert git(root, "rev-parse", "HEAD") == head_before
    assert git(root, "worktree", "list").count("\n") == 1


def test_diff_shows_secret_changes_as_digests_never_the_values(tmp_path: Path) -> None:
    def secret(password: str, token: str) -> str:
        return (
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: ns\n"
            f"data:\n  password: {password}\n  same: c2FtZQ==\nstringData:\n  token: {token}\ntype: Opaque\n"
        )

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "app.yaml").write_text(secret("aHVudGVyMg==", "old-token"))
    (tmp_path / "b" / "app.yaml").write_text(secret("aHVudGVyMw==", "new-token").replace("Opaque", "Other"))
    (tmp_path / "b" / "new.yaml").write_text(secret("c2VjcmV0", "fresh-token"))
    changed, added = render_diff.diff_folders("dev", tmp_path / "a", tmp_path / "b").changes
    assert (changed.release, changed.change, added.release, added.change) == ("app", "changed", "new", "added")
    sha = hashlib.sha256
    # A changed value shows as a changed digest (of the decoded bytes); an unchanged one as context.
    assert f"-  password: sha256:{sha(b'hunter2').hexdigest()}\n" in changed.diff
    assert f"+  password: sha256:{sha(b'hunter3').hexdigest()}\n" in changed.diff
    assert f"   same: sha256:{sha(b'same').hexdigest()}\n" in changed.diff
    assert f"+  token: sha256:{sha(b'new-token').hexdigest()}\n" in changed.diff
    assert "-type: Opaque\n" in changed.diff and "+type: Other\n" in changed.diff
    assert f"+  password: sha256:{sha(b'secret').hexdigest()}\n" in added.diff
    assert not any(value in added.diff + changed.diff for value in ("aHVudGVy", "c2VjcmV0", "-token", "hunter"))
    # Unchanged Secrets make no diff at all.
    (tmp_path / "b" / "app.yaml").write_text(secret("aHVudGVyMg==", "old-token"))
    assert [c.release for c in render_diff.diff_folders("dev", tmp_path / "a", tmp_path / "b").changes] == ["new"]


def test_secret_digests_copy_keep_markers_and_flag_data_that_is_not_base64() -> None:
    doc = {"kind": "Secret", "metadata": {"name": "s"},
           "data": {"password": "aHVudGVyMg==", "gen": NORMALIZED, "bad": "not base64!"}, "stringData": {"t": "hunter2"}}
    digested = digest_secret(doc, keep=(NORMALIZED,))
    digest = f"sha256:{hashlib.sha256(b'hunter2').hexdigest()}"
    # The same value reads the same in data (base64) and stringData (text).
    assert digested["data"]["password"] == digest and digested["stringData"]["t"] == digest
    assert digested["data"]["gen"] == NORMALIZED
    assert digested["data"]["bad"].startswith("not base64, sha256:") and not is_digest(digested["data"]["bad"])
    assert doc["data"]["password"] == "aHVudGVyMg=="  # the document itself is untouched
    assert digest_secret(digested, keep=(NORMALIZED,)) == digested  # digests are not digested again
    config = {"kind": "ConfigMap", "data": {"password": "plain"}}
    assert digest_secret(config) is config


def test_diff_rejects_an_unknown_ref(synced_project: RepoLayout) -> None:
    with pytest.raises(InputError, match="'no-such-branch' is not a commit"):
        render_diff.compare(synced_project, "no-such-branch", ["dev"], None)


def test_helmfile_errors_show_helms_stderr_once() -> None:
    from astrago_deploy.core.errors import HelmfileError

    stderr = ("in ./helmfile.yaml: command \"helm\" exited with non-zero status:\n\nPATH:\n  helm\n\nARGS:\n  0: helm\n"
              "\nERROR:\n  exit status 1\n\nSTDERR:\n  Error: post-render harbor (dev): no match\n\n"
              "COMBINED OUTPUT:\n  Error: post-render harbor (dev): no match\n")
    message = str(HelmfileError(["helmfile", "template"], 1, "", stderr))
    assert message == "helmfile failed (exit 1): helmfile template\nError: post-render harbor (dev): no match"


def test_render_key_is_a_content_digest_of_the_inputs(project: RepoLayout, tmp_path: Path) -> None:
    dev = environments.get(project, "dev")
    key = render_key(project, dev, {})
    patch = project.patches_dir / "harbor" / "kustomization.yaml"
    os.utime(patch, (0, 0))
    # Independent of the checkout's path and of timestamps.
    assert render_key(make_project(tmp_path / "elsewhere", with_git=False), dev, {}) == key == render_key(project, dev, {})
    patch.chmod(0o755)
    executable = render_key(project, dev, {})
    patch.write_text(patch.read_text() + "# edited\n")
    edited = render_key(project, dev, {})
    (project.patches_dir / "harbor" / "empty").mkdir()
    assert len({key, executable, edited, render_key(project, dev, {})}) == 4


@pytest.mark.parametrize(
    ("layout_out", "message"),
    [
        pytest.param("taken", "error: output folder {out} is a file, not a folder: give --out a folder", id="a-file"),
        pytest.param(
            "taken/sub", "error: output folder {out} cannot be created: {tmp}/taken is a file", id="under-a-file"
        ),
        pytest.param(
            "folder", "error: {out}/dev is a file where the render of dev goes: move it away", id="env-folder-a-file"
        ),
    ],
)
def test_render_out_that_cannot_hold_the_render_is_one_line_before_any_work(
    synced_project: RepoLayout, tmp_path: Path, layout_out: str, message: str
) -> None:
    (tmp_path / "taken").write_text("keep me\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "dev").write_text("keep me too\n")
    out = tmp_path / layout_out
    before, outside = snapshot(synced_project.root), snapshot(tmp_path / "folder")
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "render", "--env", "dev",
                           "--out", str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message.format(out=out, tmp=tmp_path))
    assert (tmp_path / "taken").read_text() == "keep me\n"
    assert snapshot(synced_project.root) == before and snapshot(tmp_path / "folder") == outside
    assert not synced_project.rendered_dir.exists()


@pytest.mark.parametrize(
    ("rel", "text", "where"),
    [
        pytest.param("environments/dev/values.yaml", "foo: [\n", ":16:1: not valid YAML: ", id="settings"),
        pytest.param("environments/base/releases/harbor.yaml", "expose:\n  type: [\n", ":3:1: not valid YAML: ", id="release-values"),
        pytest.param("environments/dev/releases/astrago.yaml", "a: !!set [1]\n", ":6:4: not valid YAML: ", id="bad-tag"),
    ],
)
def test_render_names_a_values_file_that_is_not_yaml_in_one_line(
    synced_project: RepoLayout, rel: str, text: str, where: str
) -> None:
    path = synced_project.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
    before = snapshot(synced_project.root)
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "render", "--env", "dev"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    # Not helmfile's "Offending YAML:" dump of the whole file: the parser's problem at its place.
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"error: {path}{where}")
    assert line.endswith("(correct the YAML at that place)")
    assert snapshot(synced_project.root) == before
    assert not synced_project.rendered_dir.exists()
