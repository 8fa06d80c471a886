"""Shared fixtures: a scratch copy of the monorepo, the real upstream mirror, loopback servers.

Tests run the real pinned tools from the checkout's `.tools/bin` (installed by
scripts/bootstrap) and real git; nothing of ours is mocked.

Every test has a deadline (pytest-timeout, `timeout` in pyproject.toml; a longer one with
`@pytest.mark.timeout(SECONDS)`), so a wait for a state that never comes fails that test instead
of hanging the run: a test waits for what it proves (a file, a thread blocked on a lock), never a
fixed time, and never asserts how fast something was (benchmarks/ measure that).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from astrago_deploy.core.layout import RepoLayout

PROJECT = Path(__file__).resolve().parent.parent
COPIED = (
    "toolchain.yaml", "helmfile", "environments", "charts/custom", "charts/versions.lock", "patches",
    "scripts/post-render", "images.extra.yaml",
)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def upstream_mirror() -> Path:
    """`../shared/upstream` next to the checkout (or ASTRAGO_UPSTREAM_MIRROR)."""
    candidates = [os.environ.get("ASTRAGO_UPSTREAM_MIRROR", ""), str(PROJECT.parent / "shared" / "upstream")]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    raise RuntimeError("the upstream mirror (../shared/upstream) is missing; set ASTRAGO_UPSTREAM_MIRROR")


@pytest.fixture(scope="session")
def mirror() -> Path:
    return upstream_mirror()


def readme_secret_keys(name: str, namespace: str = "") -> set[str] | None:
    """The keys the README's "Secrets" section creates Secret `name` with (in `namespace` when
    given; a TLS Secret has tls.crt and tls.key), or None when it creates no such Secret."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Secrets") : readme.index("## Tasks")]
    where = rf"-n {re.escape(namespace)} " if namespace else ""
    command = re.search(rf"{where}create secret (generic|tls) {re.escape(name)} ((?:.*\\\n)*.*)", section)
    if command is None:
        return None
    if command[1] == "tls":
        return {"tls.crt", "tls.key"}
    return set(re.findall(r"--from-literal=([A-Za-z0-9_.-]+)=", command[2]))


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_project(dest: Path, with_git: bool = True) -> RepoLayout:
    """A copy of the monorepo's committed content, sharing the checkout's installed tools."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPIED:
        src = PROJECT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "charts" / "external").mkdir(parents=True, exist_ok=True)
    (dest / ".gitignore").write_text((PROJECT / ".gitignore").read_text())
    tools = dest / ".tools"
    (tools / "bin").mkdir(parents=True)
    for binary in (PROJECT / ".tools" / "bin").iterdir():
        if binary.name != ".verified.json":
            (tools / "bin" / binary.name).symlink_to(binary)
    if with_git:
        git(dest, "init", "-q", "-b", "main")
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "initial")
    return RepoLayout.at(dest)


@pytest.fixture
def project(tmp_path: Path) -> RepoLayout:
    return make_project(tmp_path / "repo")


@pytest.fixture(scope="session")
def synced_template(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> RepoLayout:
    """A project with every locked chart vendored from the mirror (built once per session)."""
    from astrago_deploy.charts.vendor import ChartVendor
    from astrago_deploy.core.http import Fetcher, Mirror

    layout = make_project(tmp_path_factory.mktemp("synced") / "repo", with_git=False)
    ChartVendor(layout, Fetcher(mirror=Mirror(str(mirror)))).sync()
    return layout


@pytest.fixture
def synced_project(tmp_path: Path, synced_template: RepoLayout) -> RepoLayout:
    """A fresh copy of the synced project, committed to a git repository."""
    dest = tmp_path / "repo"
    shutil.copytree(synced_template.root, dest, symlinks=True)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "initial")
    return RepoLayout.at(dest)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below root (except tool links and caches) with its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".git/", ".tools/", ".cache/")) or path.is_dir():
            continue
        out[rel] = path.read_bytes() if not path.is_symlink() else os.readlink(path).encode()
    return out


# --- a loopback HTTP server with fault injection -------------------------------------------


@dataclass
class Faults:
    """Per-path misbehaviour: serve other bytes, cut the body short, or fail N times first."""

    replace: dict[str, bytes] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    faults: Faults

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.faults.requests.append((path, dict(self.headers)))
        remaining = self.faults.fail_first.get(path, 0)
        if remaining:
            self.faults.fail_first[path] = remaining - 1
            self.send_error(503, "try again")
            return
        if path in self.faults.replace:
            body = self.faults.replace[path]
            self._send(body, len(body))
            return
        if path in self.faults.truncate:
            local = Path(self.translate_path(path))
            body = local.read_bytes()
            self._send(body[: self.faults.truncate[path]], len(body))
            self.close_connection = True
            return
        super().do_GET()

    def _send(self, body: bytes, declared: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class HttpServer:
    url: str
    faults: Faults


@pytest.fixture
def serve() -> Iterator[Callable[[Path], HttpServer]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> HttpServer:
        faults = Faults()
        handler = functools.partial(type("H", (_Handler,), {"faults": faults}), directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return HttpServer(f"http://127.0.0.1:{server.server_address[1]}", faults)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def loopback(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 for the duration; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
