"""The release model comes from helmfile itself: every release it lists is seen, however the tier
file writes it, and checks built on the model (charts.verify, the override check) see them all."""

from __future__ import annotations

import pytest

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.diagnostics import format_diagnostic
from astrago_deploy.core.errors import HelmfileError, ToolNotInstalledError
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.lint.overrides import check_overrides
from astrago_deploy.model.releases import declared_releases, releases

COMMITTED = {
    "csi-driver-nfs", "gpu-operator-addons", "gpu-operator", "harbor", "ingress-nginx",
    "prometheus", "gpu-process-exporter", "gpu-monitoring", "keycloak-addons", "keycloak-postgresql",
    "keycloak", "astrago-mariadb", "astrago",
}  # fmt: skip

# Quoted names, trailing comments, `chart:` before `name:`: all valid YAML the old regex missed.
ODD_ENTRIES = """
# Written the way people write YAML.
- chart: ../charts/custom/gpu-process-exporter
  name: "quoted-exporter"   # double-quoted, with a comment
  namespace: monitoring
  labels: {tier: monitoring, app: quoted-exporter}
- namespace: 'web'
  chart: {{ index .Charts "nginx" }}
  name: 'web' # single-quoted; nginx is not locked
  labels: {tier: monitoring, app: web}
"""


def indent(text: str) -> str:
    """Every line two spaces deeper: the whole sequence indented under `releases:`."""
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def test_quoted_commented_reordered_and_indented_releases_are_all_seen(synced_project: RepoLayout) -> None:
    infrastructure = synced_project.releases_dir / "infrastructure.yaml.gotmpl"
    # harbor: chart first, a quoted name with a comment.
    infrastructure.write_text(
        infrastructure.read_text().replace(
            '- name: harbor\n  namespace: harbor\n  chart: {{ index .Charts "harbor" | required "harbor is not in charts/versions.lock" }}\n',
            '- chart: {{ index .Charts "harbor" }}  # the image registry\n  name: "harbor"  # quoted\n  namespace: harbor\n',
        )
    )
    monitoring = synced_project.releases_dir / "monitoring.yaml.gotmpl"
    monitoring.write_text(monitoring.read_text() + ODD_ENTRIES)
    for tier_file in synced_project.releases_dir.glob("*.yaml.gotmpl"):
        tier_file.write_text(indent(tier_file.read_text()))

    found = {r.name: r for r in declared_releases(synced_project)}

    assert set(found) == COMMITTED | {"quoted-exporter", "web"}
    infra_lines = infrastructure.read_text().splitlines()
    assert found["harbor"].tier_file == infrastructure
    assert (
        found["harbor"].line == infra_lines.index('  - chart: {{ index .Charts "harbor" }}  # the image registry') + 1
    )
    assert (found["harbor"].locked_chart, found["harbor"].tier) == ("harbor", "infrastructure")
    assert found["quoted-exporter"].custom_chart == "gpu-process-exporter"
    assert found["quoted-exporter"].labels == {"tier": "monitoring", "app": "quoted-exporter"}
    assert (found["web"].locked_chart, found["web"].namespace) == ("nginx", "web")

    # charts.verify sees the unlocked chart of a release the regex could not see, on its line.
    lines = monitoring.read_text().splitlines()
    assert [(p.file, p.line, p.key, p.message) for p in ChartVendor(synced_project, Fetcher()).verify()] == [
        (
            "helmfile/releases/monitoring.yaml.gotmpl",
            lines.index("  - namespace: 'web'") + 1,
            "release web",
            "chart 'nginx' is not in the lock",
        )
    ]
    # The override check knows harbor (the regex lost it: "there is no release 'harbor'").
    override = synced_project.environments_dir / "dev" / "releases" / "harbor.yaml"
    override.write_text("exposee:\n  type: nodePort\n")
    [problem] = [format_diagnostic(p) for p in check_overrides(synced_project)]
    assert problem.startswith("environments/dev/releases/harbor.yaml:1: exposee: not a value of chart harbor")


def test_answers_are_cached_until_an_input_changes(project: RepoLayout) -> None:
    first = releases(project, "dev")
    assert releases(project, "dev") is first  # no second helmfile call for the same inputs

    tier = project.releases_dir / "applications.yaml.gotmpl"
    tier.write_text(tier.read_text() + "\n- name: extra\n  namespace: extra\n  chart: ../charts/custom/extra\n")

    assert {r.name for r in releases(project, "dev")} == COMMITTED | {"extra"}


def test_a_failing_helmfile_is_a_helmfile_error_with_its_stderr(project: RepoLayout) -> None:
    project.helmfile.write_text(project.helmfile.read_text() + '\n{{ fail "broken on purpose" }}\n')
    with pytest.raises(HelmfileError, match="broken on purpose") as caught:
        releases(project, "dev")
    assert "broken on purpose" in caught.value.stderr


def test_a_missing_helmfile_is_a_typed_error_not_an_empty_list(project: RepoLayout) -> None:
    (project.tools_bin / "helmfile").unlink()
    with pytest.raises(ToolNotInstalledError, match="helmfile is not installed"):
        declared_releases(project)
