"""The one reader of a vendored chart's defaults: subcharts by alias, the parent's values winning."""

from __future__ import annotations

from pathlib import Path

from astrago_deploy.charts.values import ChartValues
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.render.manifests import load_documents
from astrago_deploy.toolchain.pinned import PinnedTools


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def aliased_chart(root: Path) -> Path:
    """`app` uses subchart `worker` as `jobs` and overrides one key of its image."""
    chart = root / "app"
    write(
        chart / "Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 1.0.0\n"
        "dependencies:\n- name: worker\n  alias: jobs\n  version: 0.1.0\n",
    )
    write(chart / "values.yaml", "replicas: 1\njobs:\n  image:\n    tag: '2.0'\n")
    write(chart / "charts/worker/Chart.yaml", "apiVersion: v2\nname: worker\nversion: 0.1.0\n")
    write(chart / "charts/worker/values.yaml", "image:\n  repository: example/worker\n  tag: '1.0'\nport: 80\n")
    write(
        chart / "charts/worker/templates/image.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: image\n"
        "data:\n  repository: {{ .Values.image.repository | quote }}\n  tag: {{ .Values.image.tag | quote }}\n",
    )
    return chart


def test_subchart_defaults_sit_under_the_alias_with_the_parents_keys_merged_in(tmp_path: Path) -> None:
    values = ChartValues.load(aliased_chart(tmp_path))
    assert set(values.subcharts) == {"jobs"}
    assert values.coalesced_defaults() == {
        "replicas": 1,
        "jobs": {"image": {"repository": "example/worker", "tag": "2.0"}, "port": 80},
    }


def test_coalesced_defaults_agree_with_what_helm_renders(project: RepoLayout, tmp_path: Path) -> None:
    chart = aliased_chart(tmp_path)
    rendered = PinnedTools(project).run("helm", ["template", "demo", str(chart)])
    [config_map] = [d for d in load_documents(rendered) if d["kind"] == "ConfigMap"]
    image = ChartValues.load(chart).coalesced_defaults()["jobs"]["image"]
    assert config_map["data"] == image
