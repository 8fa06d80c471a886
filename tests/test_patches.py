"""Kustomize patches: applied by the post-renderer in render (and deploy), checked per patch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.patches import check as patch_check
from astrago_deploy.render.manifests import load_documents
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.render.stream import marker
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT

INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]


def inv(layout: RepoLayout, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASTRAGO_ROOT": str(layout.root)}
    return subprocess.run([*INV, *args], env=env, capture_output=True, text=True)


def rendered(layout: RepoLayout, env: str, release: str, patches: bool = True) -> list[dict[str, Any]]:
    out = layout.root / ("out" if patches else "out-unpatched")
    renderer = Renderer(layout, PinnedTools(layout), out)
    renderer.patches = patches
    renderer.render([environments.get(layout, env)])
    return load_documents((out / env / f"{release}.yaml").read_text())


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_shipped_patches_all_apply_everywhere(synced_project: RepoLayout) -> None:
    results = patch_check.check_patches(synced_project)
    assert {(r.patch, r.status) for r in results} == {
        ("patches/gpu-operator/nfd-master-health-port.yaml", "applied"),
        ("patches/gpu-operator/nfd-gc-nodefeaturegroups-rule.yaml", "applied"),
        ("patches/harbor/core-reload-on-admin-secret.yaml", "applied"),
        ("patches/harbor/database-password-from-secret.yaml", "applied"),
    }
    assert {r.env for r in results} == {"dev", "stage", "prod", "sample-site"}
    proc = inv(synced_project, "patches.check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("applied") == 4


@pytest.mark.parametrize("env", ["dev", "sample-site"])
def test_render_shows_patched_fields(synced_project: RepoLayout, env: str) -> None:
    gpu = rendered(synced_project, env, "gpu-operator")
    master = find(gpu, "Deployment", "gpu-operator-node-feature-discovery-master")["spec"]["template"]["spec"]
    container = master["containers"][0]
    assert "-grpc-health=8090" in container["args"]
    assert {"containerPort": 8090, "name": "health"} in container["ports"]
    assert container["livenessProbe"]["grpc"]["port"] == 8090
    gc_role = find(gpu, "ClusterRole", "gpu-operator-node-feature-discovery-gc")
    assert gc_role["rules"][-1] == {"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeaturegroups"],
                                    "verbs": ["get", "list", "watch"]}
    core = find(rendered(synced_project, env, "harbor"), "Deployment", "harbor-core")
    assert core["metadata"]["annotations"]["secret.reloader.stakater.com/reload"].startswith("harbor-admin,")


def test_renamed_target_is_stale_and_the_task_fails(synced_project: RepoLayout) -> None:
    kustomization = synced_project.patches_dir / "gpu-operator" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(
        "name: gpu-operator-node-feature-discovery-gc", "name: gpu-operator-nfd-gc"))
    results = patch_check.check_patches(synced_project, ["gpu-operator"], ["dev"])
    stale = [r for r in results if r.status == "stale"]
    assert [(r.patch, r.target) for r in stale] == [
        ("patches/gpu-operator/nfd-gc-nodefeaturegroups-rule.yaml", "ClusterRole/gpu-operator-nfd-gc")]
    assert "not in the rendered release" in stale[0].reason
    # Kustomize itself says nothing: the render still succeeds without the rule.
    gc_role = find(rendered(synced_project, "dev", "gpu-operator"), "ClusterRole",
                   "gpu-operator-node-feature-discovery-gc")
    assert all("nodefeaturegroups" not in rule.get("resources", []) for rule in gc_role["rules"])
    proc = inv(synced_project, "patches.check", "--release", "gpu-operator", "--env", "dev")
    assert proc.returncode == 1
    assert "stale    patches/gpu-operator/nfd-gc-nodefeaturegroups-rule.yaml" in proc.stdout
    assert proc.stderr.strip() == "error: 1 patch(es) stale or failed"


def test_json_patch_whose_test_fails_is_reported_failed(synced_project: RepoLayout) -> None:
    patch = synced_project.patches_dir / "gpu-operator" / "nfd-master-health-port.yaml"
    patch.write_text(patch.read_text().replace("value: -grpc-health=8082", "value: -grpc-health=9999"))
    [status] = [r for r in patch_check.check_patches(synced_project, ["gpu-operator"], ["dev"])
                if r.patch.endswith("nfd-master-health-port.yaml")]
    assert status.status == "failed"
    assert "test" in status.reason.lower()


def test_malformed_patch_file_is_named(synced_project: RepoLayout) -> None:
    patch = synced_project.patches_dir / "harbor" / "core-reload-on-admin-secret.yaml"
    patch.write_text(patch.read_text() + "  broken: [\n")
    statuses = patch_check.check_patches(synced_project, ["harbor"], ["dev"])
    [status] = [s for s in statuses if s.patch == "patches/harbor/core-reload-on-admin-secret.yaml"]
    assert status.status == "failed"
    assert "not valid YAML" in status.reason
    with pytest.raises(AstragoError, match="post-render harbor \\(dev\\)"):
        rendered(synced_project, "dev", "harbor")


def test_malformed_kustomization_is_named(synced_project: RepoLayout) -> None:
    (synced_project.patches_dir / "harbor" / "kustomization.yaml").write_text("patches: [\n")
    [status] = patch_check.check_patches(synced_project, ["harbor"], ["dev"])
    assert status.status == "failed"
    assert re.search(r"patches/harbor/kustomization\.yaml:2:1: not valid YAML: ", status.reason)


# --- a fixture chart: with and without patches differ exactly by the patched fields ---------


def add_demo_release(layout: RepoLayout) -> None:
    chart = layout.custom_dir / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("replicas: 1\n")
    (chart / "templates" / "all.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo\n  labels: {app: demo}\n"
        "spec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: demo}}\n"
        "  template:\n    metadata: {labels: {app: demo}}\n    spec:\n      containers:\n"
        "        - name: web\n          image: nginx:1.27\n          args: [--port=80]\n"
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: demo\nspec:\n  ports: [{port: 80}]\n"
        "  selector: {app: demo}\n"
    )
    tier = layout.releases_dir / "applications.yaml.gotmpl"
    tier.write_text(tier.read_text() + (
        "\n- name: demo\n  namespace: demo\n  chart: ../charts/custom/demo\n  labels: {tier: applications, app: demo}\n"
        "  inherit: [{template: release}]\n  postRendererArgs: [--release, demo, --env, {{ .Environment.Name }}]\n"
    ))
    folder = layout.patches_dir / "demo"
    (folder / "dev").mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(
        "# demo patches\npatches:\n  - path: web-resources.yaml\n"
        "  - target: {kind: Service, name: demo}\n    patch: |\n      - op: add\n        path: /metadata/annotations\n"
        "        value: {team: platform}\n"
        "  - target: {kind: Deployment, labelSelector: app=nothing}\n    patch: |\n"
        "      - op: replace\n        path: /spec/replicas\n        value: 5\n"
    )
    (folder / "web-resources.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: web\n          resources: {requests: {cpu: 50m}}\n"
    )
    (folder / "dev" / "kustomization.yaml").write_text(
        "patches:\n  - target: {kind: Deployment, name: demo}\n    patch: |\n"
        "      - op: replace\n        path: /spec/replicas\n        value: 2\n"
    )


def changed_paths(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= changed_paths(a.get(key), b.get(key), f"{prefix}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(*(changed_paths(x, y, f"{prefix}/{i}") for i, (x, y) in enumerate(zip(a, b, strict=True))))
    return set() if a == b else {prefix}


@pytest.mark.parametrize(("env", "expected"), [
    ("prod", {"Deployment/demo": {"/spec/template/spec/containers/0/resources"},
              "Service/demo": {"/metadata/annotations"}}),
    ("dev", {"Deployment/demo": {"/spec/template/spec/containers/0/resources", "/spec/replicas"},
             "Service/demo": {"/metadata/annotations"}}),
])
def test_patched_and_unpatched_renders_differ_exactly_by_the_patched_fields(
        synced_project: RepoLayout, env: str, expected: dict[str, set[str]]) -> None:
    add_demo_release(synced_project)
    patched = {f"{d['kind']}/{d['metadata']['name']}": d for d in rendered(synced_project, env, "demo")}
    plain = {f"{d['kind']}/{d['metadata']['name']}": d for d in rendered(synced_project, env, "demo", patches=False)}
    assert set(patched) == set(plain) == {"Deployment/demo", "Service/demo"}
    assert {k: changed_paths(plain[k], patched[k]) for k in plain} == expected
    results = patch_check.check_patches(synced_project, ["demo"], [env])
    statuses = [(r.patch.split(" ")[-2] if "inline" in r.patch else r.patch, r.status) for r in results]
    assert ("patches/demo/web-resources.yaml", "applied") in statuses
    # The selector-targeted patch that matches nothing: kustomize skips it silently, we do not.
    assert [r.target for r in results if r.status == "stale"] == ["Deployment/* [app=nothing]"]


def test_patches_new_scaffolds_for_a_rendered_resource(synced_project: RepoLayout) -> None:
    proc = inv(synced_project, "patches.new", "--release", "harbor", "--kind", "Deployment", "--name", "harbor-portal",
               "--env", "dev")
    assert proc.returncode == 0, proc.stderr
    assert "wrote patches/harbor/kustomization.yaml" in proc.stdout
    kustomization = (synced_project.patches_dir / "harbor" / "kustomization.yaml").read_text()
    assert kustomization.startswith("# Customizations of the upstream harbor chart")  # comments kept
    assert kustomization.rstrip().endswith("- path: deployment-harbor-portal.yaml")
    skeleton = yaml.safe_load((synced_project.patches_dir / "harbor" / "deployment-harbor-portal.yaml").read_text())
    assert skeleton == {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "harbor-portal"}}
    # Until it is filled in, the skeleton changes nothing: stale.
    statuses = {r.patch: r.status for r in patch_check.check_patches(synced_project, ["harbor"], ["dev"])}
    assert statuses["patches/harbor/deployment-harbor-portal.yaml"] == "stale"
    again = inv(synced_project, "patches.new", "--release", "harbor", "--kind", "Deployment", "--name", "harbor-portal")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_patches_new_refuses_a_resource_that_is_not_rendered(synced_project: RepoLayout) -> None:
    with pytest.raises(InputError, match=r"release harbor renders no Deployment named 'harbor-kore'; .*harbor-core"):
        patch_check.find_resource(synced_project, "harbor", "Deployment", "harbor-kore", ["dev"])
    with pytest.raises(InputError, match="there is no release 'nginx'"):
        patch_check.find_resource(synced_project, "nginx", "Deployment", "x", ["dev"])


def test_a_bad_regex_in_a_target_is_one_line_naming_the_patch(synced_project: RepoLayout) -> None:
    kustomization = synced_project.patches_dir / "gpu-operator" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(
        "name: gpu-operator-node-feature-discovery-gc", "name: gpu-operator-(nfd|node-feature-discovery-gc"))
    proc = inv(synced_project, "patches.check", "--release", "gpu-operator", "--env", "dev")
    assert proc.returncode == 1
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("failed")]
    assert line.startswith("failed   patches/gpu-operator/nfd-gc-nodefeaturegroups-rule.yaml  ->  ")
    assert "error parsing regexp: missing closing )" in line
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: 1 patch(es) stale or failed"


def test_unknown_release_is_refused(synced_project: RepoLayout, tmp_path: Path) -> None:
    (synced_project.patches_dir / "nginx").mkdir()
    with pytest.raises(InputError, match="there is no release 'nginx'"):
        patch_check.check_patches(synced_project, [], ["dev"])


# --- the post-renderer's two paths -------------------------------------------------------


def post_render(layout: RepoLayout, release: str, manifests: str, **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(layout.root / "scripts" / "post-render"), "--release", release, "--env", "dev"],
        input=manifests, capture_output=True, text=True, env={**os.environ, **environ},
    )


def test_a_release_without_patches_is_marked_and_passed_through_without_python(project: RepoLayout) -> None:
    """scripts/post-render answers a release with no patches/<release>/ itself (helm runs it for
    every release: a Python start each is most of a render's time): the same marker
    render/stream.py reads, then the manifests byte for byte."""
    manifests = "---\n# Source: x/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n\n"
    no_python = {"ASTRAGO_PYTHON": "/nonexistent/python"}  # the fast path never starts it
    proc = post_render(project, "csi-driver-nfs", manifests, **no_python)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == marker("csi-driver-nfs", "dev") + manifests
    # ASTRAGO_PATCHES=off: a patched release takes the same path (patches.check's unpatched render).
    assert post_render(project, "harbor", manifests, ASTRAGO_PATCHES="off", **no_python).stdout == (
        marker("harbor", "dev") + manifests
    )
    # A patched release goes through Python, which writes the same marker before its patched output.
    assert post_render(project, "harbor", manifests, **no_python).returncode != 0
    patched = post_render(project, "harbor", "", ASTRAGO_PYTHON=sys.executable)
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout == marker("harbor", "dev")
