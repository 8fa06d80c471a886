"""Hostile chart repositories (issue 12, section 3) through the real `inv`: every case ends in one
line on stderr naming the URL (or chart) and what to do, no traceback, and charts/external and
charts/versions.lock byte-identical.

The repository is a loopback HTTP server whose first path segment picks the misbehaviour; the
archives are real tar streams built by tests/chart_fixtures.py.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astrago_deploy.charts.index import parse_index
from astrago_deploy.core.layout import RepoLayout

from .chart_fixtures import chart_tgz, oversized_header_tgz, sha256
from .conftest import PROJECT, loopback
from .registry_support import drip_manifest

INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]
LONG_NAME = "d" * 300
ARCHIVE = chart_tgz("demo", "1.0.0")
NOT_GZIP = b"<html><body>502 Bad Gateway</body></html>\n"
PAX_200_MB = oversized_header_tgz("pax", 200_000_000, "demo", "1.0.0")


def index(url: str, digest: str = "", name: str = "demo", version: str = "1.0.0") -> bytes:
    pinned = f"\n    digest: {digest.removeprefix('sha256:')}" if digest else ""
    return f"apiVersion: v1\nentries:\n  {name}:\n  - name: {name}\n    version: {version}\n    urls: [{url}]{pinned}\n".encode()


class Hostile(http.server.BaseHTTPRequestHandler):
    """`/<kind>/index.yaml` and `/<kind>/demo-1.0.0.tgz`, misbehaving as `kind` says."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send(self, body: bytes, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        named = {key.replace("_", "-"): value for key, value in headers.items()}
        named.setdefault("Content-Length", str(len(body)))
        for key, value in named.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        kind, _, rest = self.path.lstrip("/").partition("/")
        archive = rest != "index.yaml"
        if kind == "loop":
            self.send(b"", 302, Location=self.path)
        elif kind == "bad-length":
            self.send(b"apiVersion: v1\n", Content_Length="12abc")
        elif kind == "long-name":
            self.send(ARCHIVE if archive else index("demo-1.0.0.tgz", sha256(ARCHIVE), name=LONG_NAME))
        elif kind in ("zero", "passwd"):
            target = "file:///dev/zero" if kind == "zero" else "file:///etc/passwd"
            self.send(index(target, sha256(ARCHIVE)))
        elif kind in ("not-gzip", "pax"):
            body = NOT_GZIP if kind == "not-gzip" else PAX_200_MB
            self.send(body if archive else index("demo-1.0.0.tgz", sha256(body)))
        elif kind == "malformed":
            self.send(
                b"apiVersion: v1\nentries:\n  demo:\n  - {version: 2.0.0, urls: demo.tgz, annotations: 5}\n"
                b"  - {version: 3.0.0, annotations: [a]}\n  - {version: 1.10}\n  - 7\n  other: {a: 1}\n  42: []\n"
            )
        elif kind == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(1_000_000):
                    self.wfile.write(b"#")
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                pass  # the client gave up
        elif kind == "silent":
            self.rfile.read(1)  # until the client hangs up
        elif kind == "v2":
            self.drip_oci(rest)
        else:
            self.send(b"not found", 404)

    def drip_oci(self, rest: str) -> None:
        """An OCI registry (`/v2/...`, plain HTTP on loopback) that drips every manifest."""
        if not rest:
            self.send(b"{}", Content_Type="application/json")
            return
        drip_manifest(self, b" ")


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    with loopback(Hostile) as url:
        yield url


def inv(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CHARTS_MIRROR", "ASTRAGO_ROOT", "ASTRAGO_DEBUG")}
    environ.update({"ASTRAGO_ROOT": str(root), "NO_COLOR": "1", **env})
    return subprocess.run([*INV, *args], cwd=root, env=environ, capture_output=True, text=True, timeout=300)


def state(layout: RepoLayout) -> dict[str, bytes]:
    """charts/external (every file, with its bytes) and the lock."""
    files = {
        p.relative_to(layout.root).as_posix(): p.read_bytes() for p in layout.external_dir.rglob("*") if p.is_file()
    }
    folders = sorted(p.relative_to(layout.root).as_posix() for p in layout.external_dir.rglob("*") if p.is_dir())
    return {**files, "folders": "\n".join(folders).encode(), "lock": layout.lock_file.read_bytes()}


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed task (asserting that it is the only stderr and no traceback)."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    # Progress lines ("  demo: downloading (0.1s)") come first; the error is the one other line.
    lines = [line for line in done.stderr.splitlines() if not line.startswith("  ")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


UNCHANGED = "; nothing was changed (charts/external and the lock are as before)"
LOCAL = "refused: a local file is read only from a mirror directory (CHARTS_MIRROR); "


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("loop", "demo: {url}/loop/index.yaml: more than 30 redirects (a redirect loop); check the URL or the server"),
        (
            "bad-length",
            "demo: {url}/bad-length/index.yaml: the server sent an invalid Content-Length header '12abc'; "
            "check the server or proxy",
        ),
        ("zero", f"demo: file:///dev/zero: {LOCAL}a chart repository must name its archives by http(s) URL"),
        ("passwd", f"demo: file:///etc/passwd: {LOCAL}a chart repository must name its archives by http(s) URL"),
        (
            "not-gzip",
            "demo 1.0.0: {url}/not-gzip/demo-1.0.0.tgz: not a gzip-compressed chart archive "
            "(Helm charts are .tgz files; check the URL or file)",
        ),
        (
            "pax",
            "demo 1.0.0: {url}/pax/demo-1.0.0.tgz: a pax header of 200000000 bytes, refused (at most 65536; "
            "Helm never writes such archives)",
        ),
        ("malformed", "demo 1.0.0 is not in the repository index {url}/malformed"),
    ],
)
def test_sync_from_a_hostile_repository_fails_in_one_line_and_changes_nothing(
    project: RepoLayout, hostile: str, kind: str, expected: str
) -> None:
    project.lock_file.write_text(f"charts:\n  demo:\n    repository: {hostile}/{kind}\n    version: 1.0.0\n")
    before = state(project)

    done = inv(project.root, "charts.sync")

    assert one_line_error(done) == expected.format(url=hostile) + UNCHANGED
    assert state(project) == before


