"""The HTTP transport against real loopback servers: Retry-After, streamed downloads checked by
digest, raw bytes for archives, Range resume, a total deadline, constant memory."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import re
import tarfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from astrago_deploy.core.errors import FetchError, InputError, IntegrityError
from astrago_deploy.core.http import Fetcher, Mirror

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


SLOW = r"\(a slow or stalled server: try again later or use a mirror; ASTRAGO_TIMEOUT_SCALE scales the deadline\)$"


def test_a_slow_drip_hits_the_total_deadline(site: Site, tmp_path: Path) -> None:
    site.reply = drip
    with pytest.raises(FetchError) as caught:
        fetcher(timeout=5.0).download_to(f"{site.url}/slow.tgz", tmp_path / "slow.tgz", deadline=1.0)
    assert re.match(
        rf"^{site.url}/slow\.tgz: not complete after the deadline of 1 s; \d+ bytes received {SLOW}", str(caught.value)
    )
    assert len(site.requests) == 1  # a deadline is not retried
    assert leftovers(tmp_path) == []


def test_a_slow_drip_of_a_small_file_hits_the_deadline_too(site: Site) -> None:
    site.reply = drip
    with pytest.raises(FetchError) as caught:
        fetcher(timeout=5.0, deadline=1.0).get(f"{site.url}/index.yaml")
    assert re.match(
        rf"^{site.url}/index\.yaml: not complete after the deadline of 1 s; \d+ bytes read {SLOW}", str(caught.value)
    )
    assert len(site.requests) == 1


def silent(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    # Accepts the request and says nothing until the client hangs up.
    handler.rfile.read(1)


@pytest.mark.parametrize("call", ["get", "download_to"])
def test_a_silent_server_meets_the_deadline_across_the_sessions_retries(site: Site, tmp_path: Path, call: str) -> None:
    # Before, each of urllib3's 5 attempts waited a full read timeout: 159 s with the defaults.
    site.reply = silent
    client = fetcher(timeout=5.0, deadline=1.0)
    with pytest.raises(FetchError) as caught:
        if call == "get":
            client.get(f"{site.url}/index.yaml")
        else:
            client.download_to(f"{site.url}/index.yaml", tmp_path / "index.yaml")
    assert str(caught.value) == (
        f"{site.url}/index.yaml: not complete after the deadline of 1 s; the server sent nothing within the read "
        "timeout (a slow or stalled server: try again later or use a mirror; ASTRAGO_TIMEOUT_SCALE scales the deadline)"
    )
    assert len(site.requests) == 1  # no retry is started past the deadline
    assert leftovers(tmp_path) == []


def test_a_retry_after_beyond_the_deadline_is_not_waited_for(site: Site) -> None:
    site.reply = lambda handler, n: send(handler, 503, b"busy", Retry_After="60")
    with pytest.raises(FetchError) as caught:
        fetcher(deadline=1.0).get(f"{site.url}/index.yaml")
    assert str(caught.value).startswith(
        f"{site.url}/index.yaml: not complete after the deadline of 1 s; the last reply was HTTP 503 "
    )
    assert len(site.requests) == 1


def slow_redirects(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    time.sleep(0.3)
    send(handler, 302, b"", Location=f"/hop/{n + 1}")


def slow_refusals(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    time.sleep(0.6)
    send(handler, 503, b"busy")


@pytest.mark.parametrize(("reply", "status"), [(slow_redirects, 302), (slow_refusals, 503)])
@pytest.mark.parametrize("call", ["get", "download_to"])
def test_the_deadline_ends_redirect_hops_and_retried_statuses(
    site: Site, tmp_path: Path, reply: Callable[..., None], status: int, call: str
) -> None:
    # Neither raises in urllib3's retry policy: the hop limit (30) and the status retries would
    # otherwise run on, and a 503 handed over at the deadline claimed "after 5 attempts".
    site.reply = reply
    client = fetcher(deadline=1.0, retries=4)
    with pytest.raises(FetchError) as caught:
        if call == "get":
            client.get(f"{site.url}/hop/0")
        else:
            client.download_to(f"{site.url}/hop/0", tmp_path / "x.tgz")
    assert str(caught.value) == (
        f"{site.url}/hop/0: not complete after the deadline of 1 s; the last reply was HTTP {status} "
        "(a slow or stalled server: try again later or use a mirror; ASTRAGO_TIMEOUT_SCALE scales the deadline)"
    )
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["soon", "Mon, 01 Jan 99999 00:00:00 GMT"])
def test_an_unusable_retry_after_is_ignored_and_backed_off_instead(site: Site, value: str) -> None:
    # A year-99999 date made urllib3 raise a bare ValueError: a traceback in every task.
    def reply(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
        send(handler, 503, b"busy", Retry_After=value) if n == 0 else send(handler, 200, b"index")

    site.reply = reply
    assert fetcher().get(f"{site.url}/index.yaml") == b"index"
    assert len(site.requests) == 2


def test_the_deadline_and_read_timeout_follow_astrago_timeout_scale(site: Site) -> None:
    scaled = Fetcher(environ={"ASTRAGO_TIMEOUT_SCALE": "0.5"}, timeout=4.0, deadline=2.0, retries=0)
    assert (scaled.read_timeout, scaled.total_deadline) == (2.0, 1.0)
    assert Fetcher(environ={}).total_deadline == 600.0
    site.reply = drip
    with pytest.raises(FetchError, match=r"/index\.yaml: not complete after the deadline of 1 s; "):
        scaled.get(f"{site.url}/index.yaml")
    with pytest.raises(InputError, match=r"^ASTRAGO_TIMEOUT_SCALE must be a positive number"):
        Fetcher(environ={"ASTRAGO_TIMEOUT_SCALE": "fast"})


# --- hostile replies: one line naming the URL ---------------------------------------------------


def redirect_loop(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    send(handler, 302, b"", Location=handler.path)


def bad_length(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    send(handler, 200, b"abc", Content_Length="12abc")


def two_lengths(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "3")
    handler.send_header("Content-Length", "5")
    handler.end_headers()
    handler.wfile.write(b"abc")


def to_a_local_file(handler: http.server.BaseHTTPRequestHandler, n: int) -> None:
    send(handler, 302, b"", Location="file:///etc/passwd")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (redirect_loop, "more than 30 redirects (a redirect loop); check the URL or the server"),
        (bad_length, "the server sent an invalid Content-Length header '12abc'; check the server or proxy"),
        (
            two_lengths,
            "the server sent an invalid header (Content-Length contained multiple unmatching values (3, 5)); "
            "check the server or proxy",
        ),
        (to_a_local_file, "redirected to a URL that is not http(s); refused"),
    ],
    ids=["redirect-loop", "bad-content-length", "two-content-lengths", "redirect-to-file"],
)
@pytest.mark.parametrize("call", ["get", "download_to"])
def test_a_hostile_reply_is_one_line_naming_the_url(
    site: Site, tmp_path: Path, reply: Callable[..., None], message: str, call: str
) -> None:
    site.reply = reply
    with pytest.raises(FetchError) as caught:
        if call == "get":
            fetcher().get(f"{site.url}/x.tgz")
        else:
            fetcher().download_to(f"{site.url}/x.tgz", tmp_path / "x.tgz")
    assert str(caught.value) == f"{site.url}/x.tgz: {message}"
    assert leftovers(tmp_path) == []


# --- local files: only inside a mirror directory ---------------------------------------------------


LOCAL_REFUSED = "refused: a local file is read only from a mirror directory (CHARTS_MIRROR); "


@pytest.mark.parametrize("url", ["file:///dev/zero", "file:///etc/passwd", "/etc/passwd"])
def test_a_local_url_is_refused_without_a_mirror_directory(tmp_path: Path, url: str) -> None:
    for client in (fetcher(), Fetcher(mirror=Mirror("http://mirror.example"), environ={})):
        with pytest.raises(FetchError) as caught:
            client.download_to(url, tmp_path / "x.tgz")
        assert str(caught.value) == f"{url}: {LOCAL_REFUSED}a chart repository must name its archives by http(s) URL"
        with pytest.raises(FetchError, match="^" + re.escape(f"{url}: {LOCAL_REFUSED}")):
            client.get(url)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("url", ["oci://ghcr.io/org/demo", "ftp://charts.example/demo-1.0.0.tgz"])
def test_another_scheme_is_refused(tmp_path: Path, url: str) -> None:
    client = Fetcher(mirror=Mirror(str(tmp_path)), environ={})
    with pytest.raises(FetchError) as caught:
        client.download_to(url, tmp_path / "out" / "x.tgz")
    assert str(caught.value) == (
        f"{url}: refused: only http(s):// URLs are downloaded (a chart repository names its archives so)"
    )


def test_a_mirror_directory_serves_only_regular_files_inside_it(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    repo = mirror / "charts.example" / "repo"
    repo.mkdir(parents=True)
    archive = chart_tgz()
    (repo / "demo-1.0.0.tgz").write_bytes(archive)
    (repo / "same.tgz").symlink_to("demo-1.0.0.tgz")  # a link that stays inside is fine
    (repo / "zero.tgz").symlink_to("/dev/zero")
    (repo / "passwd.tgz").symlink_to("/etc/passwd")
    os.mkfifo(repo / "fifo.tgz")
    out = tmp_path / "out"
    for root in (str(mirror), f"file://{mirror}"):
        client = Fetcher(mirror=Mirror(root), environ={})
        assert client.download_to("https://charts.example/repo/same.tgz", out / "demo.tgz", sha256(archive))
        assert client.get(f"file://{repo}/demo-1.0.0.tgz") == archive
        refusals = {
            "https://charts.example/repo/zero.tgz": f"{repo}/zero.tgz resolves to /dev/zero, outside the mirror",
            "https://charts.example/repo/passwd.tgz": f"{repo}/passwd.tgz resolves to /etc/passwd, outside the mirror",
            "https://charts.example/" + "../" * 30 + "etc/passwd": "resolves to /etc/passwd, outside the mirror",
            "file:///etc/passwd": "/etc/passwd resolves to /etc/passwd, outside the mirror",
            "https://charts.example/repo/fifo.tgz": f"{repo}/fifo.tgz in the mirror is not a regular file",
            "https://charts.example/repo": f"{repo} in the mirror is not a regular file",
        }
        for url, reason in refusals.items():
            with pytest.raises(FetchError) as caught:
                client.download_to(url, out / "x.tgz")
            assert str(caught.value).startswith(f"{url}: refused: ")
            assert reason in str(caught.value)
            with pytest.raises(FetchError, match="^" + re.escape(f"{url}: refused: ")):
                client.get(url)
    assert leftovers(out) == ["demo.tgz"]


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
