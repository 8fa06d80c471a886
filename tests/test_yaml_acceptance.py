"""Issue 10, section 1, end to end: real upstream YAML through `inv`, read back by the real tools.

kube-prometheus-stack's CRDs hold a bare `=` that PyYAML's safe loader rejects: with the chart in
the lock (release `prometheus` of the monitoring tier), `inv render --all` and `inv validate` must
pass. (Its upgrade report comparing all 10 CRDs: tests/test_upgrade.py, which runs that upgrade.)
A ConfigMap value `"1e3"` must reach kustomize (and through it Kubernetes) as the string that
`rendered/` shows.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from astrago_deploy.core import yaml
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.render.manifests import crd_files, images

from .test_upgrade import copy_synced, inv

KPS_REPO = "https://prometheus-community.github.io/helm-charts"
KPS_ASSETS = "github.com/prometheus-community/helm-charts/releases/download"
KPS_CRDS = sorted(
    f"{plural}.monitoring.coreos.com"
    for plural in (
        "alertmanagerconfigs", "alertmanagers", "podmonitors", "probes", "prometheusagents", "prometheuses",
        "prometheusrules", "scrapeconfigs", "servicemonitors", "thanosrulers",
    )
)  # fmt: skip


@dataclass(frozen=True)
class KpsProject:
    layout: RepoLayout
    rendered: subprocess.CompletedProcess[str]
    validated: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def kps(tmp_path_factory: pytest.TempPathFactory, synced_template: RepoLayout) -> KpsProject:
    layout = copy_synced(synced_template, tmp_path_factory.mktemp("kps") / "repo")
    assert VersionsLock.load(layout.lock_file).get("kube-prometheus-stack").repository == KPS_REPO
    rendered = inv(layout.root, "render", "--all")
    validated = inv(layout.root, "validate")
    return KpsProject(layout, rendered, validated)


def test_kube_prometheus_stack_renders_and_validates(kps: KpsProject) -> None:
    assert kps.rendered.returncode == 0, kps.rendered.stderr
    assert kps.validated.returncode == 0, kps.validated.stdout + kps.validated.stderr
    rendered = kps.layout.rendered_dir / "dev" / "prometheus.yaml"
    kinds = {doc.get("kind") for doc in yaml.read_all(rendered) if doc}
    assert "Prometheus" in kinds


def test_a_chart_added_with_global_image_registry_pulls_from_the_site_registry(kps: KpsProject) -> None:
    for env in environments.discover(kps.layout):
        registry = (environments.settings(kps.layout, env).get("offline") or {}).get("registry")
        rendered = kps.layout.rendered_dir / env.name / "prometheus.yaml"
        pulled = {image for doc in yaml.read_all(rendered) if doc for image in images(doc)}
        assert pulled, env.name
        if registry:
            assert sorted(i for i in pulled if not i.startswith(f"{registry}/")) == [], env.name
            assert f"{registry}/prometheus/node-exporter:v1.7.0" in pulled
        else:
            assert "quay.io/prometheus/node-exporter:v1.7.0" in pulled


def test_crd_files_are_the_crds_folders_not_a_subchart_named_crds(mirror: Path, tmp_path: Path) -> None:
    archive = mirror / KPS_ASSETS / "kube-prometheus-stack-69.8.2/kube-prometheus-stack-69.8.2.tgz"
    with tarfile.open(archive) as tgz:
        tgz.extractall(tmp_path, filter="data")
    chart = tmp_path / "kube-prometheus-stack"
    assert (chart / "charts/crds/templates/upgrade/job.yaml").is_file()  # a template, not a CRD
    files = crd_files(chart)
    assert [p.parent for p in files] == [chart / "charts/crds/crds"] * 10
    names = sorted(doc["metadata"]["name"] for path in files for doc in yaml.read_all(path) if doc)
    assert names == KPS_CRDS


# --- ambiguous strings in rendered/ --------------------------------------------------------

PROBE_VALUES = {"float": "1e3", "octal": "0o17", "bool": "yes", "sexagesimal": "1:20", "equals": "="}
PROBE_TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: yaml-probe
  namespace: {{ .Release.Namespace }}
data:
{{- range $key, $value := .Values.yamlProbe }}
  {{ $key }}: {{ $value | quote }}
{{- end }}
"""


def test_ambiguous_strings_survive_render_as_strings_through_kustomize(
    synced_project: RepoLayout, tmp_path: Path
) -> None:
    root = synced_project.root
    chart = synced_project.custom_dir / "astrago"
    (chart / "templates" / "yaml-probe.yaml").write_text(PROBE_TEMPLATE, encoding="utf-8")
    schema_file = chart / "values.schema.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    schema["properties"]["yamlProbe"] = {"type": "object", "additionalProperties": {"type": "string"}}
    schema_file.write_text(json.dumps(schema), encoding="utf-8")
    values = root / "environments" / "dev" / "releases" / "astrago.yaml"
    values.parent.mkdir(parents=True, exist_ok=True)
    values.write_text(yaml.dump({"yamlProbe": PROBE_VALUES}), encoding="utf-8")
    done = inv(root, "render", "--env", "dev")
    assert done.returncode == 0, done.stderr

    rendered = synced_project.rendered_dir / "dev" / "astrago.yaml"
    folder = tmp_path / "kustomize"
    folder.mkdir()
    (folder / "astrago.yaml").write_bytes(rendered.read_bytes())
    (folder / "kustomization.yaml").write_text("resources: [astrago.yaml]\n", encoding="utf-8")
    kubectl = str(root / ".tools" / "bin" / "kubectl")
    built = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True)
    (probe,) = [d for d in yaml.load_all(built.stdout) if d and d["metadata"]["name"] == "yaml-probe"]
    assert probe["data"] == PROBE_VALUES
    # ... and as Kubernetes reads kustomize's output (sigs.k8s.io/yaml, as JSON), text unchanged:
    (probe_text,) = [part for part in built.stdout.split("\n---\n") if "name: yaml-probe" in part]
    probe_file = tmp_path / "probe.yaml"
    probe_file.write_text(probe_text, encoding="utf-8")
    as_json = subprocess.run(
        [kubectl, "annotate", "--local", "-f", str(probe_file), "probe=1", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(as_json.stdout)["data"] == PROBE_VALUES