@pytest.mark.parametrize(
    ("kind", "env", "expected"),
    [
        ("loop", {}, "{url}/loop/index.yaml: more than 30 redirects (a redirect loop); check the URL or the server"),
        (
            "bad-length",
            {},
            "{url}/bad-length/index.yaml: the server sent an invalid Content-Length header '12abc'; "
            "check the server or proxy",
        ),
        # Scaled down so the test is short; unscaled the deadline is 600 s (a drip ran for hours).
        (
            "drip",
            {"ASTRAGO_TIMEOUT_SCALE": "0.005"},
            "{url}/drip/index.yaml: not complete after the deadline of 3 s; {detail} "
            "(a slow or stalled server: try again later or use a mirror; ASTRAGO_TIMEOUT_SCALE scales the deadline)",
        ),
        (
            "silent",
            {"ASTRAGO_TIMEOUT_SCALE": "0.005"},
            "{url}/silent/index.yaml: not complete after the deadline of 3 s; the server sent nothing within the "
            "read timeout (a slow or stalled server: try again later or use a mirror; ASTRAGO_TIMEOUT_SCALE scales "
            "the deadline)",
        ),
    ],
)
def test_outdated_against_a_hostile_repository_fails_in_one_line(
    project: RepoLayout, hostile: str, kind: str, env: dict[str, str], expected: str
) -> None:
    project.lock_file.write_text(f"charts:\n  demo:\n    repository: {hostile}/{kind}\n    version: 1.0.0\n")
    before = state(project)

    line = one_line_error(inv(project.root, "charts.outdated", **env))

    # What the drip had sent when the deadline came ("123 bytes read") varies; the rest may not.
    pattern = re.escape(expected.format(url=hostile, detail="DETAIL")).replace("DETAIL", "[^;]+")
    assert re.fullmatch(pattern, line), line
    assert state(project) == before


def test_sync_from_an_oci_registry_dripping_its_manifest_meets_the_deadline_in_one_line(
    project: RepoLayout, hostile: str
) -> None:
    # The registry client had no total deadline: this ran for as long as the drip (here 1000 s).
    registry = hostile.removeprefix("http://")
    project.lock_file.write_text(f"charts:\n  demo:\n    repository: oci://{registry}/charts\n    version: 1.0.0\n")
    before = state(project)

    line = one_line_error(inv(project.root, "charts.sync", ASTRAGO_TIMEOUT_SCALE="0.005"))

    expected = (
        f"demo: oci://{registry}/charts/demo: {hostile}/v2/charts/demo/manifests/1.0.0: not complete after the "
        "deadline of 3 s; manifest 1.0.0: DETAIL bytes read (a slow or stalled server: try again later or use a "
        "mirror; ASTRAGO_TIMEOUT_SCALE scales the deadline)" + UNCHANGED
    )
    assert re.fullmatch(re.escape(expected).replace("DETAIL", "[0-9]+"), line), line
    assert state(project) == before


def test_outdated_leaves_malformed_index_entries_out(project: RepoLayout, hostile: str) -> None:
    # `annotations: 5` raised AttributeError (a traceback); `urls: demo.tgz` became seven URLs;
    # `version: 1.10` read as 1.1. Only 3.0.0 (annotations that are not a mapping: none) is kept.
    project.lock_file.write_text(f"charts:\n  demo:\n    repository: {hostile}/malformed\n    version: 1.0.0\n")
    done = inv(project.root, "charts.outdated", "--json")
    assert done.returncode == 0, done.stderr
    assert [(row["name"], row["newest"]) for row in json.loads(done.stdout)] == [("demo", "3.0.0")]


def test_add_with_a_300_character_name_is_refused_in_one_line(project: RepoLayout, hostile: str) -> None:
    # It became a staging folder name: ENAMETOOLONG, then a TypeError traceback re-raising it.
    before = state(project)
    done = inv(project.root, "charts.add", LONG_NAME, "--repo", f"{hostile}/long-name", "--version", "1.0.0")
    assert one_line_error(done) == f"invalid chart name {'d' * 80!r}... (300 characters): longer than 63 characters"
    assert state(project) == before


def test_an_index_keeps_only_entries_that_can_become_a_folder_and_a_branch() -> None:
    payload = (
        "apiVersion: v1\nentries:\n"
        f"  {LONG_NAME}:\n  - {{version: 1.0.0, urls: [a.tgz]}}\n"
        "  demo:\n"
        "  - {version: 9.0.0-" + "a" * 300 + ", urls: [b.tgz]}\n"
        "  - {version: '2.0.0/../../x', urls: [c.tgz]}\n"
        "  - {version: 1.10, urls: [d.tgz]}\n"
        "  - {version: 1.2.0, urls: [e.tgz], annotations: [not, a, mapping]}\n"
        "  - {version: 1.1.0, urls: f.tgz}\n"
        "  Upper: [{version: 1.0.0, urls: [g.tgz]}]\n"
    ).encode()

    parsed = parse_index("https://charts.example", payload)

    assert list(parsed.entries) == ["demo"]
    assert [(e.version, e.urls, e.annotations) for e in parsed.entries["demo"]] == [("1.2.0", ("e.tgz",), {})]
    newest = parsed.newest("demo")
    assert newest is not None and newest.version == "1.2.0"
