"""The one YAML module: reading what Kubernetes reads, writing what it reads back, editing in place.

The oracle for "what Kubernetes reads" is the pinned kubectl itself: `kubectl annotate --local
-o json` reads a file through sigs.k8s.io/yaml (as the apiserver and helm do) and prints JSON,
and `kubectl kustomize` is the reader rendered files meet on their way to a cluster.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml as pyyaml

from astrago_deploy.charts import scaffold
from astrago_deploy.charts.index import parse_index
from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.diagnostics import Diagnostic, format_diagnostic
from astrago_deploy.core.errors import ConfigError, FetchError, FileAccessError, InputError, YamlError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import LockedChart, VersionsLock
from astrago_deploy.upgrade import report as upgrade_report
from tests.conftest import PROJECT, snapshot

KUBECTL = PROJECT / ".tools" / "bin" / "kubectl"
PACKAGE = PROJECT / "src" / "astrago_deploy"

# Plain scalars on which PyYAML's YAML 1.1 and go-yaml (Kubernetes, helm) disagree, or which a
# careless writer leaves unquoted. inf/nan are left out: Kubernetes' JSON cannot hold them.
PLAIN_SCALARS = [
    "1e3", "-1E-3", "1e+3", "0.1e3", "0o17", "0O17", "-0o17", "0777", "0x1F", "0x_1F", "0b101", "-0b11",
    "1_000", "1__0", "1_", "_1", "0_17", "08", "00", "-0", "1.", ".5", "+1", "1_0.5", "1:20", "190:20:30",
    "y", "Y", "n", "N", "yes", "YES", "YeS", "no", "on", "On", "off", "OFF", "True", "tRUE", "false",
    "~", "null", "Null", "NULL", "=", "<<", "2001-12-14", "2001-1-2", "2001-12-14t21:59:43.10-05:00",
    "1e", "e3", "0x", "NaN", "Inf", "infinity", ".Nan", "plain", "a",
]  # fmt: skip

# Strings the dumper must quote: ambiguous in YAML 1.1 or 1.2, to go-yaml v2 or v3.
AMBIGUOUS = [
    "1e3", "-1E-3", "1E3", "0o17", "0x1F", "0b101", "1_000", "1:20", "190:20:30.15", "0777", "08", ".5", "+1",
    "yes", "Yes", "YES", "YeS", "no", "NO", "on", "ON", "oN", "off", "Off", "y", "Y", "n", "N", "true", "FALSE",
    "~", "null", "Null", "NULL", "nUll", ".inf", "-.Inf", ".nan", ".NaN", "NaN", "inf", "=", "<<",
    "2001-12-14", "2001-1-2", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "",
]  # fmt: skip


def kubectl_reads(path: Path) -> Any:
    """What Kubernetes reads from the manifest at `path` (sigs.k8s.io/yaml, as JSON)."""
    done = subprocess.run(
        [str(KUBECTL), "annotate", "--local", "-f", str(path), "probe=1", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def kustomize(folder: Path) -> str:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def config_map(data_lines: list[str]) -> str:
    body = "".join(f"  {line}\n" for line in data_lines)
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n{body}"


# --- the loader --------------------------------------------------------------------------


def test_a_bare_equals_sign_loads_as_the_string() -> None:
    text = "spec:\n  operators: [=, '!=', =~]\n  match:\n    - name: a\n      type: =\n"
    with pytest.raises(pyyaml.YAMLError):
        pyyaml.safe_load(text)  # pyyaml#89: what the loader is for
    assert yaml.load(text) == {"spec": {"operators": ["=", "!=", "=~"], "match": [{"name": "a", "type": "="}]}}


def test_kube_prometheus_stacks_crd_with_the_equals_sign_loads(mirror: Path, tmp_path: Path) -> None:
    archive = mirror / "github.com/prometheus-community/helm-charts/releases/download"
    archive = archive / "kube-prometheus-stack-58.0.1/kube-prometheus-stack-58.0.1.tgz"
    member = "kube-prometheus-stack/charts/crds/crds/crd-alertmanagerconfigs.yaml"
    with tarfile.open(archive) as tgz:
        handle = tgz.extractfile(member)
        assert handle is not None
        path = tmp_path / "crd.yaml"
        path.write_bytes(handle.read())
    with pytest.raises(pyyaml.YAMLError):
        list(pyyaml.safe_load_all(path.read_text(encoding="utf-8")))
    (crd,) = [doc for doc in yaml.read_all(path) if doc]
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "alertmanagerconfigs.monitoring.coreos.com"
    assert "=" in json.dumps(crd)


def test_plain_scalars_load_as_kubernetes_reads_them(tmp_path: Path) -> None:
    lines = [f"k{i:02d}: {value}" for i, value in enumerate(PLAIN_SCALARS)]
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(config_map(lines), encoding="utf-8")
    expected = kubectl_reads(manifest)["data"]
    ours = yaml.read(manifest)["data"]
    for i, value in enumerate(PLAIN_SCALARS):
        key = f"k{i:02d}"
        # JSON has one number type: compare 1000 and 1000.0 as numbers, the rest exactly.
        assert ours[key] == expected[key], value
        assert isinstance(ours[key], str) == isinstance(expected[key], str), value
        assert isinstance(ours[key], bool) == isinstance(expected[key], bool), value


def test_mapping_keys_become_strings_as_kubernetes_reads_them(tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(config_map(["1: one", "y: yes-key", "on: on-key", "0o17: octal", "1.5: float"]))
    expected = kubectl_reads(manifest)["data"]
    assert yaml.read(manifest)["data"] == expected == {
        "1": "one",
        "true": "on-key",
        "15": "octal",
        "1.5": "float",
    }


def test_merge_keys_and_anchors_still_work() -> None:
    assert yaml.load("base: &b {a: 1, b: 2}\nover:\n  <<: *b\n  b: 3\n")["over"] == {"a": 1, "b": 3}


def test_load_all_keeps_empty_documents_as_none() -> None:
    assert yaml.load_all("a: 1\n---\n---\nb: =\n") == [{"a": 1}, None, {"b": "="}]


# --- YamlError ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        pytest.param("a: 1\nb: [2, 3\nc: 4\n", 3, 2, "expected ',' or ']'", id="unclosed-flow"),
        pytest.param("a: 1\nb: 2\n  c: 3\n", 3, 4, "mapping values are not allowed", id="bad-indent"),
        pytest.param("a: 1\n\tb: 2\n", 2, 1, "tab character", id="tab"),
        pytest.param("a: 1\n~: 2\n", 2, 1, "a null mapping key", id="null-key"),
        pytest.param("a: !!set [1]\n", 1, 4, "expected a mapping, but found a sequence", id="set-of-a-list"),
        pytest.param("a: 1\nb: !!timestamp x\n", 2, 4, "cannot read this timestamp value", id="bad-timestamp"),
        pytest.param("a: 1\nb: \x07\n", 2, 4, "control characters are not allowed", id="control-character"),
    ],
)
def test_yaml_errors_are_one_line_at_file_line_and_column(
    tmp_path: Path, text: str, line: int, column: int, reason: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlError) as caught:
        yaml.read(path)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert (error.path, error.line, error.column) == (path, line, column)
    assert str(error).startswith(f"{path}:{line}:{column}: not valid YAML: ")
    assert reason in str(error)
    assert str(error).endswith(" (correct the YAML at that place)")
    assert "\n" not in str(error) and "http" not in str(error)


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        pytest.param("a: 1\na: 2\n", ":2:1:", 'found duplicate key "a"', id="duplicate-key"),
        pytest.param("a: !!int x\n", ":1:4:", "cannot read this int value", id="bad-int"),
        pytest.param("a: !!bool x\n", ":1:4:", "cannot read this bool value", id="bad-bool"),
        pytest.param("a: !!map [1]\n", ":1:4:", "expected a mapping node", id="map-of-a-list"),
        pytest.param("a: 1\nb: \x07\n", ":2:4:", "special characters are not allowed", id="control-character"),
    ],
)
def test_editor_errors_are_one_line_without_ruamel_s_help(tmp_path: Path, text: str, where: str, reason: str) -> None:
    # ruamel's own message for a duplicate key runs to ten lines with links to its documentation.
    with pytest.raises(YamlError) as caught:
        yaml.parse_for_edit(text, tmp_path / "v.yaml")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'v.yaml'}{where} not valid YAML: ")
    assert reason in message
    assert "\n" not in message and "http" not in message


def test_bytes_that_are_not_utf8_are_an_error_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(FileAccessError, match=r"values\.yaml:2: not UTF-8 text \(byte 0xe9 at offset 11\)"):
        yaml.read(path)


def test_read_mapping_refuses_other_documents(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("- a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping, got list"):
        yaml.read_mapping(path)
    assert yaml.read_mapping(tmp_path / "missing.yaml", missing_ok=True) == {}


# --- the dumper --------------------------------------------------------------------------


@pytest.mark.parametrize("value", AMBIGUOUS)
def test_the_dumper_quotes_every_ambiguous_string(value: str) -> None:
    text = yaml.dump({"v": value})
    assert text != f"v: {value}\n"
    assert pyyaml.safe_load(text) == {"v": value}  # YAML 1.1
    assert yaml.load(text) == {"v": value}  # go-yaml v2


def test_ambiguous_strings_reach_kubernetes_as_strings_through_kustomize(tmp_path: Path) -> None:
    data = {f"k{i:02d}": value for i, value in enumerate(AMBIGUOUS)}
    # Keys too (`on:` would become "true"); not `<<`, which kustomize drops however it is quoted.
    data |= {value or "empty": "key" for value in AMBIGUOUS if value != "<<"}
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}, "data": data}
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "cm.yaml").write_text(yaml.dump_all([doc]), encoding="utf-8")
    (folder / "kustomization.yaml").write_text("resources: [cm.yaml]\n", encoding="utf-8")
    built = tmp_path / "built.yaml"
    built.write_text(kustomize(folder), encoding="utf-8")
    assert kubectl_reads(built)["data"] == data


def test_the_dumper_leaves_unambiguous_values_plain() -> None:
    doc = {"name": "web", "image": "nginx:1.27", "replicas": 3, "ratio": 0.5, "on": True, "none": None, "u": "é"}
    assert yaml.dump(doc) == "name: web\nimage: nginx:1.27\nreplicas: 3\nratio: 0.5\n'on': true\nnone: null\nu: é\n"


@pytest.mark.parametrize("name", ["yes", "on", "1e3", "123", "0o17"])
def test_a_release_name_yaml_would_misread_is_refused(project: RepoLayout, name: str) -> None:
    with pytest.raises(InputError, match="YAML reads it as a number or boolean"):
        scaffold.plan_release(project, name, "demo", "demo", "applications")
    with pytest.raises(InputError, match="YAML reads it as a number or boolean"):
        scaffold.plan_release(project, "demo", "demo", name, "applications")


# --- the round-trip editor ---------------------------------------------------------------

EDITED_SOURCE = """\
# Pinned upstream charts.
charts:
  # Storage.
  csi:
    repository: https://example.com/charts  # mirrored
    version: "4.0.0"
    digest: 'sha256:aaaa'
