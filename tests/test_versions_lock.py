"""charts/versions.lock: loading, validation messages, and surgical round-trip edits.

Edits are checked by comparing whole file texts: comments, order and quoting survive and only
the lines that must change do.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from astrago_deploy.core.errors import ConfigError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import LockedChart, VersionsLock, as_dict

from .conftest import PROJECT, git, snapshot

COMMITTED = (PROJECT / "charts" / "versions.lock").read_text()
SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64
SHA_C = "sha256:" + "c" * 64


@pytest.fixture
def lock_file(tmp_path: Path) -> Path:
    path = tmp_path / "versions.lock"
    path.write_text(COMMITTED)
    return path


def test_loads_the_committed_lock_in_file_order() -> None:
    lock = VersionsLock.load(PROJECT / "charts" / "versions.lock")

    assert lock.names() == ["csi-driver-nfs", "gpu-operator", "harbor", "ingress-nginx", "kube-prometheus-stack"]
    gpu = lock.get("gpu-operator")
    assert gpu == LockedChart(
        name="gpu-operator",
        repository="https://nvidia.github.io/gpu-operator",
        version="v25.3.4",
        url="https://nvidia.github.io/gpu-operator/stable/gpu-operator-v25.3.4.tgz",
        digest="sha256:6e6fcaf32851c9949fa3fde98e8e0f5a1c0febb8d97de2aaa2722978ef1fe6c4",
        tree=gpu.tree,
    )
    assert gpu.complete and not gpu.is_oci
    assert gpu.dirname == "gpu-operator-v25.3.4"
    assert all(chart.complete for chart in lock.charts())
    assert as_dict(gpu) == {
        "name": "gpu-operator",
        "repository": "https://nvidia.github.io/gpu-operator",
        "version": "v25.3.4",
        "url": "https://nvidia.github.io/gpu-operator/stable/gpu-operator-v25.3.4.tgz",
        "digest": "sha256:6e6fcaf32851c9949fa3fde98e8e0f5a1c0febb8d97de2aaa2722978ef1fe6c4",
        "tree": gpu.tree,
    }


def test_the_lock_digests_equal_the_upstream_index_digests(mirror: Path) -> None:
    import yaml

    lock = VersionsLock.load(PROJECT / "charts" / "versions.lock")
    indexes = {
        "csi-driver-nfs": mirror / "raw.githubusercontent.com/kubernetes-csi/csi-driver-nfs/master/charts/index.yaml",
        "gpu-operator": mirror / "nvidia.github.io/gpu-operator/index.yaml",
        "harbor": mirror / "helm.goharbor.io/index.yaml",
    }
    for name, index_file in indexes.items():
        chart = lock.get(name)
        entries = yaml.safe_load(index_file.read_text())["entries"][name]
        (entry,) = [e for e in entries if e["version"] == chart.version]
        assert chart.digest == f"sha256:{entry['digest']}", name


def test_a_missing_file_is_an_empty_lock_and_save_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "charts" / "versions.lock"
    path.parent.mkdir()
    lock = VersionsLock.load(path)
    assert lock.names() == []
    assert not lock.has("demo")

    lock.set(
        LockedChart("demo", "https://charts.example.com", "1.0.0", url="https://charts.example.com/demo-1.0.0.tgz")
    )
    assert lock.save() is True
    assert path.read_text() == (
        "charts:\n"
        "  demo:\n"
        "    repository: https://charts.example.com\n"
        "    version: 1.0.0\n"
        "    url: https://charts.example.com/demo-1.0.0.tgz\n"
    )
    assert VersionsLock.load(path).get("demo").url == "https://charts.example.com/demo-1.0.0.tgz"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "charts:\n", "charts: {}\n"])
def test_empty_locks_load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "versions.lock"
    path.write_text(text)
    assert VersionsLock.load(path).charts() == []


ENTRY = "charts:\n  demo:\n    repository: https://charts.example.com\n    version: 1.0.0\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("charts: [unclosed\n", ":2:1: not valid YAML: expected ',' or ']'", id="not-yaml"),
        pytest.param("- demo\n", ": expected a mapping with a 'charts:' mapping", id="top-level-list"),
        pytest.param("charts:\n  - demo\n", ": expected a mapping with a 'charts:' mapping", id="charts-list"),
        pytest.param("charts: []\n", ": expected a mapping with a 'charts:' mapping", id="charts-empty-list"),
        pytest.param("charts: 3\n", ": expected a mapping with a 'charts:' mapping", id="charts-scalar"),
        pytest.param("charts:\n  demo: 1.0.0\n", ": charts.demo must be a mapping", id="entry-scalar"),
        pytest.param(ENTRY + "    sha: abc\n", ": charts.demo has unknown keys: sha", id="unknown-key"),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n",
            ": charts.demo.version is missing",
            id="no-version",
        ),
        pytest.param(
            "charts:\n  demo:\n    version: 1.0.0\n", ": charts.demo.repository is missing", id="no-repository"
        ),
        pytest.param(
            ENTRY + "    digest: 045f8c09\n",
            ": charts.demo.digest must look like sha256:<64 hex digits>",
            id="short-digest",
        ),
        pytest.param(
            ENTRY + "    tree: md5:" + "0" * 32 + "\n",
            ": charts.demo.tree must look like sha256:<64 hex digits>",
            id="wrong-algorithm",
        ),
        pytest.param(
            ENTRY + "    manifest: sha256:" + "A" * 64 + "\n",
            ": charts.demo.manifest must look like sha256:<64 hex digits>",
            id="uppercase-hex",
        ),
        pytest.param(
            "charts:\n  Demo_Chart:\n    repository: https://charts.example.com\n    version: 1.0.0\n",
            ": chart name 'Demo_Chart' is not a valid chart name: use lower-case letters, digits, '-', '_' and '.'",
            id="bad-name",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n    version: 1.0.0/../../../x\n",
            ":4: charts.demo.version '1.0.0/../../../x' is not a chart version: use letters, digits, '.', '-', '_' "
            "and '+'",
            id="version-leading-out-of-charts-external",
        ),
        pytest.param(
            f"charts:\n  {'d' * 300}:\n    repository: https://charts.example.com\n    version: 1.0.0\n",
            f":2: chart name {'d' * 80!r}... (300 characters) is not a valid chart name: longer than 63 characters",
            id="name-too-long-for-a-folder",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n    version: '" + "1" * 65 + "'\n",
            ":4: charts.demo.version '" + "1" * 65 + "' is not a chart version: longer than 64 characters",
            id="version-too-long",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: charts.example.com\n    version: 1.0.0\n",
            ": charts.demo.repository must be an http(s):// or oci:// URL",
            id="bad-repository",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: file:///srv/mirror\n    version: 1.0.0\n",
            ":3: charts.demo.repository must be an http(s):// or oci:// URL (a local mirror is given by CHARTS_MIRROR",
            id="file-repository",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n    version: 1.10\n",
            ':4: charts.demo.version is a number, not a string: quote it as upstream spells it (version: "1.10")',
            id="float-version",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n    version: 2  # major only\n",
            ':4: charts.demo.version is a number, not a string: quote it as upstream spells it (version: "2")',
            id="int-version",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n    version: 2024-01-02\n",
            ":4: charts.demo.version is a date, not a string",
            id="date-version",
        ),
        pytest.param(
            ENTRY + "    url: true\n", ":5: charts.demo.url is a boolean, not a string", id="bool-url"
        ),
        pytest.param(
            ENTRY + "    digest: [sha256]\n", ":5: charts.demo.digest is a list, not a string", id="list-digest"
        ),
        pytest.param(
            "charts:\n  123:\n    repository: https://charts.example.com\n    version: 1.0.0\n",
            ":2: charts.123: a chart key must be the chart's name as a string; quote it ('123':)",
            id="int-key",
        ),
        pytest.param(
            "charts:\n  demo:\n    repository: https://charts.example.com\n    version: !!int x\n",
            ":4:14: not valid YAML: cannot read this int value",
            id="bad-explicit-tag",
        ),
        pytest.param(
            "charts:\n  demo:\n    version: 1.0.0\n    version: 1.0.1\n",
            ':4:5: not valid YAML: found duplicate key "version"',
            id="duplicate-key",
        ),
    ],
)
def test_invalid_locks_fail_on_load_with_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "versions.lock"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        VersionsLock.load(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_quoted_numeric_version_and_chart_name_are_strings(tmp_path: Path) -> None:
    path = tmp_path / "versions.lock"
    path.write_text("charts:\n  '123':\n    repository: https://charts.example.com\n    version: '1.10'\n")
    assert VersionsLock.load(path).get("123").version == "1.10"


def test_get_of_an_unknown_chart_names_it(lock_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"chart 'nope' is not in .*versions\.lock"):
        VersionsLock.load(lock_file).get("nope")


def test_set_with_the_same_values_changes_nothing(lock_file: Path) -> None:
    lock = VersionsLock.load(lock_file)
    for chart in lock.charts():
        lock.set(chart)
    before = lock_file.stat()

    assert lock.render() == COMMITTED
    assert lock.save() is False
    assert lock_file.read_text() == COMMITTED
    assert lock_file.stat().st_ino == before.st_ino
    assert lock_file.stat().st_mtime_ns == before.st_mtime_ns


def test_set_on_an_existing_entry_rewrites_only_the_changed_lines(lock_file: Path) -> None:
    lock = VersionsLock.load(lock_file)
    old = lock.get("gpu-operator")
    new = dataclasses.replace(
        old,
        version="v25.10.1",
        url="https://nvidia.github.io/gpu-operator/stable/gpu-operator-v25.10.1.tgz",
        digest=SHA_A,
        tree=SHA_B,
    )
    lock.set(new)
    assert lock.save() is True

    expected = (
        COMMITTED.replace("    version: v25.3.4\n", "    version: v25.10.1\n")
        .replace(old.url, new.url)
        .replace(old.digest, SHA_A)
        .replace(old.tree, SHA_B)
    )
    assert lock_file.read_text() == expected
    changed = [(a, b) for a, b in zip(COMMITTED.splitlines(), expected.splitlines(), strict=True) if a != b]
    assert len(changed) == 4
    assert VersionsLock.load(lock_file).get("gpu-operator") == new
    assert list(lock_file.parent.iterdir()) == [lock_file]  # no temp file left behind


def test_set_keeps_the_next_charts_comment_when_the_last_field_changes_or_goes(lock_file: Path) -> None:
    lock = VersionsLock.load(lock_file)
    csi = lock.get("csi-driver-nfs")
    gpu = lock.get("gpu-operator")
    # csi-driver-nfs gains a field after its last one; gpu-operator loses its last one.
    lock.set(dataclasses.replace(csi, manifest=SHA_C))
    lock.set(dataclasses.replace(gpu, tree=""))
    lock.save()

    expected = COMMITTED.replace(
        f"    tree: {csi.tree}\n",
        f"    tree: {csi.tree}\n    manifest: {SHA_C}\n",
    ).replace(f"    tree: {gpu.tree}\n", "")
    assert lock_file.read_text() == expected
    text = lock_file.read_text()
    assert text.index("# NVIDIA GPU operator") < text.index("  gpu-operator:\n")
    assert text.index("# Harbor: the in-cluster") < text.index("  harbor:\n")


def test_set_of_a_new_chart_appends_it_after_the_others(lock_file: Path) -> None:
    lock = VersionsLock.load(lock_file)
    chart = LockedChart(
        name="demo",
        repository="oci://registry.example.com/charts",
        version="1.0",
        digest=SHA_A,
        manifest=SHA_B,
        tree=SHA_C,
    )
    lock.set(chart)
    lock.save()

    assert lock_file.read_text() == COMMITTED + (
        "  demo:\n"
        "    repository: oci://registry.example.com/charts\n"
        "    version: '1.0'\n"
        f"    digest: {SHA_A}\n"
        f"    manifest: {SHA_B}\n"
        f"    tree: {SHA_C}\n"
    )
    reloaded = VersionsLock.load(lock_file)
    assert reloaded.names() == [*VersionsLock.load(PROJECT / "charts" / "versions.lock").names(), "demo"]
    assert reloaded.get("demo") == chart
    assert reloaded.get("demo").is_oci and reloaded.get("demo").complete


def test_quoting_and_other_entries_survive_an_edit(tmp_path: Path) -> None:
    text = (
        "# top comment\n"
        "charts:\n"
        "  a:\n"
        '    repository: "https://charts.example.com"  # quoted on purpose\n'
        "    version: '2.0'\n"
        "  # b comes from elsewhere\n"
        "  b:\n"
        "    repository: https://other.example.com\n"
        "    version: 1.2.3\n"
    )
    path = tmp_path / "versions.lock"
    path.write_text(text)
    lock = VersionsLock.load(path)
    assert lock.get("a").version == "2.0"
    lock.set(dataclasses.replace(lock.get("a"), url="https://charts.example.com/a-2.0.tgz"))
    lock.save()

    assert path.read_text() == text.replace(
        "    version: '2.0'\n", "    version: '2.0'\n    url: https://charts.example.com/a-2.0.tgz\n"
    )


def test_oci_completeness_needs_the_manifest() -> None:
    base = LockedChart("demo", "oci://registry.example.com/charts", "1.0.0", digest=SHA_A, tree=SHA_B)
    assert base.is_oci
    assert not base.complete
    assert dataclasses.replace(base, manifest=SHA_C).complete
    http = LockedChart("demo", "https://charts.example.com", "1.0.0", digest=SHA_A, tree=SHA_B)
    assert not http.complete
    assert dataclasses.replace(http, url="https://charts.example.com/demo-1.0.0.tgz").complete


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            ("    version: 1.14.2\n", "    version: 1.10\n"),
            'charts/versions.lock:29: charts.harbor.version is a number, not a string: quote it as upstream spells it '
            '(version: "1.10")',
            id="unquoted-float",
        ),
        pytest.param(
            ("    version: v4.9.0\n", "    version: v4.9.0\n    version: v4.9.1\n"),
            'charts/versions.lock:16:5: not valid YAML: found duplicate key "version" with value "v4.9.1" '
            '(original value: "v4.9.0") (while constructing a mapping) (',
            id="duplicate-key",
        ),
        pytest.param(
            ("    version: 1.14.2\n", '    version: "1.14.2/../../../../tmp/x"\n'),
            "charts/versions.lock:29: charts.harbor.version '1.14.2/../../../../tmp/x' is not a chart version: ",
            id="version-leading-out-of-charts-external",
        ),
        pytest.param(
            ("charts:\n", "charts:\n  123:\n    repository: https://x.example\n    version: '1'\n"),
            "charts/versions.lock:12: charts.123: a chart key must be the chart's name as a string",
            id="integer-key",
        ),
    ],
)
def test_charts_verify_and_sync_reject_a_bad_lock_in_one_line(
    project: RepoLayout, tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    (tmp_path / "mirror").mkdir()
    lock = project.lock_file
    lock.write_text(lock.read_text().replace(*edit, 1))
    git(project.root, "commit", "-qam", "bad lock")
    before = snapshot(project.root)
    for task in ("charts.verify", "charts.sync"):
        proc = subprocess.run(
            [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT), task],
            env={**os.environ, "ASTRAGO_ROOT": str(project.root), "CHARTS_MIRROR": str(tmp_path / "mirror")},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr
        assert expected in proc.stdout + proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr
    assert snapshot(project.root) == before
