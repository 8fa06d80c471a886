"""Errors translated at the boundary: each failure users can meet is one typed line naming the place.

Every test makes the real condition: a file the user may not write, a folder where a file
belongs, bytes that are not UTF-8, a loopback server that sends a bad header or cuts the body.
Tests run as root, whom file modes do not stop; the permission cases therefore run the code in
a forked child that has dropped to the `nobody` user, as an ordinary user would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from astrago_deploy.charts.archive import extract_chart
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.cli import user_errors
from astrago_deploy.core import files
from astrago_deploy.core.diagnostics import Diagnostic, format_diagnostic
from astrago_deploy.core.errors import ArchiveError, ConfigError, FetchError, FileAccessError, InputError
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.parallel import run_jobs
from astrago_deploy.lint import secrets as secret_scan
from astrago_deploy.lint.overrides import ChartValues, check_chart_overrides
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.model.releases import ReleaseRef
from astrago_deploy.patches import kustomize as patching
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools, load_manifest
from astrago_deploy.upgrade import report as upgrade_report

from .chart_fixtures import chart_tgz
from .conftest import PROJECT, make_project

NOBODY = 65534
NOT_UTF8 = "# saved as Latin-1\nkey: caf\xe9\n".encode("latin-1")


# --- helpers: another user, a public folder, a raw loopback server ----------------------------


def as_nobody(run: Callable[[], object]) -> tuple[str, str, str]:
    """Run `run` in a forked child as the `nobody` user: (exception type or "ok", message, stderr)."""
    read_end, write_end = os.pipe()
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - read after the child ends
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            sys.stderr = os.fdopen(os.dup(stderr_file.fileno()), "w")
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                outcome = ["ok", repr(run())]
            except BaseException as exc:
                outcome = [type(exc).__name__, str(getattr(exc, "message", None) or exc)]
            sys.stderr.flush()
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    stderr_file.seek(0)
    kind, message = json.loads(data)
    return kind, message, stderr_file.read().decode()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's tmp_path sits under root's private folder)."""
    folder = Path(tempfile.mkdtemp(prefix="astrago-errors-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def raw_server(reply: bytes) -> tuple[str, list[int]]:
    """A loopback server that answers every request with `reply`, then closes; counts requests."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    count = [0]

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                count[0] += 1
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/chart.tgz", count


# --- chart archives -------------------------------------------------------------------------------


def test_archive_extraction_without_write_permission_says_so_and_names_the_path(public_dir: Path) -> None:
    dest = public_dir / "staging"
    dest.mkdir(mode=0o755)  # owned by root: nobody may not write in it
    payload = chart_tgz("demo", "0.1.0")

    kind, message, _ = as_nobody(lambda: extract_chart(payload, dest, "demo 0.1.0"))

    # The first write is the chmod of the chart's top folder (EPERM) or a file in it (EACCES).
    assert kind == "FileAccessError"
    assert message.startswith(str(dest))
    assert message.endswith(("Operation not permitted", "Permission denied"))
    assert "corrupt" not in message


def test_a_truncated_archive_is_still_reported_as_corrupt(tmp_path: Path) -> None:
    # The read loop's handler was narrowed: content errors (EOFError here) keep their message.
    with pytest.raises(ArchiveError, match="corrupt or truncated archive"):
        extract_chart(chart_tgz("demo", "0.1.0")[:300], tmp_path / "staging", "demo 0.1.0")


# --- HTTP -----------------------------------------------------------------------------------------


def test_a_malformed_content_length_is_reported_once_not_a_traceback() -> None:
    url, count = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\nConnection: close\r\n\r\nhello")
    with pytest.raises(FetchError, match=r"invalid Content-Length header '12abc'"):
        Fetcher(backoff=0.0).get(url)
    assert count[0] == 1


def test_conflicting_content_lengths_are_a_fetch_error() -> None:
    url, count = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\nhello")
    with pytest.raises(FetchError, match=r"the server sent an invalid header \(Content-Length contained multiple"):
        Fetcher(backoff=0.0).get(url)
    assert count[0] == 1


def test_a_body_cut_short_is_retried_as_a_truncated_download() -> None:
    url, count = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nhello")
    with pytest.raises(FetchError, match=r"truncated download .* \(after 3 attempts\)"):
        Fetcher(retries=2, backoff=0.0).get(url)
    assert count[0] == 3


def test_a_body_that_is_not_its_content_encoding_is_not_called_truncated() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\nhello"
    url, count = raw_server(reply)
    with pytest.raises(FetchError) as caught:
        Fetcher(backoff=0.0).get(url)
    assert "the body is not valid gzip data" in str(caught.value)
    assert "truncated" not in str(caught.value)
    assert count[0] == 1


# --- the upgrade report ---------------------------------------------------------------------------


def test_bad_override_yaml_is_a_finding_in_the_upgrade_report(tmp_path: Path) -> None:
    good = tmp_path / "environments" / "dev" / "releases" / "demo.yaml"
    bad = tmp_path / "environments" / "prod" / "releases" / "demo.yaml"
    good.parent.mkdir(parents=True)
    bad.parent.mkdir(parents=True)
    good.write_text("legacy:\n  enabled: true\n")
    bad.write_text("image:\n  tag: 1.0\n   broken: [\n")

    values, unreadable = upgrade_report.read_overrides([good, bad], tmp_path)

    assert values == {"environments/dev/releases/demo.yaml": {"legacy": {"enabled": True}}}
    [problem] = unreadable
    assert (problem.file, problem.line) == ("environments/prod/releases/demo.yaml", 3)
    assert problem.message.startswith("not valid YAML")
    report = upgrade_report.UpgradeReport(
        chart="demo",
        release_names=["demo"],
        old="1.0.0",
        new="1.0.1",
        old_app="",
        new_app="",
        values=upgrade_report.ValuesDiff(),
        overrides=upgrade_report.affected_overrides(values, upgrade_report.ValuesDiff()),
        crds={"added": [], "removed": [], "changed": {}},
        images={},
        resources={},
        patches=[],
        changelog=[],
        unreadable_overrides=unreadable,
    )
    # A patch bump with nothing else changed is "low"; one whose overrides went unchecked is not.
    assert report.risk == "high"
    assert "1 override file(s) could not be read: their keys went unchecked" in report.notable()
    markdown = report.markdown()
    assert f"- `{format_diagnostic(problem)}`" in markdown
    assert "None of our environment or customer overrides" not in markdown
    assert report.as_json()["overrides_unreadable"][0]["file"] == "environments/prod/releases/demo.yaml"


def test_a_non_utf8_override_is_a_finding_too(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_bytes(NOT_UTF8)
    _values, [problem] = upgrade_report.read_overrides([path], tmp_path)
    assert (problem.file, problem.line) == ("demo.yaml", 2)
    assert problem.message.startswith("not UTF-8 text (byte 0xe9")


def test_a_crd_without_a_name_shows_in_the_report_instead_of_a_key_error(tmp_path: Path) -> None:
    (tmp_path / "crds").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 1.0.0\n")
    (tmp_path / "crds" / "broken.yaml").write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nspec: {}\n"
    )
    unreadable: list[Diagnostic] = []
    assert list(upgrade_report.crds_of_tree(tmp_path, unreadable)) == ["(unnamed CRD in broken.yaml)"]
    assert unreadable == []


# --- the post-renderer ----------------------------------------------------------------------------


def _post_render(root: Path, debug: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ASTRAGO_DEBUG"}
    env["ASTRAGO_PYTHON"] = sys.executable
    if debug:
        env["ASTRAGO_DEBUG"] = "1"
    return subprocess.run(
        [str(root / "scripts" / "post-render"), "--release", "harbor", "--env", "dev"],
        input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_post_render_prints_one_line_or_with_debug_the_traceback(project: RepoLayout) -> None:
    kustomization = project.patches_dir / "harbor" / "kustomization.yaml"
    kustomization.write_bytes(NOT_UTF8)

    quiet = _post_render(project.root, debug=False)
    loud = _post_render(project.root, debug=True)

    line = f"post-render harbor (dev): {kustomization}:2: not UTF-8 text (byte 0xe9 at offset"
    assert quiet.returncode == loud.returncode == 1
    assert quiet.stderr.startswith(line)
    assert len(quiet.stderr.strip().splitlines()) == 1
    assert loud.stderr.startswith("Traceback (most recent call last):")
    assert "UnicodeDecodeError" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith(line)


# --- user input that used to raise KeyError, re.error, UnicodeDecodeError --------------------------


def test_an_invalid_regex_in_a_patch_target_is_a_failed_patch(tmp_path: Path) -> None:
    layer = tmp_path / "patches" / "web"
    layer.mkdir(parents=True)
    (layer / "kustomization.yaml").write_text(
        "patches:\n  - target: {kind: Deployment, name: 'web-[0-9'}\n"
        "    patch: '[{\"op\": \"add\", \"path\": \"/metadata/labels/x\", \"value\": \"y\"}]'\n"
    )
    manifests = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-1\n"
    kustomizer = patching.Kustomizer(PROJECT / ".tools" / "bin" / "kubectl", dict(os.environ))

    [status] = patching.check(tmp_path / "patches", "web", "dev", manifests, kustomizer)

    assert status.status == "failed"
    # kustomize judges the regex (Go syntax), in one line naming it.
    assert status.target == "Deployment/web-[0-9"
    assert status.reason.startswith("error parsing regexp: missing closing ]") and "\n" not in status.reason


def test_a_schema_pattern_python_cannot_read_reports_the_key(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("labels: {}\n")
    # ECMA-262 named groups `(?<name>...)` are valid JSON-schema patterns, not Python ones.
    (chart / "values.schema.json").write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"labels": {}},
                "patternProperties": {"^(?<kind>x)-": {}},
                "additionalProperties": False,
            }
        )
    )
    values = tmp_path / "demo.yaml"
    values.write_text("x-extra: 1\n")
    release = ReleaseRef("demo", tmp_path / "tier.yaml", 1, "demo", "charts/custom/demo")

    [problem] = check_chart_overrides(values, release, ChartValues.load(chart))

    assert (problem.key, problem.line) == ("x-extra", 1)


def test_invalid_json_schema_in_a_chart_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (tmp_path / "values.schema.json").write_text('{"type": "object",\n "properties": }\n')
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/values.schema.json:2: not valid JSON"):
        ChartValues.load(tmp_path)


def test_an_unknown_key_in_a_toolchain_source_is_a_config_error(project: RepoLayout) -> None:
    manifest = project.toolchain_manifest
    text = manifest.read_text()
    first_source = text.index("type:", text.index("sources:"))
    manifest.write_text(text[:first_source] + "mirror_url: https://example.invalid/x\n        " + text[first_source:])
    with pytest.raises(ConfigError, match=r"sources\[0\] has unknown keys: mirror_url"):
        load_manifest(project)


def test_non_utf8_environment_values_name_the_file_and_line(project: RepoLayout) -> None:
    values = project.environments_dir / "dev" / "values.yaml"
    values.write_bytes(values.read_bytes() + b"\nnote: caf\xe9\n")
    line = values.read_bytes().count(b"\n")
    with pytest.raises(FileAccessError, match=rf"^{values}:{line}: not UTF-8 text \(byte 0xe9"):
        environments.settings(project, environments.get(project, "dev"))


def test_a_non_utf8_lock_names_the_file(project: RepoLayout) -> None:
    project.lock_file.write_bytes(b"# \xff\n" + project.lock_file.read_bytes())
    with pytest.raises(FileAccessError, match=rf"^{project.lock_file}:1: not UTF-8 text \(byte 0xff"):
        VersionsLock.load(project.lock_file)


def test_the_secret_scan_names_a_non_utf8_file(project: RepoLayout) -> None:
    path = project.environments_dir / "dev" / "releases" / "latin1.yaml"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(FileAccessError, match=rf"^{path}:2: not UTF-8"):
        secret_scan.scan(project)


def test_a_folder_where_a_file_belongs_is_named() -> None:
    with pytest.raises(FileAccessError, match=rf"^{PROJECT / 'src'}: Is a directory"):
        files.read_text(PROJECT / "src")


def test_a_damaged_render_cache_is_a_miss_not_a_key_error(synced_project: RepoLayout) -> None:
    renderer = Renderer(synced_project, PinnedTools(synced_project), synced_project.rendered_dir)
    [first] = renderer.render([environments.get(synced_project, "dev")])
    (first.out_dir / ".summary.json").write_text('{"documents": {}}\n')  # "normalized" is gone

    [second] = renderer.render([environments.get(synced_project, "dev")])

    assert not second.cached
    assert second.releases == first.releases


# --- parallel workers -----------------------------------------------------------------------------


def test_an_os_error_in_a_render_worker_becomes_a_typed_error_naming_the_path(
    synced_project: RepoLayout, tmp_path: Path
) -> None:
    # A link to nowhere passes the output folder check (nothing is there), then fails to be created.
    dangling = tmp_path / "rendered"
    dangling.symlink_to(tmp_path / "nowhere" / "at-all")
    renderer = Renderer(synced_project, PinnedTools(synced_project), dangling)
    with pytest.raises(Exception) as caught:
        renderer.render([environments.get(synced_project, "dev")])
    assert type(caught.value).__name__ == "AstragoError"
    assert str(caught.value).startswith(f"render failed:\ndev: {dangling}")


def test_an_output_folder_under_a_file_is_refused_before_any_render(synced_project: RepoLayout, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    renderer = Renderer(synced_project, PinnedTools(synced_project), blocker / "rendered")
    with pytest.raises(InputError, match=f"^output folder {blocker}/rendered cannot be created: {blocker} is a file"):
        renderer.render([environments.get(synced_project, "dev")])


def test_a_bug_in_one_job_starts_no_further_job() -> None:
    started: list[str] = []

    def bug() -> str:
        started.append("bug")
        return str({}["missing"])

    def later() -> str:
        started.append("later")
        return "later"

    with pytest.raises(KeyError):
        run_jobs([("bug", bug), ("later", later)], 1, "test")
    assert started == ["bug"]


def test_a_bug_in_one_job_waits_for_the_running_ones_before_it_propagates() -> None:
    bug_raised = threading.Event()
    finished: list[str] = []

    def running() -> str:
        bug_raised.wait()
        time.sleep(0.1)  # still running when the bug reaches run_jobs
        finished.append("running")
        return "running"

    def bug() -> str:
        bug_raised.set()
        return str({}["missing"])

    with pytest.raises(KeyError):
        run_jobs([("running", running), ("bug", bug)], 2, "test")
    assert finished == ["running"]


def test_an_os_error_in_a_job_is_collected_with_the_others(tmp_path: Path) -> None:
    results, failures = run_jobs(
        [
            ("ok", lambda: "fine"),
            ("folder", lambda: files.read_text(tmp_path)),
            ("gone", (tmp_path / "x").read_text),
        ],
        2,
        "test",
    )
    assert results == ["fine"]
    assert [(name, type(exc).__name__) for name, exc in failures] == [
        ("folder", "FileAccessError"),
        ("gone", "FileAccessError"),
    ]
    assert str(failures[1][1]) == f"{tmp_path / 'x'}: No such file or directory"


# --- the CLI boundary -----------------------------------------------------------------------------


def _init_customer(root: Path) -> Callable[[], object]:
    @user_errors
    def task() -> object:
        layout = RepoLayout.at(root)
        return environments.init_customer(layout, "acme", "10.0.0.1", "10.0.0.2", "/export/acme")

    return task


def test_a_permission_error_escaping_a_task_is_one_line_naming_the_file(public_dir: Path) -> None:
    layout = make_project(public_dir / "repo", with_git=False)
    layout.customers_dir.mkdir(parents=True, exist_ok=True)
    for folder, dirs, _files in os.walk(public_dir):
        for name in dirs:
            (Path(folder) / name).chmod(0o755)

    kind, message, stderr = as_nobody(_init_customer(layout.root))

    assert kind == "Exit"
    assert message.startswith(f"error: {layout.customers_dir}")
    assert "Permission denied" in message
    assert "\n" not in message
    assert "Traceback" not in stderr


def test_with_debug_the_task_error_also_prints_its_traceback(public_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = make_project(public_dir / "repo", with_git=False)
    layout.customers_dir.mkdir(parents=True, exist_ok=True)
    for folder, dirs, _files in os.walk(public_dir):
        for name in dirs:
            (Path(folder) / name).chmod(0o755)
    monkeypatch.setenv("ASTRAGO_DEBUG", "1")

    kind, message, stderr = as_nobody(_init_customer(layout.root))

    assert kind == "Exit"
    assert "Permission denied" in message
    assert stderr.startswith("Traceback (most recent call last):")
    assert "PermissionError" in stderr


def test_a_diagnostic_is_one_line_with_its_fix() -> None:
    shown = Diagnostic("environments/dev/values.yaml", 3, "cluster.x", "error", "not a setting", "remove it")
    assert format_diagnostic(shown) == "environments/dev/values.yaml:3: cluster.x: not a setting (fix: remove it)"
    warning = Diagnostic("rendered/dev/a.yaml", None, "Deployment/ns/a", "warning", "no schema")
    assert format_diagnostic(warning) == "rendered/dev/a.yaml: warning: Deployment/ns/a: no schema"


def test_charts_verify_reports_a_non_utf8_lock_as_a_diagnostic(project: RepoLayout) -> None:
    project.lock_file.write_bytes(b"# \xff\n" + project.lock_file.read_bytes())
    [problem] = ChartVendor(project, Fetcher()).verify()
    assert (problem.file, problem.line) == ("charts/versions.lock", 1)
    assert format_diagnostic(problem).startswith("charts/versions.lock:1: not UTF-8 text (byte 0xff at offset 2)")


def test_a_scalar_where_a_settings_mapping_belongs_is_a_config_error(project: RepoLayout) -> None:
    values = project.environments_dir / "dev" / "values.yaml"
    values.write_text(values.read_text() + "offline: registry.local\n")
    dev = environments.get(project, "dev")
    with pytest.raises(ConfigError, match=r"^environment dev: setting offline must be a mapping \(it holds str\)"):
        environments.setting(project, dev, "offline.registry")
    assert environments.setting(project, dev, "nothing.here") is None