"""

EDITED_RESULT = """\
# Pinned upstream charts.
charts:
  # Storage.
  csi:
    repository: https://example.com/charts  # mirrored
    version: "4.1.0"
    digest: 'sha256:aaaa'
    tree: 'yes'
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_the_editor_keeps_comments_quoting_and_line_endings(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "file.yaml"
    path.write_bytes(EDITED_SOURCE.replace("\n", newline).encode("utf-8"))
    edited = yaml.load_for_edit(path)
    assert edited.newline == newline
    edited.doc["charts"]["csi"]["version"] = "4.1.0"
    edited.doc["charts"]["csi"]["tree"] = "yes"
    atomic.write_text(path, edited.text())
    assert path.read_bytes() == EDITED_RESULT.replace("\n", newline).encode("utf-8")


def test_the_editor_leaves_the_files_own_plain_scalars_as_they_are() -> None:
    text = "enabled: yes  # helm reads true\nOn: off\nlist: [y, n]\nport: 1:20\n"
    edited = yaml.parse_for_edit(text)
    edited.doc["added"] = "no"
    edited.doc["list"].append("on")
    assert edited.text() == (
        "enabled: yes  # helm reads true\nOn: off\nlist: [y, n, 'on']\nport: 1:20\nadded: 'no'\n"
    )


def test_the_editor_reads_and_writes_utf8(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_bytes("# Café settings\r\ngreeting: héllo\r\n".encode())
    edited = yaml.load_for_edit(path)
    edited.doc["farewell"] = "adiós"
    assert edited.text().encode("utf-8") == "# Café settings\r\ngreeting: héllo\r\nfarewell: adiós\r\n".encode()


def test_a_lock_edit_on_a_crlf_lock_touches_only_its_lines(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    text = (
        "# Upstream chart pins.\r\n"
        "charts:\r\n"
        "  demo:  # the demo chart\r\n"
        "    repository: https://charts.example.com\r\n"
        "    version: 1.0.0\r\n"
        f"    digest: {digest}\r\n"
    )
    path = tmp_path / "versions.lock"
    path.write_bytes(text.encode())
    lock = VersionsLock.load(path)
    lock.set(LockedChart("demo", "https://charts.example.com", "1.1.0", digest=digest))
    assert lock.save()
    assert path.read_bytes() == text.replace("version: 1.0.0", "version: 1.1.0").encode()
    assert not VersionsLock.load(path).save()  # an unchanged CRLF lock is not rewritten


def test_editor_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "kustomization.yaml"
    path.write_text("resources:\n  - a.yaml\npatches: [\n", encoding="utf-8")
    with pytest.raises(YamlError, match=r"kustomization\.yaml:4:1: not valid YAML: "):
        yaml.load_for_edit(path)
    path.write_text("a: 1\na: 2\n", encoding="utf-8")
    with pytest.raises(YamlError, match=r"kustomization\.yaml:2:1: not valid YAML: .*duplicate key"):
        yaml.load_for_edit(path)


# --- line endings through atomic writes --------------------------------------------------


def test_atomic_writes_keep_line_endings_and_a_rollback_restores_bytes(tmp_path: Path) -> None:
    kept = tmp_path / "kept.yaml"
    atomic.write_text(kept, "a: 1\r\nb: 2\r\n")
    assert kept.read_bytes() == b"a: 1\r\nb: 2\r\n"
    transaction = atomic.FileTransaction()
    transaction.write(kept, "a: 2\n")
    transaction.write(tmp_path / "missing-folder-is-a-file" / "x.yaml", "x: 1\n")
    (tmp_path / "missing-folder-is-a-file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(OSError):
        transaction.commit()
    assert kept.read_bytes() == b"a: 1\r\nb: 2\r\n"


# --- the package uses only this module -----------------------------------------------------


def _package_sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(PACKAGE.rglob("*.py"))]


def test_only_core_yaml_imports_a_yaml_library() -> None:
    offenders = []
    for path, tree in _package_sources():
        if path == PACKAGE / "core" / "yaml.py":
            continue
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            offenders += [f"{path}:{node.lineno} {m}" for m in modules if m.split(".")[0] in ("yaml", "ruamel")]
    assert offenders == []


def test_every_text_read_and_write_names_utf8() -> None:
    offenders = []
    for path, tree in _package_sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("read_text", "write_text")
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id in ("atomic", "files", "yaml"))
                and not any(k.arg == "encoding" for k in node.keywords)
            ):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == []


# --- unreadable YAML is reported, never skipped --------------------------------------------


def test_the_upgrade_report_names_unreadable_crds_and_overrides_and_rates_high(tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "external" / "demo-1.0.0"
    (chart / "crds").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 1.0.0\n", encoding="utf-8")
    crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\n"
    (chart / "crds" / "good.yaml").write_text(crd.format(name="goods.example.com") + "spec: {op: =}\n")
    (chart / "crds" / "bad.yaml").write_text(crd.format(name="bads.example.com") + "spec: [unclosed\n")
    override = tmp_path / "environments" / "dev" / "releases" / "demo.yaml.gotmpl"
    override.parent.mkdir(parents=True)
    override.write_text("{{- if true }}\nreplicas: 2\n  broken: indent\n{{- end }}\n", encoding="utf-8")

    unreadable: list[Diagnostic] = []
    crds = upgrade_report.crds_of_tree(chart, unreadable)
    assert sorted(crds) == ["goods.example.com"]
    assert [format_diagnostic(d) for d in unreadable] == [
        "charts/external/demo-1.0.0/crds/bad.yaml:6: not valid YAML: did not find expected ',' or ']' "
        "(while parsing a flow sequence)",
    ]
    with pytest.raises(upgrade_report.UnreadableOverride) as caught:
        upgrade_report.load_override(override)
    assert format_diagnostic(caught.value.diagnostic) == (
        f"{override}:3: not valid YAML: mapping values are not allowed in this context"
        " (fix: fix the file; its keys were not checked)"
    )
    report = upgrade_report.UpgradeReport(
        chart="demo", release_names=["demo"], old="1.0.0", new="1.0.1", old_app="", new_app="",
        values=upgrade_report.ValuesDiff(), overrides=[], crds=upgrade_report.diff_crds(crds, crds), images={},
        resources={}, patches=[], changelog=[], unreadable=unreadable,
    )  # fmt: skip
    assert report.risk == "high"
    assert report.as_json()["unreadable"] == [d.as_json() for d in unreadable]
    assert f"not analysed (unreadable): {format_diagnostic(unreadable[0])}" in report.markdown()


def test_a_broken_repository_index_is_one_line_that_blames_the_repository() -> None:
    with pytest.raises(FetchError) as caught:
        parse_index("https://charts.example.com", b"apiVersion: v1\nentries: {demo: [\n")
    message = str(caught.value)
    assert message.startswith("https://charts.example.com/index.yaml:3:1: not valid YAML: ")
    assert message.endswith("(the repository served a broken index: check its URL, or retry later)")
    assert "\n" not in message


def test_charts_outdated_names_a_broken_index_in_one_line(project: RepoLayout, mirror: Path, tmp_path: Path) -> None:
    local = tmp_path / "mirror"
    for index in mirror.rglob("index.yaml"):
        (local / index.relative_to(mirror)).parent.mkdir(parents=True, exist_ok=True)
        (local / index.relative_to(mirror)).write_bytes(index.read_bytes())
    (local / "helm.goharbor.io" / "index.yaml").write_text("apiVersion: v1\nentries:\n  harbor: [\n")
    before = snapshot(project.root)
    env = {**os.environ, "ASTRAGO_ROOT": str(project.root), "CHARTS_MIRROR": str(local)}
    proc = subprocess.run([str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), "charts.outdated"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: https://helm.goharbor.io/index.yaml:4:1: not valid YAML: did not find expected node content "
        "(while parsing a flow node) (the repository served a broken index: check its URL, or retry later)"
    ]
    assert snapshot(project.root) == before
