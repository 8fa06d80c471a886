"""The monitoring tier as `inv render` writes it: release prometheus (kube-prometheus-stack) and
what it scrapes, read from `rendered/<env>/` of the real monorepo content and vendored charts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render.manifests import images, load_documents, read_documents
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import readme_secret_keys
from .test_helmfile import helmfile, releases
from .test_upgrade import copy_synced

Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, synced_template: RepoLayout) -> RepoLayout:
    """dev and stage rendered once for the module."""
    layout = copy_synced(synced_template, tmp_path_factory.mktemp("monitoring") / "repo")
    envs = [environments.get(layout, "dev"), environments.get(layout, "stage")]
    Renderer(layout, PinnedTools(layout), layout.rendered_dir).render(envs)
    return layout


def release(layout: RepoLayout, env: str, name: str) -> Docs:
    return read_documents(layout.rendered_dir / env / f"{name}.yaml")


def one(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    yield from spec.get("initContainers") or []
    yield from spec["containers"]


def setting(layout: RepoLayout, env: str, dotted: str) -> Any:
    return environments.setting(layout, environments.get(layout, env), dotted)


def test_dev_runs_prometheus_on_nfs_sized_for_dev_selecting_everything(rendered: RepoLayout) -> None:
    docs = release(rendered, "dev", "prometheus")
    spec = one(docs, "Prometheus")["spec"]
    assert (spec["retention"], spec["retentionSize"]) == ("3d", "4GB")  # environments/dev/values.yaml
    claim = spec["storage"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == setting(rendered, "dev", "nfs.storageClass") == "astrago-nfs-csi"
    assert claim["resources"]["requests"]["storage"] == "5Gi"
    # Every rule and monitor of the cluster, whichever release ships it (the GPU rules, DCGM's).
    for kind in ("rule", "serviceMonitor", "podMonitor", "probe", "scrapeConfig"):
        assert spec[f"{kind}Selector"] == {} and spec[f"{kind}NamespaceSelector"] == {}, kind
    assert one(docs, "Alertmanager")["metadata"]["namespace"] == "monitoring"
    # Prod keeps more, on a larger volume.
    assert (setting(rendered, "prod", "monitoring.prometheus.retention"), setting(rendered, "prod", "monitoring.prometheus.storage")) == ("30d", "100Gi")  # fmt: skip


def test_node_exporter_reads_the_directory_gpu_process_exporter_writes(rendered: RepoLayout) -> None:
    directory = setting(rendered, "dev", "monitoring.textfileDirectory")
    writer = one(release(rendered, "dev", "gpu-process-exporter"), "DaemonSet")
    written = {v["hostPath"]["path"] for v in writer["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
    assert directory in written
    reader = one(release(rendered, "dev", "prometheus"), "DaemonSet", "prometheus-prometheus-node-exporter")
    [node_exporter] = [c for c in containers(reader) if c["name"] == "node-exporter"]
    assert f"--collector.textfile.directory={directory}" in node_exporter["args"]
    # The chart's own arguments stay.
    assert any(a.startswith("--collector.filesystem.mount-points-exclude=") for a in node_exporter["args"])
    [volume] = [
        v for v in reader["spec"]["template"]["spec"]["volumes"] if v.get("hostPath", {}).get("path") == directory
    ]
    [mount] = [m for m in node_exporter["volumeMounts"] if m["name"] == volume["name"]]
    assert (mount["mountPath"], mount["readOnly"]) == (directory, True)


def test_dcgm_and_harbor_metrics_are_scraped(rendered: RepoLayout) -> None:
    # The DCGM exporter's ServiceMonitor is gpu-monitoring's, on the Service the operator makes
    # (app=nvidia-dcgm-exporter, port gpu-metrics in gpu-operator's namespace); the operator makes none.
    for env in ("dev", "stage"):
        policy = one(release(rendered, env, "gpu-operator"), "ClusterPolicy")
        assert policy["spec"]["dcgmExporter"]["serviceMonitor"]["enabled"] is False, env
        dcgm = one(release(rendered, env, "gpu-monitoring"), "ServiceMonitor", "gpu-monitoring-dcgm-exporter")["spec"]
        [operator] = [r for r in releases(rendered, env) if r["name"] == "gpu-operator"]
        assert dcgm["namespaceSelector"] == {"matchNames": [operator["namespace"]]}, env
        assert dcgm["selector"] == {"matchLabels": {"app": "nvidia-dcgm-exporter"}}
        assert [(e["port"], e["path"], e["honorLabels"]) for e in dcgm["endpoints"]] == [("gpu-metrics", "/metrics", True)]
    # Harbor's: a ServiceMonitor of release prometheus selecting harbor's metrics Services.
    monitor = one(release(rendered, "dev", "prometheus"), "ServiceMonitor", "harbor")["spec"]
    [harbor] = [r for r in releases(rendered, "dev") if r["name"] == "harbor"]
    assert monitor["namespaceSelector"] == {"matchNames": [harbor["namespace"]]}
    [endpoint] = monitor["endpoints"]
    selected = [
        d["metadata"]["name"]
        for d in release(rendered, "dev", "harbor")
        if d["kind"] == "Service"
        and monitor["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
        and any(p.get("name") == endpoint["port"] for p in d["spec"]["ports"])
    ]
    assert sorted(selected) == ["harbor-core", "harbor-exporter", "harbor-jobservice", "harbor-registry"]


def test_grafana_logs_in_from_an_existing_secret_and_loads_labelled_dashboards(rendered: RepoLayout) -> None:
    docs = release(rendered, "dev", "prometheus")
    grafana = one(docs, "Deployment", "prometheus-grafana")
    env = {e["name"]: e for c in containers(grafana) for e in c.get("env") or []}
    secret = setting(rendered, "dev", "monitoring.grafana.existingSecret")
    assert env["GF_SECURITY_ADMIN_USER"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "admin-user"}
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "admin-password"}
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "prometheus-grafana"]
    # ... which the README's "Secrets" section creates with those keys.
    assert readme_secret_keys(secret, "monitoring") == {"admin-user", "admin-password"}
    [sidecar] = [c for c in containers(grafana) if c["name"] == "grafana-sc-dashboard"]
    sidecar_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert (sidecar_env["LABEL"], sidecar_env["LABEL_VALUE"], sidecar_env["NAMESPACE"]) == (
        "grafana_dashboard",
        "1",
        "ALL",
    )
    # No host for Grafana in dev: no ingress.
    assert not [d for d in docs if d["kind"] == "Ingress"]


def test_astrago_queries_the_prometheus_service_of_the_release(rendered: RepoLayout) -> None:
    urls = {
        e["value"]
        for d in release(rendered, "dev", "astrago")
        if d["kind"] == "Deployment"
        for c in containers(d)
        for e in c.get("env") or []
        if "prometheus" in str(e.get("value", ""))
    }
    [url] = urls
    match = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", url)
    assert match, url
    name, namespace, port = match.groups()
    service = one(release(rendered, "dev", "prometheus"), "Service", name)
    assert service["metadata"]["namespace"] == namespace
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def test_stage_pulls_every_monitoring_image_from_the_site_registry(rendered: RepoLayout) -> None:
    registry = setting(rendered, "stage", "offline.registry")
    docs = release(rendered, "stage", "prometheus")
    pulled = set().union(*(images(d) for d in docs))
    # Images the operator starts: from the Prometheus and Alertmanager resources and its flags.
    pulled |= {one(docs, kind)["spec"]["image"] for kind in ("Prometheus", "Alertmanager")}
    operator = one(docs, "Deployment", "prometheus-kube-prometheus-operator")
    flags = [a for c in containers(operator) for a in c.get("args") or []]
    pulled |= {
        a.split("=", 1)[1]
        for a in flags
        if a.startswith(("--prometheus-config-reloader=", "--thanos-default-base-image="))
    }
    assert len(pulled) >= 10
    assert sorted(i for i in pulled if not i.startswith(f"{registry}/")) == []
    # The path is kept: only the registry changes.
    assert f"{registry}/prometheus/prometheus:v2.51.1" in pulled
    assert f"{registry}/prometheus-operator/prometheus-config-reloader:v0.73.0" in pulled
    assert f"{registry}/kiwigrid/k8s-sidecar:1.26.1" in pulled
    assert f"{registry}/ingress-nginx/kube-webhook-certgen:v20221220-controller-v1.5.1-58-g787ea74b6" in pulled
    # Harbor's exporter too (harbor's metrics are on).
    assert f"{registry}/goharbor/harbor-exporter:v2.10.2" in set().union(
        *(images(d) for d in release(rendered, "stage", "harbor"))
    )


def test_grafana_gets_an_ingress_on_its_host_with_the_environments_tls(synced_project: RepoLayout) -> None:
    out = helmfile(
        synced_project, "-e", "prod", "-l", "app=prometheus", "--state-values-set", "ingress.hosts.grafana=grafana.example.com",
        "template", "--skip-deps",
    )  # fmt: skip
    ingress = one(load_documents(out), "Ingress")
    assert ingress["metadata"]["name"] == "prometheus-grafana"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["grafana.example.com"]
    assert ingress["spec"]["tls"] == [{"hosts": ["grafana.example.com"], "secretName": "astrago-tls"}]
