"""The gpu-monitoring chart: its alert rules and dashboard read only metrics that really exist.

The known metrics come from their sources in this repository: the DCGM fields the metrics
ConfigMap of gpu-operator-addons exports, the metric names gpu-process-exporter's script writes
(its `# HELP` lines), plus the few kube-state-metrics and Prometheus series the rules name.
promtool is not available here, so expressions are checked by a small PromQL tokenizer: brackets
balance, and every bare name that is not a function, keyword or label list is a known metric.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from astrago_deploy.core.errors import HelmError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render.manifests import images, load_documents
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT, make_project

CHART = PROJECT / "charts" / "custom" / "gpu-monitoring"
KUBE_STATE_METRICS = {"kube_pod_info", "kube_node_status_capacity", "kube_node_status_allocatable"}
PROMETHEUS = {"up"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}  # fmt: skip
_PAIRS = {")": "(", "]": "[", "}": "{"}


def dcgm_fields() -> set[str]:
    values = yaml.safe_load((PROJECT / "charts/custom/gpu-operator-addons/values.yaml").read_text())
    return {metric["field"] for metric in values["dcgmMetrics"]["metrics"]}


def process_exporter_metrics() -> set[str]:
    script = (PROJECT / "charts/custom/gpu-process-exporter/files/gpu-process-exporter.sh").read_text()
    return set(re.findall(r"# HELP (\w+) ", script))


KNOWN = dcgm_fields() | process_exporter_metrics() | KUBE_STATE_METRICS | PROMETHEUS


def balanced(expr: str) -> bool:
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            return False
    return not stack


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, matchers, ranges and label lists
    removed; a name followed by `(` is a function or an aggregation)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


def test_the_promql_checks_themselves() -> None:
    expr = (
        'max by (Hostname, gpu) (DCGM_FI_DEV_XID_ERRORS{gpu=~"$gpu"} offset 30m) unless on (UUID) '
        'label_replace(rate(up[5m]), "a", "$1", "b", "(.*)") > bool 0'
    )
    assert metric_names(expr) == {"DCGM_FI_DEV_XID_ERRORS", "up"}
    assert metric_names("time() - max_over_time((count(x))[6h:5m]) > 1e3") == {"x"}
    assert balanced(expr) and not balanced('sum(x{a="("}') and not balanced("(x]")


@pytest.fixture(scope="module")
def chart_project(tmp_path_factory: pytest.TempPathFactory) -> RepoLayout:
    return make_project(tmp_path_factory.mktemp("gpu-monitoring") / "repo", with_git=False)


def template(layout: RepoLayout, *args: str) -> list[dict[str, Any]]:
    chart = layout.custom_dir / "gpu-monitoring"
    out = PinnedTools(layout).run(
        "helm", ["template", "gpu-monitoring", str(chart), "--namespace", "monitoring", *args]
    )
    return load_documents(out)


def rules_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    found = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    by_name = {r["alert"]: r for r in found}
    assert len(by_name) == len(found), "an alert name is used twice"
    return by_name


def test_every_alert_parses_reads_known_metrics_and_says_what_to_do(chart_project: RepoLayout) -> None:
    alerts = rules_of(template(chart_project))
    for name, rule in alerts.items():
        expr = rule["expr"]
        assert balanced(expr), f"{name}: unbalanced brackets in {expr}"
        used = metric_names(expr)
        assert used, f"{name} reads no metric"
        assert used <= KNOWN, f"{name} reads metrics nothing exports: {sorted(used - KNOWN)}"
        assert DURATION.match(rule["for"]), f"{name}: for {rule['for']!r}"
        assert rule["labels"]["severity"] in SEVERITIES, name
        for annotation in ("summary", "description", "runbook"):
            assert rule["annotations"].get(annotation, "").strip(), f"{name} has no {annotation}"
    # The list: XID errors, temperature, ECC/retired pages, fallen off the bus, exporters down.
    assert {"GpuXidCritical", "GpuXidError", "GpuFallenOffTheBus", "GpuMissing", "GpuUnhealthy",
            "GpuTemperatureHigh", "GpuMemoryTemperatureHigh", "GpuEccDoubleBitErrors", "GpuRetiredPagesHigh",
            "GpuRowRemapFailure", "DcgmExporterDown", "GpuProcessExporterStale"} <= set(alerts)  # fmt: skip
    assert "DCGM_FI_DEV_XID_ERRORS == 48" in alerts["GpuXidCritical"]["expr"]
    assert "DCGM_FI_DEV_XID_ERRORS == 79" in alerts["GpuFallenOffTheBus"]["expr"]
    # XIDs with an alert of their own are left out of the catch-all warning.
    assert re.search(r"unless \(DCGM_FI_DEV_XID_ERRORS == 79 or .*== 48", alerts["GpuXidError"]["expr"])
    assert alerts["GpuXidCritical"]["labels"]["severity"] == "critical"
    assert alerts["GpuXidError"]["labels"]["severity"] == "warning"


def test_thresholds_labels_and_links_come_from_values(chart_project: RepoLayout) -> None:
    alerts = rules_of(template(
        chart_project,
        "--set", "alerts.GpuTemperatureHigh.threshold=80",
        "--set", "alerts.GpuXidCritical.enabled=false",
        "--set", "alerts.GpuXidError.ignoredCodes={13,45}",
        "--set", "prometheusRule.alertLabels.team=gpu-ops",
        "--set", "runbookBaseUrl=https://wiki.example/gpu/",
        "--set", "grafanaUrl=https://grafana.example",
    ))  # fmt: skip
    assert alerts["GpuTemperatureHigh"]["expr"].endswith("(DCGM_FI_DEV_GPU_TEMP) > 80")
    assert "GpuXidCritical" not in alerts
    xid = alerts["GpuXidError"]
    # With the critical alert off, its XIDs warn instead; ignored ones never do.
    assert xid["expr"].endswith(
        "unless (DCGM_FI_DEV_XID_ERRORS == 13 or DCGM_FI_DEV_XID_ERRORS == 45 or DCGM_FI_DEV_XID_ERRORS == 79))"
    )
    assert xid["labels"] == {"severity": "warning", "team": "gpu-ops"}
    assert xid["annotations"]["runbook_url"] == "https://wiki.example/gpu#gpuxiderror"
    dashboard_uid = json.loads((CHART / "dashboards/gpu-cluster.json").read_text())["uid"]
    assert xid["annotations"]["dashboard_url"] == (
        f"https://grafana.example/d/{dashboard_uid}?var-node={{{{ $labels.Hostname }}}}"
    )
    assert alerts["DcgmExporterAbsent"]["annotations"]["dashboard_url"] == f"https://grafana.example/d/{dashboard_uid}"
    # Without the URLs there are no link annotations at all.
    plain = rules_of(template(chart_project))["GpuXidError"]["annotations"]
    assert set(plain) == {"summary", "description", "runbook"}


def test_dashboard_configmap_is_labelled_for_the_sidecar_and_its_queries_read_known_metrics(
    chart_project: RepoLayout,
) -> None:
    [config_map] = [d for d in template(chart_project) if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    [(key, text)] = config_map["data"].items()
    assert key == "gpu-cluster.json"
    dashboard = json.loads(text)
    assert dashboard == json.loads((CHART / "dashboards" / key).read_text())

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert {"node", "gpu"} <= set(variables)
    queries = [v["query"]["query"] for v in variables.values() if v["type"] == "query"]
    targets = [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(targets) > 10
    for title, target in targets:
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        queries.append(target["expr"])
    panel_ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(panel_ids)) == len(panel_ids)
    for expr in queries:
        inner = re.sub(r"^label_values\((.*), \w+\)$", r"\1", expr)
        assert balanced(inner), expr
        assert metric_names(inner) <= KNOWN, f"{expr}: {sorted(metric_names(inner) - KNOWN)}"
    used = set().union(*(metric_names(expr) for expr in queries))
    # The panels the issue asks for: utilisation, memory, power, temperatures, XIDs, per process.
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_XID_ERRORS",
            "gpu_process_memory_used_bytes", "kube_pod_info"} <= used  # fmt: skip


def test_offline_and_pull_secret_keys_are_accepted_and_render_no_image(chart_project: RepoLayout) -> None:
    docs = template(
        chart_project, "--set", "offline.registry=harbor.local:30002", "--set", "imagePullSecrets[0]=regcred"
    )
    assert {d["kind"] for d in docs} == {"PrometheusRule", "ConfigMap", "ServiceMonitor"}
    assert set().union(*(images(d) for d in docs)) == set()


def test_a_misspelt_value_is_refused(chart_project: RepoLayout) -> None:
    with pytest.raises(HelmError, match="Additional property threshold is not allowed"):
        template(chart_project, "--set", "alerts.GpuXidCritical.threshold=1")


def test_the_release_follows_the_environment(chart_project: RepoLayout) -> None:
    """gpu-process-exporter's alerts go with that release; links use the environment's Grafana host."""
    out = PinnedTools(chart_project).run(
        "helmfile",
        ["-f", str(chart_project.helmfile), "-e", "dev", "-l", "app=gpu-monitoring",
         "--state-values-set", "releases.gpu-process-exporter.enabled=false,ingress.hosts.grafana=grafana.example",
         "template", "--skip-deps"],
        timeout=300,
    )  # fmt: skip
    alerts = rules_of(load_documents(out))
    assert not [name for name in alerts if name.startswith("GpuProcessExporter")]
    assert alerts["GpuXidCritical"]["annotations"]["dashboard_url"].startswith("http://grafana.example/d/")


def test_rendered_dev_holds_the_xid_alert(synced_project: RepoLayout) -> None:
    renderer = Renderer(synced_project, PinnedTools(synced_project), synced_project.rendered_dir)
    renderer.render([environments.get(synced_project, "dev")])
    rendered: Path = synced_project.rendered_dir / "dev" / "gpu-monitoring.yaml"
    alerts = rules_of(load_documents(rendered.read_text()))
    assert "DCGM_FI_DEV_XID_ERRORS" in alerts["GpuXidCritical"]["expr"]
    assert {"GpuProcessExporterStale", "GpuProcessExporterAbsent"} <= set(alerts)
