"""Generated values: which charts can generate them, which values two real renders prove random,
and what the renderer and the lint check do when a release generates one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.lint.determinism import check_generated
from astrago_deploy.model import environments
from astrago_deploy.render.generated import NORMALIZED, chart_random_calls, normalize_generated, random_calls
from astrago_deploy.render.manifests import digest_secret, load_documents
from astrago_deploy.render.renderer import Renderer, generated_by
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT

TEMPLATE = """\
apiVersion: v1
kind: Secret
metadata:
  name: app
type: Opaque
data:
  random: {{ randAlphaNum 24 | b64enc | quote }}
  fixed: {{ .Values.config | b64enc | quote }}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata:
      labels: {app: app}
      annotations:
        checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
        checksum/config: {{ .Values.config | sha256sum }}
    spec:
      containers:
        - name: app
          image: example.org/app:1
"""


def make_chart(root: Path) -> Path:
    chart = root / "app"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("config: settings\n")
    (chart / "templates" / "secret.yaml").write_text(TEMPLATE)
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    return chart


def test_random_calls_are_found_in_template_actions_only() -> None:
    text = (
        "# randAlphaNum in a YAML comment is text\nnow: {{ now | date \"2006\" }}\n"
        "{{/* genCA in a template comment */}}\nkey: {{ genPrivateKey \"rsa\" }}\nplain: {{ .Values.uuidv4x }}\n"
    )
    assert random_calls(text) == {"now", "genPrivateKey"}


def test_chart_random_calls_read_every_template_of_the_chart_and_its_subcharts(tmp_path: Path) -> None:
    chart = make_chart(tmp_path)
    (chart / "charts" / "sub" / "templates").mkdir(parents=True)
    (chart / "charts" / "sub" / "templates" / "_helpers.tpl").write_text('{{ define "x" }}{{ htpasswd "u" "p" }}{{ end }}')
    (chart / "values.yaml").write_text("# genCA: not a template\n")
    assert chart_random_calls(chart) == {"randAlphaNum", "htpasswd"}
    assert chart_random_calls(PROJECT / "charts" / "custom" / "astrago") == set()


def test_two_real_renders_prove_which_values_are_random(project: RepoLayout, tmp_path: Path) -> None:
    chart = make_chart(tmp_path)
    tools = PinnedTools(project)
    first, second = (
        load_documents(tools.run("helm", ["template", "app", str(chart)], cwd=tmp_path)) for _ in range(2)
    )
    replaced = normalize_generated(first, second)
    # The random key and the checksum of the Secret that holds it differ; the configured value
    # and the checksum of configuration do not, so they stay (and so would show a change).
    assert replaced == ["Secret//app data.random", "Deployment//app spec.template.metadata.annotations.checksum/secret"]
    secret, deployment = first
    assert secret["data"]["random"] == NORMALIZED
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/secret"] == NORMALIZED
    assert annotations["checksum/config"] == hashlib.sha256(b"settings").hexdigest()
    shown = digest_secret(secret, keep=(NORMALIZED,))
    assert shown["data"] == {"random": NORMALIZED, "fixed": f"sha256:{hashlib.sha256(b'settings').hexdigest()}"}


def test_lists_and_documents_only_one_render_has() -> None:
    first = [{"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}, "list": [1, 2, {"x": "r1"}]},
             {"kind": "ConfigMap", "metadata": {"name": "only-here"}, "data": {"k": "x"}}]
    second = [{"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}, "list": [1, 2, {"x": "r2"}]}]
    assert normalize_generated(first, second) == ["ConfigMap//a list[2].x"]
    assert first[1]["data"] == {"k": "x"}
    changed_length = [{"kind": "ConfigMap", "metadata": {"name": "a"}, "list": [1]}]
    again = [{"kind": "ConfigMap", "metadata": {"name": "a"}, "list": [1, 2]}]
    assert normalize_generated(changed_length, again) == ["ConfigMap//a list"]
    assert changed_length[0]["list"] == NORMALIZED


def generate_xsrf_key(layout: RepoLayout) -> None:
    """Take harbor's XSRF key away from its existing Secret: the chart then generates one."""
    values = layout.helmfile_dir / "values" / "harbor.yaml.gotmpl"
    text = values.read_text()
    for line in ("  existingXsrfSecret: harbor-core-xsrf\n", "  existingXsrfSecretKey: CSRF_KEY\n"):
        assert line in text
        text = text.replace(line, "")
    values.write_text(text)


