"""The helmfile itself: environments discovered as Python sees them, tiers, labels, needs, offline images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render import manifests
from astrago_deploy.toolchain.pinned import PinnedTools

TIERS = {"infrastructure", "monitoring", "security", "applications"}


def helmfile(layout: RepoLayout, *args: str) -> str:
    return PinnedTools(layout).run("helmfile", ["-f", str(layout.helmfile), *args], timeout=300)


def releases(layout: RepoLayout, env: str, *selectors: str) -> list[dict[str, str]]:
    sel = [a for s in selectors for a in ("-l", s)]
    data: list[dict[str, str]] = json.loads(helmfile(layout, "-e", env, *sel, "list", "--output", "json"))
    return data


def images(text: str) -> set[str]:
    return set().union(*(manifests.images(doc) for doc in manifests.load_documents(text)))


def test_helmfile_environments_match_python_discovery(synced_project: RepoLayout) -> None:
    environments.init_customer(synced_project, "acme", "10.1.2.3", "10.1.2.4", "/acme")
    built = yaml.safe_load_all(helmfile(synced_project, "-e", "acme", "build"))
    doc = next(d for d in built if d and "environments" in d)
    assert set(doc["environments"]) == {e.name for e in environments.discover(synced_project)}
    assert doc["environments"]["acme"]["values"][-1] == {"layers": ["base", "prod", "customers/acme"]}


def test_a_checkout_without_customer_sites_still_has_its_stages(project: RepoLayout) -> None:
    """Git keeps no empty folder: with every customer site removed, `environments/customers` is
    gone in a fresh clone or an upgrade's worktree, and the helmfile must still load."""
    shutil.rmtree(project.customers_dir)
    built = yaml.safe_load_all(helmfile(project, "-e", "dev", "build"))
    doc = next(d for d in built if d and "environments" in d)
    assert set(doc["environments"]) == {"dev", "stage", "prod"} == {e.name for e in environments.discover(project)}


def test_tiers_labels_and_selection(synced_project: RepoLayout) -> None:
    everything = releases(synced_project, "dev")
    assert {r["name"] for r in everything} == {
        "csi-driver-nfs", "gpu-operator-addons", "gpu-operator", "harbor", "ingress-nginx",
        "prometheus", "gpu-process-exporter", "gpu-monitoring", "keycloak-addons", "keycloak-postgresql",
        "keycloak", "astrago-mariadb", "astrago",
    }
    for release in everything:
        labels = dict(item.split(":", 1) for item in release["labels"].split(","))
        assert labels["tier"] in TIERS
        assert labels["app"]
    assert {r["name"] for r in releases(synced_project, "dev", "tier=monitoring")} == {
        "prometheus", "gpu-process-exporter", "gpu-monitoring"
    }
    assert {r["name"] for r in releases(synced_project, "dev", "app=gpu-operator")} == {"gpu-operator", "gpu-operator-addons"}


def test_needs_order_storage_and_addons_first(synced_project: RepoLayout) -> None:
    built = next(d for d in yaml.safe_load_all(helmfile(synced_project, "-e", "dev", "build")) if d and "releases" in d)
    # helmfile qualifies needs with the environment's kube context.
    needs = {r["name"]: {n.removeprefix("astrago-dev/") for n in r.get("needs") or []} for r in built["releases"]}
    assert "gpu-operator/gpu-operator-addons" in needs["gpu-operator"]
    assert needs["harbor"] == {"kube-system/csi-driver-nfs"}  # on its NodePort: no wait for the ingress
    assert "kube-system/csi-driver-nfs" in needs["prometheus"]  # Prometheus's volume is NFS-backed
    assert {
        "kube-system/csi-driver-nfs", "keycloak/keycloak-addons", "ingress-nginx/ingress-nginx", "astrago/astrago-mariadb"
    } <= needs["astrago"]
    assert needs["keycloak"] == {"keycloak/keycloak-addons", "keycloak/keycloak-postgresql"}
    assert needs["keycloak-postgresql"] == needs["astrago-mariadb"] == {"kube-system/csi-driver-nfs"}


def test_releases_whose_ingress_the_environment_serves_wait_for_the_controller(synced_project: RepoLayout) -> None:
    """The controller's admission webhook checks every Ingress: Keycloak behind the ingress (prod's
    keycloak.url has no port) and Grafana at ingress.hosts.grafana wait for ingress-nginx."""
    values = synced_project.root / "environments" / "prod" / "values.yaml"
    text = values.read_text()
    assert "\ningress:\n  host: " in text and "hosts:" not in text
    values.write_text(text.replace("\ningress:\n", "\ningress:\n  hosts:\n    grafana: grafana.example.com\n", 1))
    built = next(d for d in yaml.safe_load_all(helmfile(synced_project, "-e", "prod", "build")) if d and "releases" in d)
    needs = {r["name"]: {n.rpartition("/")[0].rpartition("/")[2] + "/" + n.rpartition("/")[2] for n in r.get("needs") or []}
             for r in built["releases"]}  # fmt: skip
    assert "ingress-nginx/ingress-nginx" in needs["keycloak"]
    assert "ingress-nginx/ingress-nginx" in needs["prometheus"]
    dev = next(d for d in yaml.safe_load_all(helmfile(synced_project, "-e", "dev", "build")) if d and "releases" in d)
    dev_needs = {r["name"]: r.get("needs") or [] for r in dev["releases"]}
    assert not any("ingress-nginx" in n for n in dev_needs["keycloak"] + dev_needs["prometheus"])  # NodePort, no host


