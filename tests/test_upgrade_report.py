"""The upgrade report's content: environments grouped by identical changes, changes of version
labels only counted apart, and changelog links only to the chart's own release notes.

Renders are real files read by the real diff code; changelog entries are the upstream indexes
of the offline mirror. The whole upgrade on the real gpu-operator chart is in test_upgrade.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from astrago_deploy.charts.index import parse_index
from astrago_deploy.render.diff import diff_folders, load_render
from astrago_deploy.upgrade.report import (
    UpgradeReport,
    ValuesDiff,
    diff_images,
    group_equal,
    group_images,
    release_links,
    split_version_label_changes,
    through_registry,
)

# --- grouping -----------------------------------------------------------------------------


def test_group_equal_keeps_the_environments_order() -> None:
    groups = group_equal({"dev": 1, "stage": 2, "prod": 1, "acme": 3, "sample-site": 2})
    assert groups == [(["dev", "prod"], 1), (["stage", "sample-site"], 2), (["acme"], 3)]


def image_diff(prefix: str, *, driver: str = "580.105.08") -> dict[str, Any]:
    return diff_images(
        {f"{prefix}nvidia/gpu-operator:v25.3.4", f"{prefix}nvidia/driver:580.82.07", f"{prefix}nvidia/validator:1"},
        {f"{prefix}nvidia/gpu-operator:v25.10.1", f"{prefix}nvidia/driver:{driver}", f"{prefix}nvidia/fs:2.26.6"},
    )


def test_through_registry_rewrites_the_host_like_the_offline_images_template() -> None:
    assert through_registry("nvcr.io/nvidia/driver:1", "10.0.0.1:30002") == "10.0.0.1:30002/nvidia/driver:1"
    assert through_registry("localhost/app:1", "r:5000") == "r:5000/app:1"
    assert through_registry("registry:5000/app:1", "r:5000") == "r:5000/app:1"
    # No host: Docker Hub's library path is kept whole.
    assert through_registry("goharbor/harbor-core:v2", "r:5000") == "r:5000/goharbor/harbor-core:v2"


def test_images_identical_or_identical_through_the_site_registry_are_one_group() -> None:
    images = {
        "dev": image_diff("nvcr.io/"),
        "stage": image_diff("10.0.0.1:30002/"),
        "prod": image_diff("nvcr.io/"),
        "sample-site": image_diff("192.168.50.10:30002/"),
        # pulls through its registry, but gets another driver: its changes are its own
        "acme": image_diff("10.9.9.9:5000/", driver="590.1"),
        # changes nothing (the release is disabled there)
        "lab": diff_images(set(), set()),
    }
    registries = {"stage": "10.0.0.1:30002", "sample-site": "192.168.50.10:30002", "acme": "10.9.9.9:5000"}

    groups = group_images(images, registries)

    assert [(g.envs, g.through_registry) for g in groups] == [
        (["dev", "prod"], {"stage": "10.0.0.1:30002", "sample-site": "192.168.50.10:30002"}),
        (["acme"], {}),
        (["lab"], {}),
    ]
    assert groups[0].changes == images["dev"]
    assert groups[1].changes == images["acme"]


def test_site_registry_environments_alone_are_grouped_exactly() -> None:
    images = {"stage": image_diff("10.0.0.1:30002/"), "sample-site": image_diff("10.0.0.1:30002/")}
    groups = group_images(images, {"stage": "10.0.0.1:30002", "sample-site": "10.0.0.1:30002"})
    assert [(g.envs, g.through_registry) for g in groups] == [(["stage", "sample-site"], {})]


# --- version labels -------------------------------------------------------------------------


def deployment(version: str, image: str = "app:1") -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "demo",
        "app.kubernetes.io/version": version,
        "helm.sh/chart": f"demo-{version}",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "demo", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }


def service(version: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "demo", "helm.sh/chart": f"demo-{version}"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "demo", "namespace": "demo", "labels": labels},
        "spec": {"selector": labels, "ports": [{"port": 80}]},
    }


def config_map(name: str, version: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "demo", "labels": {"helm.sh/chart": f"demo-{version}"}},
        **extra,
    }


def secret(version: str, password: str) -> dict[str, Any]:
    meta = {"name": "demo", "namespace": "demo", "labels": {"helm.sh/chart": f"demo-{version}"}}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": {"password": password}}


def render(folder: Path, version: str, *, image: str = "app:1", data: str = "a", password: str = "cGFzcw==") -> Path:
    docs = [
        deployment(version, image),
        service(version),
        config_map("plain", version),
        # the label key as data, not as a label: a change there is a real change
        config_map("settings", version, data={"helm.sh/chart": data}),
        secret(version, password),
    ]
    folder.mkdir(parents=True)
    (folder / "demo.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return folder


def test_changes_of_version_labels_only_are_told_apart(tmp_path: Path) -> None:
    before = render(tmp_path / "before", "1.0.0")
    after = render(tmp_path / "after", "1.1.0", data="b", password="b3RoZXI=")
    diff = diff_folders("dev", before, after)
    assert len(diff.changes) == 5

    real, labels_only = split_version_label_changes(diff, load_render(before), load_render(after))

    # The Deployment's selector and pod template labels, the Service's selector: labels still.
    # A Secret whose data changed reads as the diff shows it (values as digests): a real change.
    assert [c.resource for c in labels_only.changes] == [
        "ConfigMap/demo/plain", "Deployment/demo/demo", "Service/demo/demo",
    ]  # fmt: skip
    assert [c.resource for c in real.changes] == ["ConfigMap/demo/settings", "Secret/demo/demo"]


def test_an_image_change_beside_the_labels_is_a_real_change(tmp_path: Path) -> None:
    before = render(tmp_path / "before", "1.0.0")
    after = render(tmp_path / "after", "1.1.0", image="app:2")
    diff = diff_folders("dev", before, after)
    real, labels_only = split_version_label_changes(diff, load_render(before), load_render(after))
    assert [c.resource for c in real.changes] == ["Deployment/demo/demo"]
    assert "Deployment/demo/demo" not in [c.resource for c in labels_only.changes]


def test_the_older_chart_label_counts_only_when_it_names_a_chart_version(tmp_path: Path) -> None:
    def write(folder: Path, chart_label: str, team: str) -> Path:
        docs = [
            config_map("legacy", "x") | {"metadata": {"name": "legacy", "labels": {"chart": chart_label}}},
            config_map("team", "x") | {"metadata": {"name": "team", "labels": {"chart": team}}},
        ]
        folder.mkdir(parents=True)
        (folder / "demo.yaml").write_text(yaml.safe_dump_all(docs))
        return folder

    # kube-prometheus-stack labels everything `chart: kube-prometheus-stack-<version>`.
    before = write(tmp_path / "before", "kube-prometheus-stack-58.0.1", "payments")
    after = write(tmp_path / "after", "kube-prometheus-stack-69.8.2", "billing")
    diff = diff_folders("dev", before, after)

    real, labels_only = split_version_label_changes(diff, load_render(before), load_render(after))

    assert [c.resource for c in labels_only.changes] == ["ConfigMap//legacy"]
    assert [c.resource for c in real.changes] == ["ConfigMap//team"]


# --- the report -------------------------------------------------------------------------------


def grouped_report(tmp_path: Path) -> UpgradeReport:
    resources, labels = {}, {}
    for env, image in (("dev", "app:2"), ("prod", "app:2"), ("stage", "app:3")):
        before = render(tmp_path / env / "before", "1.0.0")
        after = render(tmp_path / env / "after", "1.1.0", image=image)
        diff = diff_folders(env, before, after)
        resources[env], labels[env] = split_version_label_changes(diff, load_render(before), load_render(after))
    return UpgradeReport(
        chart="demo", release_names=["demo"], old="1.0.0", new="1.1.0", old_app="", new_app="", values=ValuesDiff(),
        overrides=[], crds={"added": [], "removed": [], "changed": {}},
        images={"dev": image_diff("nvcr.io/"), "prod": image_diff("nvcr.io/"), "stage": image_diff("10.0.0.1:30002/")},
        resources=resources, version_labels_only=labels, patches=[], changelog=[],
        offline_registries={"stage": "10.0.0.1:30002"},
    )  # fmt: skip


def test_markdown_shows_each_list_once_per_group_of_environments(tmp_path: Path) -> None:
    report = grouped_report(tmp_path)
    markdown = report.markdown()

    assert markdown.count("retagged `nvcr.io/nvidia/driver:580.82.07` -> `nvcr.io/nvidia/driver:580.105.08`") == 1
    assert "**dev, prod, stage (through `10.0.0.1:30002`)**" in markdown
    assert "10.0.0.1:30002/nvidia/driver" not in markdown
    # dev and prod changed the same resources (the same way); stage's image differs, its list does not.
    assert "- **dev, prod, stage**: 0 added, 0 removed, 1 changed; 4 resources: version labels only" in markdown
    assert markdown.count("  - changed `Deployment/demo/demo` (demo)") == 1
    # The diff sections: one per distinct diff, none for version labels only.
    assert "<summary>dev, prod: 1 resource(s)</summary>" in markdown
    assert "<summary>stage: 1 resource(s)</summary>" in markdown
    assert "Service/demo/demo" not in markdown.split("## Rendered diffs")[1]
    assert "+      - image: app:3" in markdown
    # The full diff keeps everything.
    assert "Service/demo/demo" in report.full_diff()


def test_json_keeps_each_environment_and_adds_the_groups(tmp_path: Path) -> None:
    data = json.loads(json.dumps(grouped_report(tmp_path).as_json()))

    assert sorted(data["images"]) == ["dev", "prod", "stage"]
    assert [(g["envs"], g["through_registry"]) for g in data["image_groups"]] == [
        (["dev", "prod", "stage"], {"stage": "10.0.0.1:30002"}),
    ]
    assert data["image_groups"][0]["retagged"] == data["images"]["dev"]["retagged"]
    labels_only = ["ConfigMap/demo/plain", "ConfigMap/demo/settings", "Secret/demo/demo", "Service/demo/demo"]
    assert data["resources"]["stage"] == {
        "added": [], "removed": [], "changed": ["Deployment/demo/demo"], "version_labels_only": labels_only,
    }  # fmt: skip
    assert data["resource_groups"] == [{"envs": ["dev", "prod", "stage"], **data["resources"]["dev"]}]


# --- changelog links --------------------------------------------------------------------------


def links(mirror: Path, index: str, chart: str, version: str) -> list[str]:
    repo = parse_index(f"https://{index}", (mirror / index / "index.yaml").read_bytes())
    return release_links(repo.find(chart, version))


def test_release_links_name_only_the_charts_own_release_notes(mirror: Path) -> None:
    # A multi-chart repository: the release the archive is attached to, not the upstream
    # project the chart also lists as a source (prometheus-operator/kube-prometheus).
    kps = links(mirror, "prometheus-community.github.io/helm-charts", "kube-prometheus-stack", "69.8.2")
    assert kps == ["https://github.com/prometheus-community/helm-charts/releases/tag/kube-prometheus-stack-69.8.2"]
    nginx = links(mirror, "kubernetes.github.io/ingress-nginx", "ingress-nginx", "4.11.3")
    assert nginx == ["https://github.com/kubernetes/ingress-nginx/releases/tag/helm-chart-4.11.3"]
    # The chart's own repository, versioned with its application.
    gpu = links(mirror, "nvidia.github.io/gpu-operator", "gpu-operator", "v25.10.1")
    assert gpu == ["https://github.com/NVIDIA/gpu-operator/releases/tag/v25.10.1"]
    # harbor 1.14.2 ships harbor 2.10.x: goharbor/harbor's tags are not the chart's. No guess.
    assert links(mirror, "helm.goharbor.io", "harbor", "1.14.2") == []
    # No sources at all.
    csi = "raw.githubusercontent.com/kubernetes-csi/csi-driver-nfs/master/charts"
    assert links(mirror, csi, "csi-driver-nfs", "4.13.4") == []


def test_a_release_notes_annotation_is_linked(mirror: Path) -> None:
    payload = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "entries": {
                "demo": [
                    {
                        "name": "demo",
                        "version": "2.0.0",
                        "appVersion": "5.1.0",
                        "urls": ["https://charts.example.com/demo-2.0.0.tgz"],
                        "sources": ["https://github.com/example/upstream-project"],
                        "annotations": {
                            "artifacthub.io/links": "- name: Release Notes\n  url: https://example.com/demo/2.0.0\n"
                            "- name: Upstream Project\n  url: https://github.com/example/upstream-project\n"
                        },
                    }
                ]
            },
        }
    ).encode()
    entry = parse_index("https://charts.example.com", payload).find("demo", "2.0.0")
    assert release_links(entry) == ["https://example.com/demo/2.0.0"]
