"""The HTTP transport against real loopback servers: Retry-After, streamed downloads checked by
digest, raw bytes for archives, Range resume, a total deadline, constant memory."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import tarfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from astrago_deploy.core.errors import FetchError, IntegrityError
from astrago_deploy.core.http import Fetcher

from .conftest import loopback


@dataclass
class Site:
    """What the server does, per request number (0-based); records each request's headers."""

    reply: Callable[[http.server.BaseHTTPRequestHandler, int], None] = lambda handler, n: None
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    site: Site

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.site.requests.append(dict(self.headers))
        self.site.reply(self, len(self.site.requests) - 1)


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()
    with loopback(type("H", (_Handler,), {"site": state})) as state.url:
        yield state


def send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    named = {key.replace("_", "-"): value for key, value in headers.items()}
    named.setdefault("Content-Length", str(len(body)))
    for key, value in named.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def chart_tgz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        data = b"apiVersion: v2\nname: demo\nversion: 1.0.0\n"
        info = tarfile.TarInfo("demo/Chart.yaml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def fetcher(**options: float) -> Fetcher:
    return Fetcher(environ={}, **{"retries": 2, "backoff": 0.0, "timeout": 10.0, **options})  # type: ignore[arg-type]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- retries ------------------------------------------------------------------------------------


def test_retry_after_is_honoured(site: Site) -> None:
    def reply(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
        if n == 0:
            send(handler, 503, b"busy", Retry_After="1")
        else:
            send(handler, 200, b"index")

    site.reply = reply
    started = time.monotonic()
    assert fetcher().get(f"{site.url}/index.yaml") == b"index"
    # backoff is 0: only the server's Retry-After can have made it wait (a lower bound, never tight).
    assert time.monotonic() - started >= 0.9
    assert len(site.requests) == 2


def test_a_persistent_refusal_names_the_attempts(site: Site) -> None:
    site.reply = lambda handler, n: send(handler, 502, b"bad gateway")
    with pytest.raises(FetchError, match=r"HTTP 502 \(after 3 attempts\)$"):
        fetcher().get(f"{site.url}/index.yaml")
    assert len(site.requests) == 3


# --- download_to ----------------------------------------------------------------------------------


def test_a_tgz_served_with_content_encoding_gzip_is_kept_raw(site: Site, tmp_path: Path) -> None:
    # A misconfigured server labels the .tgz itself as gzip transfer-encoded: decoding it would
    # hand over the inner tar, which fails the archive's digest.
    archive = chart_tgz()
    site.reply = lambda handler, n: send(handler, 200, archive, Content_Encoding="gzip")
    dest = tmp_path / "demo-1.0.0.tgz"

    digest = fetcher().download_to(f"{site.url}/demo-1.0.0.tgz", dest, sha256(archive))

    assert digest == sha256(archive)
    assert dest.read_bytes() == archive
    assert gzip.decompress(archive) != archive  # the decoded body would have been different bytes
    assert site.requests[0]["Accept-Encoding"] == "identity"
    assert leftovers(tmp_path) == ["demo-1.0.0.tgz"]


def test_a_digest_mismatch_leaves_the_destination_as_it_was(site: Site, tmp_path: Path) -> None:
    site.reply = lambda handler, n: send(handler, 200, b"swapped archive")
    dest = tmp_path / "demo.tgz"
    dest.write_bytes(b"old")

    with pytest.raises(
        IntegrityError, match=r"/demo\.tgz has sha256 [0-9a-f]{64}, expected 0{64} \(tampered or truncated download\)$"
    ):
        fetcher().download_to(f"{site.url}/demo.tgz", dest, "sha256:" + "0" * 64)

    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["demo.tgz"]  # no partial file left behind


def test_a_cut_download_resumes_with_a_range_request(site: Site, tmp_path: Path) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    def reply(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
        if n == 0:
            send(handler, 200, body[:300_000], Content_Length=str(len(body)))
            handler.close_connection = True
            return
        start = int(handler.headers["Range"].removeprefix("bytes=").rstrip("-"))
        rest = body[start:]
        send(handler, 206, rest, Content_Range=f"bytes {start}-{len(body) - 1}/{len(body)}")

    site.reply = reply
    dest = tmp_path / "blob"

    assert fetcher().download_to(f"{site.url}/blob", dest, sha256(body)) == sha256(body)

    assert dest.read_bytes() == body
    assert [r.get("Range") for r in site.requests] == [None, "bytes=300000-"]


def test_a_server_ignoring_range_starts_over(site: Site, tmp_path: Path) -> None:
    body = b"x" * 200_000

    def reply(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 200, body[:50_000] if n == 0 else body, Content_Length=str(len(body)))
        handler.close_connection = True

    site.reply = reply
    dest = tmp_path / "blob"
    assert fetcher().download_to(f"{site.url}/blob", dest, sha256(body)) == sha256(body)
    assert dest.read_bytes() == body
    assert site.requests[1]["Range"] == "bytes=50000-"


def drip(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    # Every read brings a byte well within the read timeout: only a total deadline stops it.
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    try:
        for _ in range(100_000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass  # the client gave up


def test_a_slow_drip_hits_the_total_deadline(site: Site, tmp_path: Path) -> None:
    site.reply = drip
    # The deadline's own error (not the end of the 100000-byte body) says it stopped early.
    with pytest.raises(FetchError, match=r"not complete after the deadline of 1 s \(\d+ bytes received\)"):
        fetcher(timeout=5.0).download_to(f"{site.url}/slow.tgz", tmp_path / "slow.tgz", deadline=1.0)
    assert len(site.requests) == 1  # a deadline is not retried
    assert leftovers(tmp_path) == []


def test_a_slow_drip_of_a_small_file_hits_the_deadline_too(site: Site) -> None:
    site.reply = drip
    with pytest.raises(FetchError, match=r"/index\.yaml: not complete after the deadline of 1 s \(\d+ bytes read\)$"):
        fetcher(timeout=5.0, deadline=1.0).get(f"{site.url}/index.yaml")
    assert len(site.requests) == 1


def test_a_large_download_streams_in_constant_memory(site: Site, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    hasher = hashlib.sha256()
    for _ in range(size // len(block)):
        hasher.update(block)

    def reply(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        for _ in range(size // len(block)):
            handler.wfile.write(block)

    site.reply = reply
    dest = tmp_path / "big.bin"
    client = fetcher()
    tracemalloc.start()
    try:
        # Only this thread's allocations matter; the server thread allocates its own blocks.
        digest = client.download_to(f"{site.url}/big.bin", dest, f"sha256:{hasher.hexdigest()}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest == f"sha256:{hasher.hexdigest()}"
    assert dest.stat().st_size == size
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: the body was buffered"


def test_a_mirror_directory_is_copied_and_checked(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "charts.example" / "repo").mkdir(parents=True)
    archive = chart_tgz()
    (mirror / "charts.example" / "repo" / "demo-1.0.0.tgz").write_bytes(archive)
    client = Fetcher.for_mirror(str(mirror))
    dest = tmp_path / "out" / "demo.tgz"

    assert client.download_to("https://charts.example/repo/demo-1.0.0.tgz", dest, sha256(archive)) == sha256(archive)
    assert dest.read_bytes() == archive
    with pytest.raises(
        FetchError, match=r"^not found: .*missing\.tgz \(for https://charts\.example/repo/missing\.tgz\)"
    ):
        client.download_to("https://charts.example/repo/missing.tgz", tmp_path / "out" / "missing.tgz")
    assert leftovers(tmp_path / "out") == ["demo.tgz"]