def test_releases_reach_external_charts_through_the_lock(synced_project: RepoLayout) -> None:
    charts = {r["name"]: r["chart"] for r in releases(synced_project, "dev")}
    assert charts["gpu-operator"].endswith("charts/external/gpu-operator-v25.3.4")
    assert charts["csi-driver-nfs"].endswith("charts/external/csi-driver-nfs-v4.9.0")
    assert charts["harbor"].endswith("charts/external/harbor-1.14.2")
    assert charts["prometheus"].endswith("charts/external/kube-prometheus-stack-58.0.1")
    assert charts["ingress-nginx"].endswith("charts/external/ingress-nginx-4.11.3")
    for tier_file in synced_project.releases_dir.glob("*.gotmpl"):
        assert "charts/external" not in tier_file.read_text(), f"{tier_file} bypasses the lock"


@pytest.mark.parametrize("env", ["dev", "sample-site"])
def test_offline_registry_rewrites_every_image_of_every_release(synced_project: RepoLayout, env: str) -> None:
    out = helmfile(synced_project, "-e", env, "--state-values-set", "offline.registry=harbor.local:30002",
                   "template", "--skip-deps")
    found = images(out)
    assert len(found) > 20
    escaped = sorted(i for i in found if not i.startswith("harbor.local:30002/"))
    assert escaped == []
    # The path is kept: only the registry host changes.
    assert "harbor.local:30002/nvidia/gpu-operator:v25.3.4" in found
    assert "harbor.local:30002/goharbor/harbor-core:v2.10.2" in found
    assert "harbor.local:30002/sig-storage/nfsplugin:v4.9.0" in found
    assert "harbor.local:30002/xiilab/astrago:core-v1.0.80" in found
    assert "harbor.local:30002/keycloak/keycloak:26.4.2" in found
    assert "harbor.local:30002/library/postgres:17.6" in found
    assert "harbor.local:30002/library/mariadb:11.4.7" in found
    # ingress-nginx splits registry and image and pins by digest: the digest stays.
    assert any(i.startswith("harbor.local:30002/ingress-nginx/controller:v1.11.3@sha256:") for i in found)
    # gpu-operator's ClusterPolicy names the images the operator starts.
    assert "harbor.local:30002/nvidia/k8s/container-toolkit:v1.17.8-ubuntu20.04" in found
    assert "harbor.local:30002/nvidia/cloud-native/k8s-driver-manager:v0.8.1" in found


def test_without_offline_registry_images_come_from_upstream(synced_project: RepoLayout) -> None:
    found = images(helmfile(synced_project, "-e", "dev", "template", "--skip-deps"))
    assert "nvcr.io/nvidia/gpu-operator:v25.3.4" in found
    assert "goharbor/harbor-core:v2.10.2" in found


def test_custom_charts_lint_clean(project: RepoLayout) -> None:
    tools = PinnedTools(project)
    for chart in sorted(project.custom_dir.iterdir()):
        out = tools.run("helm", ["lint", "--strict", str(chart)])
        assert "0 chart(s) failed" in out, out


def test_astrago_chart_offline_registry_renders_only_site_images(project: RepoLayout) -> None:
    out = PinnedTools(project).run("helm", ["template", "t", str(project.custom_dir / "astrago"),
                                            "--set", "offline.registry=harbor.local:30002"])
    found = images(out)
    assert len(found) == 5
    assert all(i.startswith("harbor.local:30002/") for i in found), found


def test_customer_environment_renders(synced_project: RepoLayout, tmp_path: Path) -> None:
    environments.init_customer(synced_project, "acme", "10.1.2.3", "10.1.2.4", "/acme", registry="10.1.2.3:30002")
    out = helmfile(synced_project, "-e", "acme", "template", "--skip-deps")
    docs = manifests.load_documents(out)  # read as Kubernetes reads it, like every chart output
    storage = next(d for d in docs if d["kind"] == "StorageClass")
    assert storage["parameters"] == {"server": "10.1.2.4", "share": "/acme"}
    assert all(i.startswith("10.1.2.3:30002/") for i in images(out))


def helmfile_settings(layout: RepoLayout, env: str) -> object:
    """The environment values as helmfile merges them: the helmfile's environments part, then a
    part that prints `.Values` as JSON where `helmfile build` shows it (helmDefaults.kubeContext)."""
    environments_part = layout.helmfile.read_text().split("\n---\n", 1)[0]
    probe = layout.helmfile_dir / "values-probe.yaml.gotmpl"
    probe.write_text(
        environments_part + "\n---\nhelmDefaults:\n  kubeContext: {{ .Values | toJson | quote }}\n"
        "releases:\n- name: probe\n  chart: ./probe\n  installed: false\n"
    )
    try:
        out = PinnedTools(layout).run("helmfile", ["-f", str(probe), "-e", env, "build"], timeout=300)
    finally:
        probe.unlink()
    doc = next(d for d in yaml.safe_load_all(out) if d and "helmDefaults" in d)
    return json.loads(doc["helmDefaults"]["kubeContext"])


def test_python_merges_environment_values_as_helmfile_does(project: RepoLayout) -> None:
    """`environments.settings` mirrors helmfile's merge of the layers' values.yaml: nested
    mappings merge, lists and scalars are replaced by the later layer."""
    environments.init_customer(project, "acme", "10.1.2.3", "10.1.2.4", "/acme")
    acme = project.customers_dir / "acme" / "values.yaml"
    acme.write_text(
        acme.read_text()
        + "ingress:\n  annotations: {a: '1'}\nextraList: [x]\nnested: {keep: {deep: 1}, replaced: [1, 2]}\n"
    )
    prod = project.environments_dir / "prod" / "values.yaml"
    prod.write_text(prod.read_text() + "extraList: [p, q]\nnested: {keep: {other: 2}, replaced: {was: map}}\n")
    for env in environments.discover(project):
        expected = {**environments.settings(project, env), "layers": list(env.layers)}
        assert helmfile_settings(project, env.name) == expected, env.name
