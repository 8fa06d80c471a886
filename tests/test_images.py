"""The image inventory: references, collection from rendered manifests, plugins, offline checks.

Small fixture manifests (written as rendered/<env>/<release>.yaml files and read by the same
loaders the task uses) pin each rule; the real render of the vendored charts (gpu-operator
v25.3.4, harbor, csi-driver-nfs, our charts) proves the acceptance values through `inv`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from astrago_deploy.core import yaml
from astrago_deploy.core.errors import ConfigError, ImageReferenceError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.images import inventory
from astrago_deploy.images.collect import rendered_uses
from astrago_deploy.images.reference import parse_image, site_reference
from astrago_deploy.images.uses import KindContext
from astrago_deploy.lint.overrides import check_settings
from astrago_deploy.model import environments

INV = [sys.executable, "-m", "invoke", "-r", str(Path(__file__).resolve().parent.parent)]
SHA = "sha256:" + "ab" * 32
REGISTRY = "10.61.3.20:30002"


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "qualified"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("goharbor/harbor-core:v2.10.2", "docker.io/goharbor/harbor-core:v2.10.2"),
        ("index.docker.io/goharbor/harbor-core:v2.10.2", "docker.io/goharbor/harbor-core:v2.10.2"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("localhost/app:1", "localhost/app:1"),
        ("localhost:5000/team/app:1", "localhost:5000/team/app:1"),
        ("10.0.0.1:30002/nvcr.io/nvidia/driver:580", "10.0.0.1:30002/nvcr.io/nvidia/driver:580"),
        ("[fd00::5]:8443/team/app:2", "[fd00::5]:8443/team/app:2"),
        (f"nginx@{SHA}", f"docker.io/library/nginx@{SHA}"),
        (f"nvcr.io/nvidia/cuda:12.4@{SHA}", f"nvcr.io/nvidia/cuda:12.4@{SHA}"),
        ("registry.k8s.io/pause", "registry.k8s.io/pause"),
    ],
)
def test_references_are_fully_qualified(written: str, qualified: str) -> None:
    assert str(parse_image(written)) == qualified


@pytest.mark.parametrize(
    ("written", "unpinned"),
    [("nginx", "no tag (pulls latest)"), ("nginx:latest", "tag latest"), (f"nginx@{SHA}", ""), ("nginx:1", "")],
)
def test_no_tag_or_latest_is_unpinned(written: str, unpinned: str) -> None:
    assert parse_image(written).unpinned == unpinned


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("Nvidia/Driver:1", "bad repository"),
        ("nginx:", "empty tag"),
        ("nginx@sha256:12", "bad digest"),
        ("nginx:bad tag", "whitespace"),
        ("", "empty"),
        ("host:99999/app", "bad registry"),
    ],
)
def test_unparseable_references_say_why(written: str, why: str) -> None:
    with pytest.raises(ImageReferenceError, match=why):
        parse_image(written)


def test_site_reference_drops_the_host_and_keeps_the_path() -> None:
    dcgm = parse_image("nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04")
    assert str(site_reference(dcgm, REGISTRY)) == f"{REGISTRY}/nvidia/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04"
    assert str(site_reference(dcgm, "harbor.site/proxy/")) == "harbor.site/proxy/nvidia/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04"
    pinned = parse_image(f"nginx:1.27@{SHA}")
    assert str(site_reference(pinned, REGISTRY)) == f"{REGISTRY}/library/nginx:1.27@{SHA}"


# --- fixture manifests ------------------------------------------------------------------------


def write_release(folder: Path, release: str, docs: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{release}.yaml"
    path.write_text(yaml.dump_all(docs), encoding="utf-8")
    return path


def pod(containers: list[dict[str, Any]], **lists: list[dict[str, Any]]) -> dict[str, Any]:
    return {"containers": containers, **lists}


def workload(kind: str, name: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": "apps"}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": pod_spec}
    if kind == "CronJob":
        spec = {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": meta, "spec": spec}
    group = "batch/v1" if kind == "Job" else "apps/v1"
    return {"apiVersion": group, "kind": kind, "metadata": meta, "spec": {"template": {"spec": pod_spec}}}


def images_and_why(folder: Path, node_os: tuple[str, ...] = ("ubuntu22.04",)) -> dict[str, list[str]]:
    uses, _ = rendered_uses(folder, KindContext(node_os))
    result = inventory.build("test", uses)
    assert result.errors == []
    return {item.image: list(item.why) for item in result.images}


def test_every_workload_kind_and_container_list_and_image_env_var(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    docs = [
        workload("Pod", "p", pod([{"name": "a", "image": "nginx:1.27"}])),
        workload("Deployment", "d", pod([{"name": "a", "image": "goharbor/harbor-core:v2.10.2"}])),
        workload("StatefulSet", "s", pod([{"name": "a", "image": "localhost:5000/team/db:16"}])),
        workload("DaemonSet", "ds", pod([{"name": "a", "image": "registry.k8s.io/sig-storage/nfsplugin:v4.9.0"}])),
        workload("ReplicaSet", "rs", pod([{"name": "a", "image": f"busybox@{SHA}"}])),
        workload(
            "Job",
            "j",
            pod(
                [{"name": "main", "image": "quay.io/org/job:1"}],
                initContainers=[{"name": "init", "image": "quay.io/org/init:1"}],
                ephemeralContainers=[{"name": "debug", "image": "quay.io/org/debug:1"}],
            ),
        ),
        workload(
            "CronJob",
            "c",
            pod(
                [
                    {
                        "name": "operator",
                        "image": "nvcr.io/nvidia/gpu-operator:v25.3.4",
                        "env": [
                            {"name": "DRIVER_MANAGER_IMAGE", "value": "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.8.1"},
                            {"name": "LOG_LEVEL", "value": "debug"},
                            {"name": "EMPTY_IMAGE", "value": ""},
                        ],
                    }
                ]
            ),
        ),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"image": "not/an:image"}},
    ]
    write_release(folder, "apps", docs)
    found = images_and_why(folder)
    assert found == {
        "docker.io/library/nginx:1.27": ["apps Pod/apps/p spec.containers[a].image"],
        "docker.io/goharbor/harbor-core:v2.10.2": ["apps Deployment/apps/d spec.template.spec.containers[a].image"],
        "localhost:5000/team/db:16": ["apps StatefulSet/apps/s spec.template.spec.containers[a].image"],
        "registry.k8s.io/sig-storage/nfsplugin:v4.9.0": ["apps DaemonSet/apps/ds spec.template.spec.containers[a].image"],
        f"docker.io/library/busybox@{SHA}": ["apps ReplicaSet/apps/rs spec.template.spec.containers[a].image"],
        "quay.io/org/job:1": ["apps Job/apps/j spec.template.spec.containers[main].image"],
        "quay.io/org/init:1": ["apps Job/apps/j spec.template.spec.initContainers[init].image"],
        "quay.io/org/debug:1": ["apps Job/apps/j spec.template.spec.ephemeralContainers[debug].image"],
        "nvcr.io/nvidia/gpu-operator:v25.3.4": [
            "apps CronJob/apps/c spec.jobTemplate.spec.template.spec.containers[operator].image"
        ],
        "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.8.1": [
            "apps CronJob/apps/c spec.jobTemplate.spec.template.spec.containers[operator].env[DRIVER_MANAGER_IMAGE]"
        ],
    }


def cluster_policy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "operator": {"initContainer": {"repository": "nvcr.io/nvidia", "image": "cuda", "version": "13.0.1-base-ubi9"}},
        "validator": {"repository": "nvcr.io/nvidia/cloud-native", "image": "gpu-operator-validator", "version": "v25.3.4"},
        "driver": {
            "enabled": True,
            "repository": "nvcr.io/nvidia",
            "image": "driver",
            "version": "580.82.07",
            "manager": {"repository": "nvcr.io/nvidia/cloud-native", "image": "k8s-driver-manager", "version": "v0.8.1"},
        },
        "toolkit": {"enabled": True, "repository": "nvcr.io/nvidia/k8s", "image": "container-toolkit", "version": "v1.17.8-ubuntu20.04"},
        "dcgmExporter": {"enabled": False, "repository": "nvcr.io/nvidia/k8s", "image": "dcgm-exporter", "version": "4.3.1"},
        "vfioManager": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "cuda", "version": "13.0.1-base-ubi9"},
        "nodeStatusExporter": {"repository": "nvcr.io/nvidia/cloud-native", "image": "gpu-operator-validator", "version": "v1"},
    }
    base.update(spec)
    return {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"}, "spec": base}


def test_cluster_policy_enabled_components_one_driver_per_node_os(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    write_release(folder, "gpu-operator", [cluster_policy()])
    found = images_and_why(folder, ("ubuntu22.04", "rhel9.4"))
    assert found == {
        "nvcr.io/nvidia/cuda:13.0.1-base-ubi9": ["gpu-operator ClusterPolicy/cluster-policy spec.operator.initContainer"],
        "nvcr.io/nvidia/cloud-native/gpu-operator-validator:v25.3.4": [
            "gpu-operator ClusterPolicy/cluster-policy spec.validator"
        ],
        "nvcr.io/nvidia/driver:580.82.07-ubuntu22.04": [
            "gpu-operator ClusterPolicy/cluster-policy spec.driver, node OS ubuntu22.04"
        ],
        "nvcr.io/nvidia/driver:580.82.07-rhel9.4": ["gpu-operator ClusterPolicy/cluster-policy spec.driver, node OS rhel9.4"],
        "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.8.1": [
            "gpu-operator ClusterPolicy/cluster-policy spec.driver.manager"
        ],
        "nvcr.io/nvidia/k8s/container-toolkit:v1.17.8-ubuntu20.04": ["gpu-operator ClusterPolicy/cluster-policy spec.toolkit"],
    }
    # dcgmExporter is disabled, nodeStatusExporter is off by the operator's default, and
    # vfioManager's own enabled flag does not count without sandboxWorkloads.


def test_cluster_policy_sandbox_workloads_digests_and_disabled_driver(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    policy = cluster_policy(
        driver={"enabled": False, "repository": "nvcr.io/nvidia", "image": "driver", "version": "580.82.07"},
        gds={"enabled": True, "repository": "nvcr.io/nvidia/cloud-native", "image": "nvidia-fs", "version": "2.20.5"},
        sandboxWorkloads={"enabled": True},
        vgpuManager={
            "enabled": True,
            "repository": "registry.example/vgpu",
            "image": "vgpu-manager",
            "version": SHA,
            "driverManager": {"repository": "nvcr.io/nvidia/cloud-native", "image": "k8s-driver-manager", "version": "v0.8.1"},
        },
        kataManager={
            "enabled": True,
            "repository": "nvcr.io/nvidia/cloud-native",
            "image": "k8s-kata-manager",
            "version": "v0.2.3",
            "config": {"runtimeClasses": [{"name": "kata", "artifacts": {"url": "nvcr.io/nvidia/cloud-native/kata-gpu-artifacts:1"}}]},
        },
    )
    write_release(folder, "gpu-operator", [policy])
    found = images_and_why(folder)
    assert "nvcr.io/nvidia/driver:580.82.07-ubuntu22.04" not in found  # driver disabled
    assert "nvcr.io/nvidia/cloud-native/nvidia-fs:2.20.5-ubuntu22.04" not in found  # a sidecar of the driver
    assert found[f"registry.example/vgpu/vgpu-manager@{SHA}"] == ["gpu-operator ClusterPolicy/cluster-policy spec.vgpuManager"]
    assert found["nvcr.io/nvidia/cuda:13.0.1-base-ubi9"] == [
        "gpu-operator ClusterPolicy/cluster-policy spec.operator.initContainer",
        "gpu-operator ClusterPolicy/cluster-policy spec.vfioManager",
    ]
    assert found["nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.8.1"] == [
        "gpu-operator ClusterPolicy/cluster-policy spec.vgpuManager.driverManager"
    ]
    assert found["nvcr.io/nvidia/cloud-native/kata-gpu-artifacts:1"] == [
        "gpu-operator ClusterPolicy/cluster-policy spec.kataManager.config.runtimeClasses[kata].artifacts.url"
    ]


def test_precompiled_driver_is_a_warning_at_its_field(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    driver = {"enabled": True, "usePrecompiled": True, "repository": "nvcr.io/nvidia", "image": "driver", "version": "580"}
    write_release(folder, "gpu-operator", [cluster_policy(driver=driver)])
    uses, findings = rendered_uses(folder, KindContext())
    assert not any("driver:" in use.image for use in uses)
    assert [(f.severity, f.key) for f in findings] == [("warning", "ClusterPolicy/cluster-policy spec.driver")]
    assert "kernel" in findings[0].message


def test_unknown_custom_resource_with_image_like_fields_warns_with_its_location(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    custom = {
        "apiVersion": "tracing.example.com/v1",
        "kind": "Collector",
        "metadata": {"name": "main", "namespace": "monitoring"},
        "spec": {"image": "quay.io/prometheus/prometheus:v2.54.1", "thanos": {"repository": "quay.io/thanos/thanos", "tag": "v0.36"}},
    }
    crd_like = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "x"}, "spec": {"image": "ignored"}}
    path = write_release(folder, "monitoring", [custom, crd_like])
    uses, findings = rendered_uses(folder, KindContext(), shown_root=tmp_path)
    assert uses == []
    assert [(f.severity, f.file, f.key) for f in findings] == [
        ("warning", str(path.relative_to(tmp_path)), "Collector/monitoring/main spec.image"),
        ("warning", str(path.relative_to(tmp_path)), "Collector/monitoring/main spec.thanos.repository"),
    ]
    assert "quay.io/prometheus/prometheus:v2.54.1" in findings[0].message and "images/kinds" in findings[0].fix


def monitoring_resource(kind: str, spec: dict[str, Any], api: str = "v1") -> dict[str, Any]:
    meta = {"name": "main", "namespace": "monitoring"}
    return {"apiVersion": f"monitoring.coreos.com/{api}", "kind": kind, "metadata": meta, "spec": spec}


def test_prometheus_operator_resources_and_the_config_reloader_flag(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    reloader = "quay.io/prometheus-operator/prometheus-config-reloader:v0.73.2"
    operator = workload(
        "Deployment",
        "prometheus-operator",
        pod([{"name": "operator", "image": "quay.io/prometheus-operator/prometheus-operator:v0.73.2",
              "args": ["--kubelet-service=kube-system/kubelet", f"--prometheus-config-reloader={reloader}"]}]),
    )  # fmt: skip
    docs = [
        operator,
        monitoring_resource(
            "Prometheus",
            {
                "image": "quay.io/prometheus/prometheus:v2.51.2",
                "version": "v2.51.2",
                "thanos": {},  # the sidecar runs, on the operator's default version: not knowable
                "containers": [{"name": "config-reloader"}, {"name": "oauth", "image": "quay.io/oauth2-proxy/oauth2-proxy:v7.6.0"}],
            },
        ),
        monitoring_resource("Alertmanager", {"version": "v0.27.0"}),  # base image and version
        monitoring_resource("ThanosRuler", {"baseImage": "quay.io/thanos/thanos", "sha": "ab" * 32}),
        monitoring_resource("PrometheusAgent", {"tag": "v2.51.2"}, api="v1alpha1"),
    ]
    write_release(folder, "prometheus", docs)
    uses, findings = rendered_uses(folder, KindContext())
    found = {(use.resource, use.field): use.image for use in uses}
    assert found == {
        ("Deployment/apps/prometheus-operator", "spec.template.spec.containers[operator].image"):
            "quay.io/prometheus-operator/prometheus-operator:v0.73.2",
        ("Deployment/apps/prometheus-operator", "spec.template.spec.containers[operator].args[--prometheus-config-reloader]"):
            reloader,
        ("Prometheus/monitoring/main", "spec.image"): "quay.io/prometheus/prometheus:v2.51.2",
        ("Prometheus/monitoring/main", "spec.containers[oauth].image"): "quay.io/oauth2-proxy/oauth2-proxy:v7.6.0",
        ("Alertmanager/monitoring/main", "spec.image"): "quay.io/prometheus/alertmanager:v0.27.0",
        ("ThanosRuler/monitoring/main", "spec.image"): f"quay.io/thanos/thanos@sha256:{'ab' * 32}",
        ("PrometheusAgent/monitoring/main", "spec.image"): "quay.io/prometheus/prometheus:v2.51.2",
    }  # fmt: skip
    assert [(f.severity, f.key) for f in findings] == [("warning", "Prometheus/monitoring/main spec.thanos.image")]
    assert "built-in default" in findings[0].message

    # The flag's other spelling (`--flag VALUE`) and a note saying who pulls the reloader.
    operator["spec"]["template"]["spec"]["containers"][0]["args"] = ["--prometheus-config-reloader", reloader]
    write_release(folder, "prometheus", [operator])
    (use,) = [u for u in rendered_uses(folder, KindContext())[0] if u.image == reloader]
    assert "every Prometheus and Alertmanager pod" in use.note


def test_unparseable_reference_is_an_error_naming_release_resource_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    write_release(folder, "astrago", [workload("Deployment", "web", pod([{"name": "web", "image": "Bad/Image:1"}]))])
    uses, findings = rendered_uses(folder, KindContext())
    result = inventory.build("dev", uses, findings=findings)
    assert [(e.key, e.message.split(":")[0]) for e in result.errors] == [
        ("Deployment/apps/web spec.template.spec.containers[web].image", "astrago")
    ]
    assert "Bad/Image:1" in result.errors[0].message


def test_untagged_and_latest_images_warn_but_are_listed(tmp_path: Path) -> None:
    folder = tmp_path / "rendered" / "dev"
    containers = [{"name": "a", "image": "nginx"}, {"name": "b", "image": "quay.io/x/y:latest"}]
    write_release(folder, "apps", [workload("Deployment", "d", pod(containers))])
    uses, findings = rendered_uses(folder, KindContext())
    result = inventory.build("dev", uses, findings=findings)
    assert [i.image for i in result.images] == ["docker.io/library/nginx", "quay.io/x/y:latest"]
    assert sorted(f.message for f in result.findings if f.severity == "warning") == [
        "apps: docker.io/library/nginx has no tag (pulls latest)",
        "apps: quay.io/x/y:latest has tag latest",
    ]


# --- offline environments ----------------------------------------------------------------------


def offline_inventory(tmp_path: Path, upstream: list[str], site: list[str]) -> inventory.Inventory:
    """The inventory of one Deployment whose containers hold `upstream` without the site registry
    and `site` as the environment renders it."""

    def folder(name: str, images: list[str]) -> Path:
        containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
        path = tmp_path / name / "stage"
        write_release(path, "apps", [workload("Deployment", "d", pod(containers))])
        return path

    context = KindContext()
    upstream_uses, _ = rendered_uses(folder("upstream", upstream), context)
    site_uses, _ = rendered_uses(folder("rendered", site), context)
    return inventory.build("stage", upstream_uses, registry=REGISTRY, site_uses=site_uses)


def test_offline_site_references_keep_the_path(tmp_path: Path) -> None:
    result = offline_inventory(
        tmp_path,
        ["goharbor/harbor-core:v2.10.2", "nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1"],
        [f"{REGISTRY}/goharbor/harbor-core:v2.10.2", f"{REGISTRY}/nvidia/k8s/dcgm-exporter:4.3.1"],
    )
    assert result.errors == []
    assert [(i.image, i.site) for i in result.images] == [
        ("docker.io/goharbor/harbor-core:v2.10.2", f"{REGISTRY}/goharbor/harbor-core:v2.10.2"),
        ("nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1", f"{REGISTRY}/nvidia/k8s/dcgm-exporter:4.3.1"),
    ]


def test_a_flattened_site_path_is_an_error(tmp_path: Path) -> None:
    result = offline_inventory(tmp_path, ["nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1"], [f"{REGISTRY}/dcgm-exporter:4.3.1"])
    assert len(result.errors) == 1
    assert result.errors[0].key == "Deployment/apps/d spec.template.spec.containers[c0].image"
    assert f"expected {REGISTRY}/nvidia/k8s/dcgm-exporter:4.3.1" in result.errors[0].message


def test_an_image_outside_the_site_registry_is_an_error(tmp_path: Path) -> None:
    result = offline_inventory(tmp_path, ["quay.io/org/app:1"], ["quay.io/org/app:1"])
    assert [e.message for e in result.errors] == [
        f"apps: image quay.io/org/app:1 is not pulled from the site registry {REGISTRY}"
    ]


def test_two_upstream_images_mapping_to_one_site_reference_collide(tmp_path: Path) -> None:
    result = offline_inventory(
        tmp_path,
        ["nvcr.io/nvidia/cuda:12.4", "docker.io/nvidia/cuda:12.4"],
        [f"{REGISTRY}/nvidia/cuda:12.4", f"{REGISTRY}/nvidia/cuda:12.4"],
    )
    assert [e.message for e in result.errors] == [
        f"docker.io/nvidia/cuda:12.4 and nvcr.io/nvidia/cuda:12.4 map to one site reference {REGISTRY}/nvidia/cuda:12.4"
    ]


# --- images.extra.yaml and settings ----------------------------------------------------------


def test_extra_images_are_merged_with_their_reason_for_rendered_releases(tmp_path: Path) -> None:
    extra = tmp_path / "images.extra.yaml"
    extra.write_text(
        "apps:\n  - image: ghcr.io/aquasecurity/trivy-db:2\n    reason: pulled by the scanner at start\n"
        "absent:\n  - image: quay.io/not/rendered:1\n    reason: its release is not rendered here\n",
        encoding="utf-8",
    )
    folder = tmp_path / "rendered" / "stage"
    write_release(folder, "apps", [workload("Deployment", "d", pod([{"name": "a", "image": f"{REGISTRY}/org/app:1"}]))])
    upstream = tmp_path / "upstream" / "stage"
    write_release(upstream, "apps", [workload("Deployment", "d", pod([{"name": "a", "image": "quay.io/org/app:1"}]))])
    context = KindContext()
    result = inventory.build(
        "stage",
        rendered_uses(upstream, context)[0],
        inventory.read_extra(extra),
        REGISTRY,
        rendered_uses(folder, context)[0],
    )
    assert result.errors == []
    assert [i.as_json() for i in result.images] == [
        {
            "image": "ghcr.io/aquasecurity/trivy-db:2",
            "site": f"{REGISTRY}/aquasecurity/trivy-db:2",
            "why": ["apps images.extra.yaml pulled by the scanner at start"],
        },
        {
            "image": "quay.io/org/app:1",
            "site": f"{REGISTRY}/org/app:1",
            "why": ["apps Deployment/apps/d spec.template.spec.containers[a].image"],
        },
    ]


def test_an_extra_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    extra = tmp_path / "images.extra.yaml"
    extra.write_text("apps:\n  - image: quay.io/x/y:1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"images.extra.yaml: apps\[0\]"):
        inventory.read_extra(extra)


def test_the_committed_extra_file_reads_and_every_entry_parses() -> None:
    path = Path(__file__).resolve().parent.parent / inventory.EXTRA_FILE
    entries = inventory.read_extra(path)
    assert entries, "images.extra.yaml is committed with at least one entry"
    for entry in entries:
        parse_image(entry.image)


def test_node_os_setting_is_checked() -> None:
    assert inventory.node_os({}, "dev") == ("ubuntu22.04",)
    assert inventory.node_os({"cluster": {"nodeOS": ["ubuntu22.04", "rhel9.4"]}}, "dev") == ("ubuntu22.04", "rhel9.4")
    for bad in ([], "ubuntu22.04", ["Ubuntu 22"]):
        with pytest.raises(ConfigError, match=r"cluster\.nodeOS"):
            inventory.node_os({"cluster": {"nodeOS": bad}}, "dev")


# --- the real render ---------------------------------------------------------------------------


def run_inv(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("ASTRAGO_ROOT", "ASTRAGO_DEBUG")}
    environ.update({"ASTRAGO_ROOT": str(root), "NO_COLOR": "1"})
    return subprocess.run([*INV, *args], cwd=root, env=environ, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_dev_and_stage_inventories_of_the_real_render(synced_project: RepoLayout) -> None:
    done = run_inv(synced_project.root, "images.list", "--env", "dev", "--env", "stage", "--json")
    assert done.returncode == 0, done.stderr
    dev, stage = json.loads(done.stdout)
    assert dev["environment"] == "dev" and stage["environment"] == "stage"
    dev_images = {item["image"]: item for item in dev["images"]}
    for expected in (
        "nvcr.io/nvidia/driver:580.82.07-ubuntu22.04",
        "nvcr.io/nvidia/k8s/container-toolkit:v1.17.8-ubuntu20.04",
        "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.8.1",
        "nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04",
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.4",
        "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.12.3-ubuntu20.04",
        "nvcr.io/nvidia/cloud-native/gpu-operator-validator:v25.3.4",
        "nvcr.io/nvidia/cuda:13.0.1-base-ubi9",
        "docker.io/goharbor/harbor-core:v2.10.2",
        "registry.k8s.io/sig-storage/nfsplugin:v4.9.0",
        "docker.io/xiilab/astrago:core-v1.0.80",
    ):
        assert expected in dev_images, expected
    # Disabled by the chart's values (dcgm) or sandbox-only (vGPU, VFIO, Kata): not pulled.
    assert not any("/dcgm:" in image or "vgpu" in image or "kata" in image for image in dev_images)
    assert "gpu-operator ClusterPolicy/cluster-policy spec.driver, node OS ubuntu22.04" in (
        dev_images["nvcr.io/nvidia/driver:580.82.07-ubuntu22.04"]["why"]
    )
    assert all(str(parse_image(image)) == image and "." in image.split("/")[0] for image in dev_images)
    assert all(item["site"] is None for item in dev["images"])
    assert list(dev_images) == sorted(dev_images)

    assert [item["image"] for item in stage["images"]] == list(dev_images)  # same charts, same upstream images
    for item in stage["images"]:
        upstream = parse_image(item["image"])
        pinned = f"@{upstream.digest}" if upstream.digest else ""  # ingress-nginx's images keep their digest
        assert item["site"] == f"{REGISTRY}/{upstream.repository}:{upstream.tag}{pinned}"
    assert any("@sha256:" in item["site"] for item in stage["images"])
    sites = {item["site"] for item in stage["images"]}
    uses, _ = rendered_uses(synced_project.rendered_dir / "stage", KindContext())
    rendered = {str(parse_image(use.image)) for use in uses}
    assert rendered and rendered <= sites


@pytest.mark.timeout(900)
def test_a_second_node_os_adds_a_driver_image_and_why_names_the_field(synced_project: RepoLayout) -> None:
    values = synced_project.environments_dir / "dev" / "values.yaml"
    text = values.read_text().replace("cluster:\n", "cluster:\n  nodeOS: [ubuntu22.04, rhel9.4]\n", 1)
    values.write_text(text, encoding="utf-8")
    base = yaml.read_mapping(synced_project.environments_dir / "base" / "values.yaml")
    assert check_settings(values, base, {"gpu-operator"}, synced_project.root) == []  # a declared setting
    assert inventory.node_os(environments.settings(synced_project, environments.get(synced_project, "dev")), "dev") == (
        "ubuntu22.04",
        "rhel9.4",
    )
    done = run_inv(synced_project.root, "images.list", "--env", "dev", "--why")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for os_tag in ("ubuntu22.04", "rhel9.4"):
        at = lines.index(f"nvcr.io/nvidia/driver:580.82.07-{os_tag}")
        assert lines[at + 1] == f"    gpu-operator ClusterPolicy/cluster-policy spec.driver, node OS {os_tag}"


@pytest.mark.timeout(900)
def test_the_render_rewrite_agrees_with_site_reference_for_a_docker_hub_official_image(
    synced_project: RepoLayout,
) -> None:
    """A chart default naming an official Docker Hub image (`nginx`) is rewritten by
    offline-images.yaml.gotmpl to REGISTRY/library/nginx, as `site_reference` says."""
    lock = yaml.read_mapping(synced_project.lock_file)
    version = str(lock["charts"]["harbor"]["version"])
    values = synced_project.chart_dir("harbor", version) / "values.yaml"
    text = values.read_text(encoding="utf-8")
    assert "repository: goharbor/nginx-photon" in text
    values.write_text(text.replace("repository: goharbor/nginx-photon", "repository: nginx", 1), encoding="utf-8")
    done = run_inv(synced_project.root, "images.list", "--env", "stage", "--json")
    assert done.returncode == 0, done.stderr
    sites = {item["image"]: item["site"] for item in json.loads(done.stdout)["images"]}
    assert sites["docker.io/library/nginx:v2.10.2"] == f"{REGISTRY}/library/nginx:v2.10.2"
    rendered = (synced_project.rendered_dir / "stage" / "harbor.yaml").read_text(encoding="utf-8")
    assert f"image: {REGISTRY}/library/nginx:v2.10.2" in rendered


def test_cluster_policy_of_gpu_operator_v25_10_1_from_the_mirror(tmp_path: Path, mirror: Path) -> None:
    """The plugin on another operator version, rendered by the pinned helm from the mirror:
    the driver per node OS, and the images its own values name (its validator is the operator)."""
    import tarfile

    archive = mirror / "nvidia.github.io" / "gpu-operator" / "stable" / "gpu-operator-v25.10.1.tgz"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "chart", filter="data")
    chart = tmp_path / "chart" / "gpu-operator"
    defaults = yaml.read_mapping(chart / "values.yaml")
    helm = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "helm"
    state = {name: str(tmp_path / "helm") for name in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME")}
    out = subprocess.run(
        [str(helm), "template", "gpu-operator", str(chart), "--namespace", "gpu-operator"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **state},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    write_release(tmp_path / "rendered" / "dev", "gpu-operator", yaml.load_all(out))
    found = images_and_why(tmp_path / "rendered" / "dev", ("ubuntu22.04", "ubuntu24.04"))

    def image(key: str, *nested: str) -> str:
        spec = defaults[key]
        for name in nested:
            spec = spec[name]
        return f"{spec['repository']}/{spec['image']}:{spec['version']}"

    driver = image("driver")
    assert driver == "nvcr.io/nvidia/driver:580.105.08"
    for os_tag in ("ubuntu22.04", "ubuntu24.04"):
        assert found[f"{driver}-{os_tag}"] == [f"gpu-operator ClusterPolicy/cluster-policy spec.driver, node OS {os_tag}"]
    for key in ("toolkit", "devicePlugin", "dcgmExporter", "migManager"):
        assert image(key) in found, key
    assert "gpu-operator ClusterPolicy/cluster-policy spec.driver.manager" in found[image("driver", "manager")]
    assert "gpu-operator ClusterPolicy/cluster-policy spec.validator" in found["nvcr.io/nvidia/gpu-operator:v25.10.1"]
    assert image("operator", "initContainer") in found
    assert not any(name in key for key in found for name in ("vgpu", "kata", "/dcgm:", "nvidia-fs", "gdrdrv"))


@pytest.mark.timeout(900)
def test_a_render_rewrite_that_flattens_paths_fails_the_task_naming_each_field(synced_project: RepoLayout) -> None:
    """The bug of the repository this one replaces: site references flattened to the last path
    component. `inv images.list` fails, naming the release, resource and field of each."""
    template = synced_project.helmfile_dir / "values" / "offline-images.yaml.gotmpl"
    text = template.read_text(encoding="utf-8")
    rewrite = '(printf "%s/%s" $registry $kept)'
    assert rewrite in text
    template.write_text(text.replace(rewrite, '(printf "%s/%s" $registry (base $kept))'), encoding="utf-8")
    done = run_inv(synced_project.root, "images.list", "--env", "stage")
    assert done.returncode != 0
    assert re.fullmatch(r"error: images\.list: \d+ error\(s\) in stage", done.stderr.strip().splitlines()[-1])
    expected = (
        f"rendered/stage/csi-driver-nfs.yaml: DaemonSet/kube-system/csi-nfs-node "
        f"spec.template.spec.containers[nfs].image: csi-driver-nfs: site reference {REGISTRY}/nfsplugin:v4.9.0 "
        f"does not match upstream registry.k8s.io/sig-storage/nfsplugin:v4.9.0 "
        f"(expected {REGISTRY}/sig-storage/nfsplugin:v4.9.0: host dropped, path kept)"
    )
    assert expected in done.stderr.splitlines()
    # An operand the operator starts from its ClusterPolicy: the repository field was flattened.
    assert (
        f"ClusterPolicy/cluster-policy spec.dcgmExporter: gpu-operator: site reference "
        f"{REGISTRY}/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04 does not match upstream "
        f"nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04"
    ) in done.stderr
    assert done.stdout == ""  # no inventory is printed when it is wrong