def test_the_renderer_normalizes_and_names_a_generated_value_and_nothing_else(synced_project: RepoLayout) -> None:
    generate_xsrf_key(synced_project)
    renderer = Renderer(synced_project, PinnedTools(synced_project), synced_project.rendered_dir, use_cache=False)
    dev = environments.get(synced_project, "dev")
    [result] = renderer.render([dev])
    assert result.normalized == {"harbor": [
        "Secret//harbor-core data.CSRF_KEY",
        "Deployment//harbor-core spec.template.metadata.annotations.checksum/secret",
        "Deployment//harbor-jobservice spec.template.metadata.annotations.checksum/secret-core",
        "Deployment//harbor-registry spec.template.metadata.annotations.checksum/secret-core",
    ]}
    first = (result.out_dir / "harbor.yaml").read_bytes()
    [core] = [d for d in load_documents(first.decode()) if d["kind"] == "Secret" and d["metadata"]["name"] == "harbor-core"]
    assert core["data"] == {"CSRF_KEY": NORMALIZED}
    renderer.render([dev])
    assert (result.out_dir / "harbor.yaml").read_bytes() == first
    # `inv render` names the resources it had to normalize.
    env = {**os.environ, "ASTRAGO_ROOT": str(synced_project.root)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "render", "--env", "dev",
                           "--no-cache"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "harbor: normalized values that differ between two renders of the same inputs" in proc.stdout
    assert "Secret//harbor-core (data.CSRF_KEY); Deployment//harbor-core (spec.template" in proc.stdout
    summary = json.loads((result.out_dir / ".summary.json").read_text())
    assert summary["normalized"]["harbor"][0] == "Secret//harbor-core data.CSRF_KEY"


def test_the_lint_check_fails_on_a_generated_value_and_passes_on_our_values(synced_project: RepoLayout) -> None:
    assert check_generated(synced_project, ["dev", "prod"]) == []
    generate_xsrf_key(synced_project)
    problems = check_generated(synced_project, ["dev", "prod"])
    assert (problems[0].file, problems[0].key) == ("helmfile/values/harbor.yaml.gotmpl", "Secret//harbor-core data.CSRF_KEY")
    assert problems[0].message == (
        "harbor generates Secret//harbor-core data.CSRF_KEY afresh on every render (dev, prod): every deploy replaces it"
    )
    assert problems[0].fix == 'make the chart read it from an existing Secret (README "Secrets")'
    assert all(p.severity == "error" for p in problems) and len(problems) == 4


def post_render_calls(layout: RepoLayout, tmp_path: Path) -> Path:
    """Wrap scripts/post-render so each call appends `release ASTRAGO_PATCHES` to a log."""
    log = tmp_path / "post-render.log"
    script = layout.root / "scripts" / "post-render"
    script.rename(script.with_name("post-render.real"))
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$2 ${{ASTRAGO_PATCHES:-on}}" >> "{log}"\n'
        f'exec "{script}.real" "$@"\n'
    )
    script.chmod(0o755)
    return log


def test_a_reproducible_patched_release_is_proven_without_patching_it_twice(
    synced_project: RepoLayout, tmp_path: Path
) -> None:
    """harbor can generate values and is patched: its second render is unpatched and compared
    with the unpatched input the first render's post-renderer kept, so kustomize runs for it
    once; a release that does generate is rendered a third time, patched (the test above)."""
    log = post_render_calls(synced_project, tmp_path)
    renderer = Renderer(synced_project, PinnedTools(synced_project), synced_project.rendered_dir, use_cache=False)
    [result] = renderer.render([environments.get(synced_project, "dev")])
    assert result.normalized == {}
    calls = log.read_text().splitlines()
    assert calls.count("harbor on") == 1 and calls.count("harbor off") == 1, calls
    assert calls.count("gpu-operator on") == 1 and "gpu-operator off" not in calls, calls
    # No kept input is left behind in the tools' temporary folder.
    assert not list(synced_project.tools_tmp.rglob("unpatched-*"))

    generate_xsrf_key(synced_project)
    log.write_text("")
    [result] = renderer.render([environments.get(synced_project, "dev")])
    assert result.normalized["harbor"][0] == "Secret//harbor-core data.CSRF_KEY"
    calls = log.read_text().splitlines()
    assert calls.count("harbor on") == 2 and calls.count("harbor off") == 1, calls


def test_which_releases_can_generate_is_read_from_the_charts_their_documents_name(synced_project: RepoLayout) -> None:
    """helm's `# Source: CHART/...` lines name the chart that produced each document (subcharts
    under their parent); a release naming no chart, or one the checkout does not hold, is
    proven like a generating one."""
    source = "---\n# Source: {}/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\n"
    texts = {
        "harbor": source.format("harbor"),
        "nfs": source.format("csi-driver-nfs"),
        "gpu": source.format("gpu-operator") + source.format("gpu-operator/charts/node-feature-discovery"),
        "ours": source.format("astrago"),
        "unknown": source.format("not-a-chart-here"),
        "unnamed": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        "empty": "",
    }
    assert generated_by(synced_project, texts) == ["harbor", "unknown", "unnamed"]
    # A generating function in our own chart makes its releases generating too.
    template = synced_project.custom_dir / "astrago" / "templates" / "generated.yaml"
    template.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: g}\ndata: {k: {{ uuidv4 | quote }}}\n")
    assert generated_by(synced_project, texts) == ["harbor", "ours", "unknown", "unnamed"]
