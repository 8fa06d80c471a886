"""ingress-nginx: the controller as each exposure renders it, its class and certificate, its images
at offline sites, and the releases served through it (Astrago, Harbor with a host name).

Every test renders the real helmfile and vendored charts with `helmfile template`; settings an
environment could hold are given with `--state-values-set`. The renders only read the project,
so they share the session's synced copy."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.images.reference import parse_image, site_reference
from astrago_deploy.render import manifests

from .test_helmfile import helmfile

Doc = dict[str, Any]


def rendered(layout: RepoLayout, env: str, *settings: str, app: str = "ingress-nginx") -> list[Doc]:
    sets = [a for s in settings for a in ("--state-values-set", s)]
    out = helmfile(layout, "-e", env, *sets, "-l", f"app={app}", "template", "--skip-deps")
    return [d for d in yaml.safe_load_all(out) if d]


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name or ''}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def controller_args(workload: Doc) -> list[str]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def images(docs: list[Doc]) -> set[str]:
    return set().union(*(manifests.images(d) for d in docs))


def test_dev_runs_the_controller_as_the_default_class_on_node_ports_of_the_external_ip(
    synced_template: RepoLayout,
) -> None:
    docs = rendered(synced_template, "dev")
    ingress_class = only(docs, "IngressClass")
    assert ingress_class["metadata"]["name"] == "nginx"
    assert ingress_class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    assert ingress_class["spec"]["controller"] == "k8s.io/ingress-nginx"
    controller = only(docs, "Deployment", "ingress-nginx-controller")
    assert not [d for d in docs if d["kind"] == "DaemonSet"]
    args = controller_args(controller)
    assert "--ingress-class=nginx" in args and "--controller-class=k8s.io/ingress-nginx" in args
    assert not [a for a in args if a.startswith("--default-ssl-certificate")]  # dev has no TLS
    assert not controller["spec"]["template"]["spec"].get("hostNetwork")
    service = only(docs, "Service", "ingress-nginx-controller")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalIPs"] == ["10.61.3.10"]
    assert {p["name"]: p["nodePort"] for p in service["spec"]["ports"]} == {"http": 30080, "https": 30443}
    # Metrics are served; the ServiceMonitor waits for the Prometheus operator's CRDs.
    assert only(docs, "Service", "ingress-nginx-controller-metrics")["spec"]["type"] == "ClusterIP"
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]


def test_host_network_exposure_runs_a_daemonset_on_the_nodes_ports(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "dev", "ingress.exposure=hostNetwork")
    assert not [d for d in docs if d["kind"] == "Deployment"]
    controller = only(docs, "DaemonSet", "ingress-nginx-controller")
    pod = controller["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    [container] = pod["containers"]
    assert {p["containerPort"] for p in container["ports"]} >= {80, 443}
    args = controller_args(controller)
    assert "--report-node-internal-ip-address=true" in args
    assert not [a for a in args if a.startswith("--publish-service")]  # no Service holds the address
    service = only(docs, "Service", "ingress-nginx-controller")
    assert service["spec"]["type"] == "ClusterIP" and "externalIPs" not in service["spec"]


def test_load_balancer_exposure_renders_a_load_balancer_service(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "dev", "ingress.exposure=loadBalancer")
    only(docs, "Deployment", "ingress-nginx-controller")
    service = only(docs, "Service", "ingress-nginx-controller")
    assert service["spec"]["type"] == "LoadBalancer"
    assert "externalIPs" not in service["spec"]
    assert not [p for p in service["spec"]["ports"] if "nodePort" in p]  # the cluster allocates them


def test_an_unknown_exposure_is_refused_naming_the_setting(synced_template: RepoLayout) -> None:
    with pytest.raises(AstragoError, match=r'ingress.exposure is "nodeport": use nodePort, hostNetwork or loadBalancer'):
        rendered(synced_template, "dev", "ingress.exposure=nodeport")


def test_with_tls_the_environment_secret_is_the_default_certificate(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "prod")
    args = controller_args(only(docs, "Deployment", "ingress-nginx-controller"))
    assert "--default-ssl-certificate=ingress-nginx/astrago-tls" in args


def test_the_service_monitor_is_a_setting(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "dev", "ingress.serviceMonitor=true")
    monitor = only(docs, "ServiceMonitor", "ingress-nginx-controller")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_the_class_name_is_one_setting_for_the_controller_and_astrago(synced_template: RepoLayout) -> None:
    astrago = only(rendered(synced_template, "dev", app="astrago"), "Ingress")
    assert astrago["spec"]["ingressClassName"] == "nginx"
    assert only(rendered(synced_template, "dev", "ingress.className=web"), "IngressClass")["metadata"]["name"] == "web"
    renamed = only(rendered(synced_template, "dev", "ingress.className=web", app="astrago"), "Ingress")
    assert renamed["spec"]["ingressClassName"] == "web"


def test_harbor_with_a_host_name_is_served_through_the_ingress(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "prod", "ingress.hosts.harbor=harbor.example.com", app="harbor")
    ingress = only(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["harbor.example.com"]
    assert {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]} >= {"/", "/v2/", "/api/"}
    # prod has TLS: the environment's certificate, and HTTPS in the URL Harbor hands out.
    assert ingress["spec"]["tls"] == [{"secretName": "astrago-tls", "hosts": ["harbor.example.com"]}]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
    assert only(docs, "ConfigMap", "harbor-core")["data"]["EXT_ENDPOINT"] == "https://harbor.example.com"
    assert not [d for d in docs if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"]
    assert not [d for d in docs if d["kind"] == "Secret" and d["type"] == "kubernetes.io/tls"]  # nothing generated
    built = helmfile(synced_template, "-e", "prod", "--state-values-set", "ingress.hosts.harbor=harbor.example.com",
                     "build")  # fmt: skip
    harbor = next(
        r for d in yaml.safe_load_all(built) if d and "releases" in d for r in d["releases"] if r["name"] == "harbor"
    )
    assert any(n.endswith("ingress-nginx/ingress-nginx") for n in harbor["needs"])


def test_harbor_with_a_host_name_and_no_tls_speaks_http(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "dev", "ingress.hosts.harbor=harbor.dev.example", app="harbor")
    ingress = only(docs, "Ingress")
    assert "tls" not in ingress["spec"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "false"
    assert only(docs, "ConfigMap", "harbor-core")["data"]["EXT_ENDPOINT"] == "http://harbor.dev.example"


def test_harbor_without_a_host_name_keeps_its_node_port(synced_template: RepoLayout) -> None:
    docs = rendered(synced_template, "dev", app="harbor")
    assert not [d for d in docs if d["kind"] == "Ingress"]
    service = only(docs, "Service", "harbor")
    assert service["spec"]["type"] == "NodePort"
    assert [p["nodePort"] for p in service["spec"]["ports"] if p["name"] == "http"] == [30002]
    assert only(docs, "ConfigMap", "harbor-core")["data"]["EXT_ENDPOINT"] == "http://10.61.3.10:30002"


def test_offline_sites_pull_the_controller_and_certgen_from_the_site_registry_by_the_same_digest(
    synced_template: RepoLayout,
) -> None:
    upstream = images(rendered(synced_template, "dev"))
    assert {parse_image(i).repository for i in upstream} == {
        "ingress-nginx/controller",
        "ingress-nginx/kube-webhook-certgen",
    }
    assert all(parse_image(i).digest for i in upstream), upstream  # the chart pins by digest
    for env, registry in (("stage", "10.61.3.20:30002"), ("sample-site", "192.168.50.10:30002")):
        site = images(rendered(synced_template, env))
        # Host dropped, path, tag and digest kept: the reference the bundle loads the image under.
        assert site == {str(site_reference(parse_image(i), registry)) for i in upstream}, env
