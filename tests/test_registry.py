"""The registry client against the real CNCF distribution registry (anonymous and with token
auth), a token service on loopback, a proxy that records and cuts connections, and skopeo as
the oracle for what an image copy must produce.

The registry binary comes from scripts/install-test-registry (see tests/test_oci.py);
ASTRAGO_SKIP_OCI=1 skips these tests. Tests comparing with skopeo skip when it is not
installed (`apt-get install skopeo`; CI installs it).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from astrago_deploy.charts.oci import CHART_LAYER, OciChart, OciClient
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.http import Fetcher
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.copy import copy_image
from astrago_deploy.registry.errors import AccessDeniedError, DigestMismatchError, NotFoundError, RegistryError
from astrago_deploy.registry.manifest import Manifest, Platform
from astrago_deploy.registry.reference import Reference, split_host_port, uses_plain_http

from .chart_fixtures import chart_tgz
from .conftest import loopback as loopback_server
from .registry_support import (
    DOCKER_LIST,
    OCI_INDEX,
    REGISTRY_BINARY,
    Image,
    Proxy,
    RegistryProcess,
    TokenServer,
    build_image,
    build_index,
    drip_manifest,
    sha256,
    write_random,
)

MiB = 1024 * 1024
SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(
    SKOPEO is None, reason="skopeo is not installed (apt-get install -y skopeo): the oracle tests are skipped"
)


def _needs_registry() -> None:
    if os.environ.get("ASTRAGO_SKIP_OCI") == "1":
        pytest.skip("ASTRAGO_SKIP_OCI=1: OCI registry tests skipped")
    if not REGISTRY_BINARY.is_file():
        pytest.fail(
            f"the test OCI registry is not installed ({REGISTRY_BINARY} is missing): "
            "run scripts/install-test-registry (or set ASTRAGO_SKIP_OCI=1 to skip these tests)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    _needs_registry()
    process = RegistryProcess(tmp_path_factory.mktemp("anonymous-registry"))
    yield process
    process.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path / "token")
    yield server
    server.stop()


@dataclass
class Secured:
    """A token-auth registry behind a recording proxy: the client talks to `proxy.host`."""

    registry: RegistryProcess
    proxy: Proxy
    service: str

    @property
    def host(self) -> str:
        return self.proxy.host


@pytest.fixture
def secured(tmp_path: Path, token_server: TokenServer) -> Iterator[Callable[[str], Secured]]:
    _needs_registry()
    started: list[Secured] = []

    def start(service: str) -> Secured:
        process = RegistryProcess(tmp_path / f"registry-{len(started)}", token_server.auth_block(service))
        secured = Secured(process, Proxy(process.host), service)
        started.append(secured)
        return secured

    yield start
    for item in started:
        item.proxy.stop()
        item.registry.stop()


def repo(host: str, name: str = "") -> Reference:
    return Reference(host, name or f"t{uuid.uuid4().hex[:10]}/app")


def push_image(client: RegistryClient, ref: Reference, image: Image, workdir: Path) -> list[str]:
    """Blobs, then the manifest by digest, then the tag; returns how each blob got there."""
    workdir.mkdir(parents=True, exist_ok=True)
    hows = []
    for digest, data in image.blobs.items():
        path = workdir / digest.replace(":", "-")
        path.write_bytes(data)
        hows.append(client.push_blob(ref, path, digest).how)
    manifest = Manifest(image.media_type, image.manifest, image.digest)
    client.put_manifest(ref.at(image.digest), manifest)
    if ref.tag:
        client.put_manifest(ref, manifest)
    return hows


def bearer_tokens(proxy: Proxy) -> set[str]:
    return {s.headers["Authorization"].removeprefix("Bearer ") for s in proxy.seen if "Authorization" in s.headers}


IMAGE = build_image([{"etc/base": b"base layer\n" * 100}, {"app/run": b"#!/bin/sh\necho amd64\n"}])


# --- references and plain HTTP -------------------------------------------------------------


def test_references_keep_dotted_paths_ipv6_brackets_tags_and_digests() -> None:
    digest = sha256(b"x")
    assert Reference.parse("127.0.0.1:5000/nvcr.io/nvidia/driver:v1.2") == Reference(
        "127.0.0.1:5000", "nvcr.io/nvidia/driver", "v1.2"
    )
    assert Reference.parse(f"oci://[fd00::5]:8443/team/app:1@{digest}") == Reference(
        "[fd00::5]:8443", "team/app", "1", digest
    )
    assert Reference.parse("harbor.local:30002/library/app").tag == ""
    assert Reference.parse(f"harbor.local/a/b@{digest}").target == digest
    assert str(Reference.parse(f"[::1]:5000/a:t@{digest}")) == f"[::1]:5000/a:t@{digest}"
    assert split_host_port("[fd00::5]:8443") == ("fd00::5", 8443)
    for bad in ("app:1", "host/Upper/case", "host/a:bad+tag", "fd00::5:8443/a", "host/a@sha256:abc", "[zz::1]/a"):
        with pytest.raises(InputError):
            Reference.parse(bad)


def test_plain_http_is_decided_by_address_not_by_a_name_prefix() -> None:
    for loopback in ("127.0.0.1:5000", "127.5.6.7", "localhost", "LOCALHOST:5000", "[::1]:5000"):
        assert uses_plain_http(loopback), loopback
    for remote in ("localhost.corp.example", "127.evil.example:5000", "ghcr.io", "[fd00::5]:8443", "10.0.0.1"):
        assert not uses_plain_http(remote), remote
    assert uses_plain_http("harbor.local:30002", {"harbor.local:30002"})
    assert uses_plain_http("harbor.local:30002", {"harbor.local"})
    client = RegistryClient({"ASTRAGO_OCI_PLAIN_HTTP": " harbor.local , 10.0.0.1:80"})
    assert client.base_url("harbor.local:30002") == "http://harbor.local:30002/v2/"
    assert client.base_url("10.0.0.1:80") == "http://10.0.0.1:80/v2/"
    assert client.base_url("localhost.corp.example:5000") == "https://localhost.corp.example:5000/v2/"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy that only records what it is asked and refuses everything."""

    seen: list[tuple[str, str, dict[str, str]]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _refuse(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers)))
        self.send_response(401 if self.command == "GET" else 403)
        self.send_header("WWW-Authenticate", 'Basic realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_CONNECT = do_GET = do_HEAD = _refuse


def test_a_lookalike_localhost_name_gets_https_and_no_credentials_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request goes through a recording proxy, which shows the scheme chosen and what travelled in clear."""
    seen: list[tuple[str, str, dict[str, str]]] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Recorder,), {"seen": seen}))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    secret = "s3cret-canary"
    env = {
        "ASTRAGO_REPO_LOCALHOST_CORP_EXAMPLE_5000_USERNAME": "robot",
        "ASTRAGO_REPO_LOCALHOST_CORP_EXAMPLE_5000_PASSWORD": secret,
    }
    try:
        with pytest.raises(RegistryError) as caught:
            RegistryClient(env, retries=0, timeout=5).tags(repo("localhost.corp.example:5000"))
        assert "https://localhost.corp.example:5000/v2/" in str(caught.value)
        assert [(method, path) for method, path, _h in seen] == [("CONNECT", "localhost.corp.example:5000")]

        # Listed in ASTRAGO_OCI_PLAIN_HTTP, the same name is spoken to over HTTP, as asked.
        seen.clear()
        with pytest.raises(AccessDeniedError) as denied:
            RegistryClient({**env, "ASTRAGO_OCI_PLAIN_HTTP": "localhost.corp.example"}, retries=0).tags(
                repo("localhost.corp.example:5000", "team/app")
            )
        assert seen[0][:2] == ("GET", "http://localhost.corp.example:5000/v2/team/app/tags/list")
        assert secret not in str(denied.value)
    finally:
        server.shutdown()
        server.server_close()


# --- token auth ----------------------------------------------------------------------------


def test_a_token_never_crosses_hosts(
    secured: Callable[[str], Secured], token_server: TokenServer, tmp_path: Path
) -> None:
    first, second = secured("registry-a"), secured("registry-b")
    same_path = "shared/app"
    for target in (first, second):
        push_image(RegistryClient({}), Reference(target.host, same_path, "v1"), IMAGE, tmp_path / "blobs")
        target.proxy.seen.clear()
    token_server.issued.clear()

    client = RegistryClient({}, retries=0)
    for target in (first, second, first, second):
        assert client.get_manifest(Reference(target.host, same_path, "v1")).data == IMAGE.manifest

    issued_for = {target.service: {i.token for i in token_server.issued if i.service == target.service}
                  for target in (first, second)}  # fmt: skip
    assert [len(issued_for[s]) for s in ("registry-a", "registry-b")] == [1, 1]  # one each, then reused
    assert bearer_tokens(first.proxy) == issued_for["registry-a"]
    assert bearer_tokens(second.proxy) == issued_for["registry-b"]


def test_token_parameters_are_url_encoded(secured: Callable[[str], Secured], token_server: TokenServer) -> None:
    odd = "astrago test&registry+1"
    target = secured(odd)
    client = RegistryClient({}, retries=0)
    with pytest.raises(NotFoundError, match=r": no such repository$"):
        client.tags(Reference(target.host, "nvcr.io/nvidia/driver"))
    assert token_server.queries == [
        "service=astrago+test%26registry%2B1&scope=repository%3Anvcr.io%2Fnvidia%2Fdriver%3Apull"
    ]
    assert token_server.issued[0].service == odd  # the registry accepted it: its audience matched


def test_an_expired_token_is_renewed_once(
    secured: Callable[[str], Secured], token_server: TokenServer, tmp_path: Path
) -> None:
    target = secured("registry-a")
    ref = Reference(target.host, "team/app", "v1")
    push_image(RegistryClient({}), ref, IMAGE, tmp_path / "blobs")
    token_server.issued.clear()
    # distribution accepts a token until 60 s after its `exp`: this one has about 4 s left,
    # while the token reply claims 300 s, so the client keeps using it after it lapses.
    token_server.exp_offset = -56
    client = RegistryClient({}, retries=0)
    assert client.get_manifest(ref).digest == IMAGE.digest
    lapsed = token_server.issued[-1]
    token_server.exp_offset = 300
    time.sleep(max(0.0, lapsed.exp + 61 - time.time()))
    target.proxy.seen.clear()

    assert client.get_manifest(ref).digest == IMAGE.digest

    assert [(s.method, s.headers.get("Authorization", "").removeprefix("Bearer "), s.status)
            for s in target.proxy.seen] == [
        ("GET", lapsed.token, 401),
        ("GET", token_server.issued[-1].token, 200),
    ]  # fmt: skip
    assert len(token_server.issued) == 2


def test_a_refused_fresh_token_fails_clearly_after_one_attempt(
    secured: Callable[[str], Secured], token_server: TokenServer
) -> None:
    target = secured("registry-a")
    token_server.grant = False
    with pytest.raises(AccessDeniedError) as caught:
        RegistryClient({}, retries=0).tags(Reference(target.host, "team/app"))
    assert str(caught.value) == (
        f"{target.host}/team/app: access denied (set ASTRAGO_REPO_127_0_0_1_{target.host.split(':')[1]}"
        "_USERNAME/_PASSWORD)"
    )
    assert len(token_server.issued) == 1
    assert [s.status for s in target.proxy.seen] == [401, 401]
    assert token_server.issued[0].token not in str(caught.value)


def test_the_token_service_gets_the_registry_credentials(
    secured: Callable[[str], Secured], token_server: TokenServer
) -> None:
    target = secured("registry-a")
    token_server.users = {"robot": "pa55-canary"}
    key = f"ASTRAGO_REPO_127_0_0_1_{target.host.split(':')[1]}"
    ref = Reference(target.host, "team/app")

    with pytest.raises(AccessDeniedError, match=rf"the registry wants credentials; none are set \({key}_USERNAME"):
        RegistryClient({}, retries=0).tags(ref)
    with pytest.raises(AccessDeniedError) as caught:
        RegistryClient({f"{key}_USERNAME": "robot", f"{key}_PASSWORD": "wrong-canary"}, retries=0).tags(ref)
    assert str(caught.value) == f"{target.host}/team/app: the token service refused the credentials"
    with pytest.raises(NotFoundError):  # authenticated: the repository simply does not exist
        RegistryClient({f"{key}_USERNAME": "robot", f"{key}_PASSWORD": "pa55-canary"}, retries=0).tags(ref)
    assert [i.account for i in token_server.issued] == ["robot"]
    # Credentials went to the token service only, never to the registry.
    assert not any(s.headers.get("Authorization", "").startswith("Basic") for s in target.proxy.seen)


def _bcrypt(password: str) -> str | None:
    """A bcrypt hash for distribution's htpasswd file (the `crypt` module, gone in Python 3.13)."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    except ImportError:
        return None
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    return hashed if hashed and hashed.startswith("$2") else None


def test_basic_auth_sends_credentials_only_after_the_challenge(tmp_path: Path) -> None:
    _needs_registry()
    hashed = _bcrypt("pa55-canary")
    if hashed is None:
        pytest.skip("no bcrypt available (Python's crypt module) to write an htpasswd file")
    (tmp_path / "htpasswd").write_text(f"robot:{hashed}\n")
    process = RegistryProcess(
        tmp_path / "registry", f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp_path / 'htpasswd'}\n"
    )
    proxy = Proxy(process.host)
    try:
        key = f"ASTRAGO_REPO_127_0_0_1_{proxy.host.split(':')[1]}"
        ref = Reference(proxy.host, "team/app", "v1")
        with pytest.raises(AccessDeniedError, match=rf"the registry wants credentials; none are set \({key}_USERNAME"):
            RegistryClient({}, retries=0).tags(ref)
        with pytest.raises(AccessDeniedError) as caught:
            RegistryClient({f"{key}_USERNAME": "robot", f"{key}_PASSWORD": "wrong-canary"}, retries=0).tags(ref)
        assert str(caught.value) == f"{proxy.host}/team/app: access denied: the registry refused the credentials"
        proxy.seen.clear()

        client = RegistryClient({f"{key}_USERNAME": "robot", f"{key}_PASSWORD": "pa55-canary"}, retries=0)
        push_image(client, ref, IMAGE, tmp_path / "up")
        assert client.get_manifest(ref).data == IMAGE.manifest
    finally:
        proxy.stop()
        process.stop()
    sent = [s.headers.get("Authorization", "")[:6] for s in proxy.seen]
    assert sent[0] == "" and proxy.seen[0].status == 401
    assert set(sent[1:]) == {"Basic "}


def test_a_download_deadline_stops_the_transfer_and_keeps_what_arrived(
    registry: RegistryProcess, big_blob: tuple[Reference, str, Path, int], tmp_path: Path
) -> None:
    ref, digest, _source, _peak = big_blob
    client = RegistryClient({})
    url = f"http://{ref.registry}/v2/{ref.repository}/blobs/{digest}"
    with pytest.raises(RegistryError, match=rf"{url}: not complete after the deadline of 0 s; \d+ bytes received "):
        client.pull_blob(ref, digest, tmp_path / "blob", deadline=0.0)
    (partial,) = tmp_path.iterdir()
    assert partial.name.startswith(".blob.") and partial.name.endswith(".partial")
    assert 0 < partial.stat().st_size < 64 * MiB
    assert _file_sha256(client.pull_blob(ref, digest, tmp_path / "blob")) == digest  # resumed
    assert list(tmp_path.iterdir()) == [tmp_path / "blob"]


class _Dripping(http.server.BaseHTTPRequestHandler):
    """A registry that sends every body one byte at a time, 100 bytes a second, for 1000 s."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        drip_manifest(self, b"{")


DRIPPED = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("call", "path", "detail"),
    [
        (lambda c, r, d: c.get_manifest(r.at("1.0")), "manifests/1.0", "manifest 1.0: [0-9]+ bytes read"),
        (lambda c, r, d: c.tags(r), "tags/list", "tag list: [0-9]+ bytes read"),
        (lambda c, r, d: c.blob_bytes(r, DRIPPED, 10 * MiB), f"blobs/{DRIPPED}", "[0-9]+ bytes received"),
        (lambda c, r, d: c.pull_blob(r, DRIPPED, d / "blob"), f"blobs/{DRIPPED}", "[0-9]+ bytes received"),
    ],
    ids=["manifest", "tags", "blob_bytes", "pull_blob"],
)
def test_a_registry_dripping_a_body_meets_the_clients_total_deadline(
    tmp_path: Path, call: Callable[[RegistryClient, Reference, Path], object], path: str, detail: str
) -> None:
    # Each byte comes well within the read timeout, so only a total deadline ends the request;
    # without one, each call ran for the whole drip.
    client = RegistryClient({}, retries=0, timeout=30, deadline=1.5)
    with loopback_server(_Dripping) as url:
        ref = Reference(url.removeprefix("http://"), "charts/demo")
        with pytest.raises(RegistryError) as caught:
            call(client, ref, tmp_path)
    assert re.fullmatch(
        rf"{re.escape(url)}/v2/charts/demo/{re.escape(path)}: not complete after the deadline of 1\.5 s; {detail} "
        r"\(a slow or stalled server: try again later or use a mirror; ASTRAGO_TIMEOUT_SCALE scales the deadline\)",
        caught.value.detail,
    ), caught.value.detail


def test_the_registry_clients_deadline_and_read_timeout_follow_astrago_timeout_scale() -> None:
    assert (RegistryClient({}).deadline, RegistryClient({}).timeout) == (600, 30)
    scaled = RegistryClient({"ASTRAGO_TIMEOUT_SCALE": "0.5"})
    assert (scaled.deadline, scaled.timeout) == (300, 15)
    fetcher = Fetcher(environ={"ASTRAGO_TIMEOUT_SCALE": "0.5"})
    charts = OciClient(fetcher).registry
    assert (charts.deadline, charts.timeout) == (fetcher.total_deadline, fetcher.read_timeout) == (300, 15)


def test_charts_are_read_through_the_registry_client(
    secured: Callable[[str], Secured], token_server: TokenServer, tmp_path: Path
) -> None:
    """OciClient (charts/) on a token-auth registry: per-host tokens, verified manifest and layer."""
    target = secured("charts")
    archive = chart_tgz("demo", "0.1.0")
    config = b"{}"
    (tmp_path / "chart.tgz").write_bytes(archive)
    (tmp_path / "config.json").write_bytes(config)
    client = RegistryClient({})
    ref = Reference(target.host, "charts/demo", "0.1.0")
    client.push_blob(ref, tmp_path / "chart.tgz")
    client.push_blob(ref, tmp_path / "config.json")
    manifest = Manifest.of(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": sha256(config),
                           "size": len(config)},
                "layers": [{"mediaType": CHART_LAYER, "digest": sha256(archive), "size": len(archive)}],
            }
        ).encode(),
        "application/vnd.oci.image.manifest.v1+json",
    )  # fmt: skip
    client.put_manifest(ref, manifest)
    token_server.issued.clear()

    charts = OciClient(Fetcher(environ={}, retries=0))
    chart = OciChart(f"oci://{target.host}/charts", "demo")
    assert charts.tags(chart) == ["0.1.0"]
    assert charts.resolve(chart, "0.1.0") == manifest.digest
    assert charts.pull(chart, manifest.digest) == (archive, sha256(archive))
    assert [i.scopes for i in token_server.issued] == [["repository:charts/demo:pull"]]  # one token, reused


# --- manifests, blobs, copies --------------------------------------------------------------


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-v2s2"])
def test_push_then_pull_keeps_manifest_bytes_and_blobs(registry: RegistryProcess, tmp_path: Path, docker: bool) -> None:
    image = build_image([{"etc/os-release": b"ID=test\n"}, {"bin/app": os.urandom(4096)}], docker=docker)
    client = RegistryClient({})
    ref = repo(registry.host).at("v1")

    assert push_image(client, ref, image, tmp_path / "up") == ["uploaded"] * 3
    assert push_image(client, ref, image, tmp_path / "up") == ["exists"] * 3

    pulled = client.get_manifest(ref)
    assert (pulled.data, pulled.digest, pulled.media_type) == (image.manifest, image.digest, image.media_type)
    head = client.head_manifest(ref)
    assert head is not None and (head.digest, head.size) == (image.digest, len(image.manifest))
    assert client.head_manifest(ref.at("missing")) is None
    assert client.tags(ref) == ["v1"]
    for blob in pulled.blobs:
        dest = client.pull_blob(ref, blob.digest, tmp_path / "down" / blob.digest, size=blob.size)
        assert dest.read_bytes() == image.blobs[blob.digest]
    assert sorted(p.name for p in (tmp_path / "down").iterdir()) == sorted(image.blobs)  # no partial files left
    with pytest.raises(NotFoundError, match=r"/app: v2 not found$"):
        client.get_manifest(ref.at("v2"))


def test_an_index_with_two_platforms_is_copied_whole_or_for_one_platform(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    base = {"etc/base": b"shared base\n" * 50}
    amd64 = build_image([base, {"app": b"amd64"}], arch="amd64")
    arm64 = build_image([base, {"app": b"arm64"}], arch="arm64")
    client = RegistryClient({})
    source = repo(registry.host).at("multi")
    assert push_image(client, source.at(amd64.digest), amd64, tmp_path / "a") == ["uploaded"] * 3
    assert push_image(client, source.at(arm64.digest), arm64, tmp_path / "b") == ["exists", "uploaded", "uploaded"]
    for docker in (False, True):
        index = Manifest.of(build_index([amd64, arm64], docker), DOCKER_LIST if docker else OCI_INDEX)
        client.put_manifest(source, index)

        fetched = client.get_manifest(source)
        assert (fetched.data, fetched.is_index) == (index.data, True)
        chosen = fetched.for_platform(Platform.parse("linux/arm64"))
        assert chosen is not None and chosen.digest == arm64.digest
        assert fetched.for_platform(Platform.parse("linux/arm64/v7")) is None

        whole = copy_image(client, source, repo(registry.host).at("all"), tmp_path)
        assert whole.digest == index.digest
        assert whole.manifests == [amd64.digest, arm64.digest, index.digest]
        assert whole.blobs == {"mounted": 5, "exists": 1}  # the shared base layer is mounted once

        one = repo(registry.host).at("arm")
        report = copy_image(client, source, one, tmp_path, platform=Platform("linux", "arm64"))
        assert report.digest == arm64.digest
        assert client.get_manifest(one).data == arm64.manifest


def test_a_copy_across_registries_streams_blobs_and_keeps_digests(
    registry: RegistryProcess, secured: Callable[[str], Secured], tmp_path: Path
) -> None:
    target = secured("registry-b")
    client = RegistryClient({})
    source = repo(registry.host).at("v1")
    push_image(client, source, IMAGE, tmp_path / "up")

    report = copy_image(client, source, Reference(target.host, "mirror/nvcr.io/app", "v1"), tmp_path / "work")

    assert (report.digest, report.blobs) == (IMAGE.digest, {"uploaded": 3})
    assert client.get_manifest(Reference(target.host, "mirror/nvcr.io/app", "v1")).data == IMAGE.manifest
    assert list((tmp_path / "work").iterdir()) == []  # staged blobs are removed
    again = copy_image(client, source, Reference(target.host, "mirror/nvcr.io/app", "v1"), tmp_path / "work")
    assert again.blobs == {"exists": 3}


@pytest.fixture(scope="module")
def big_blob(registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Reference, str, Path, int]:
    """A 64 MiB blob pushed through the client (monolithic), with the peak traced memory of the push."""
    folder = tmp_path_factory.mktemp("big")
    source = folder / "blob"
    digest = write_random(source, 64 * MiB)
    ref = repo(registry.host)
    tracemalloc.start()
    try:
        assert RegistryClient({}).push_blob(ref, source, digest).how == "uploaded"
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ref, digest, source, peak


def test_a_64_mib_blob_is_pushed_and_pulled_with_flat_memory_and_resumed_after_a_cut(
    registry: RegistryProcess, big_blob: tuple[Reference, str, Path, int], tmp_path: Path
) -> None:
    ref, digest, _source, push_peak = big_blob
    assert push_peak < 8 * MiB
    proxy = Proxy(registry.host, cut={f"/blobs/{digest}": 20 * MiB + 123})
    try:
        client = RegistryClient({}, backoff=0.0)
        tracemalloc.start()
        try:
            dest = client.pull_blob(ref.in_repository(ref.repository, proxy.host), digest, tmp_path / "blob")
            _now, pull_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        proxy.stop()
    assert pull_peak < 8 * MiB
    assert dest.stat().st_size == 64 * MiB
    assert _file_sha256(dest) == digest
    gets = [s for s in proxy.seen if s.method == "GET"]
    assert [(s.headers.get("Range"), s.status) for s in gets] == [(None, 200), (f"bytes={20 * MiB + 123}-", 206)]
    assert list(tmp_path.iterdir()) == [dest]


def test_a_64_mib_blob_behind_token_auth_resumes_after_a_cut_with_the_same_token(
    secured: Callable[[str], Secured], token_server: TokenServer, tmp_path: Path
) -> None:
    """The resumed Range request is authorized like the first one: one token, no second challenge."""
    target = secured("registry-a")
    source = tmp_path / "source"
    digest = write_random(source, 64 * MiB)
    ref = Reference(target.host, "team/big")
    RegistryClient({}).push_blob(ref, source, digest)
    token_server.issued.clear()
    client = RegistryClient({}, backoff=0.0)
    assert client.head_blob(ref, digest) == 64 * MiB  # challenged, token fetched and cached
    target.proxy.seen.clear()
    target.proxy.cut[f"/blobs/{digest}"] = 20 * MiB + 123

    tracemalloc.start()
    try:
        dest = client.pull_blob(ref, digest, tmp_path / "out" / "blob")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB
    assert _file_sha256(dest) == digest
    (token,) = {i.token for i in token_server.issued}
    gets = [s for s in target.proxy.seen if s.method == "GET" and f"/blobs/{digest}" in s.path]
    assert [(s.headers.get("Range"), s.headers.get("Authorization"), s.status) for s in gets] == [
        (None, f"Bearer {token}", 200),
        (f"bytes={20 * MiB + 123}-", f"Bearer {token}", 206),
    ]
    assert list(dest.parent.iterdir()) == [dest]


def test_a_cut_download_starts_over_when_the_server_ignores_range(
    registry: RegistryProcess, big_blob: tuple[Reference, str, Path, int], tmp_path: Path
) -> None:
    ref, digest, _source, _peak = big_blob
    proxy = Proxy(registry.host, cut={f"/blobs/{digest}": 5 * MiB}, strip_range=True)
    try:
        dest = RegistryClient({}, backoff=0.0).pull_blob(ref.in_repository(ref.repository, proxy.host), digest,
                                                         tmp_path / "blob", size=64 * MiB)  # fmt: skip
    finally:
        proxy.stop()
    assert _file_sha256(dest) == digest
    gets = [s for s in proxy.seen if s.method == "GET"]
    assert [(s.headers.get("Range"), s.status) for s in gets] == [(None, 200), ("bytes=5242880-", 200)]


def test_a_blob_that_does_not_match_its_digest_never_lands(registry: RegistryProcess, tmp_path: Path) -> None:
    client = RegistryClient({})
    ref = repo(registry.host)
    path = tmp_path / "layer"
    path.write_bytes(b"original content" * 1000)
    digest = client.push_blob(ref, path).digest
    stored = registry.blob_file(digest)
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"original", b"tampered"))
    try:
        with pytest.raises(DigestMismatchError, match=rf"blob digest mismatch \(expected {digest}, got sha256:"):
            client.pull_blob(ref, digest, tmp_path / "out" / "layer")
    finally:
        stored.write_bytes(original)
    assert list((tmp_path / "out").iterdir()) == []  # neither the blob nor a partial file


def pushed_blob(registry: RegistryProcess, tmp_path: Path) -> tuple[RegistryClient, Reference, Path, str, Path, Path]:
    """A 300 kB blob pushed from `source`: (client, ref, source, digest, dest, the partial file
    a pull of it into `dest` resumes from)."""
    client = RegistryClient({})
    ref = repo(registry.host)
    source = tmp_path / "layer"
    source.write_bytes(os.urandom(300_000))
    digest = client.push_blob(ref, source).digest
    dest = tmp_path / "out" / "layer"
    dest.parent.mkdir()
    leftover = dest.with_name(f".layer.{digest.removeprefix('sha256:')[:16]}.partial")
    return client, ref, source, digest, dest, leftover


def test_a_partial_file_holding_other_bytes_is_fetched_again(registry: RegistryProcess, tmp_path: Path) -> None:
    client, ref, source, digest, dest, leftover = pushed_blob(registry, tmp_path)
    leftover.write_bytes(b"not the blob" * 1000)

    assert client.pull_blob(ref, digest, dest).read_bytes() == source.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]


def test_a_partial_file_holding_the_whole_blob_is_kept_without_a_request(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    # What a run killed between the last byte and the rename leaves. A server that ignores
    # Range (the proxy drops it) would otherwise send the whole blob again.
    client, ref, source, digest, dest, leftover = pushed_blob(registry, tmp_path)
    proxy = Proxy(registry.host, strip_range=True)
    try:
        shutil.copyfile(source, leftover)
        proxied = ref.in_repository(ref.repository, proxy.host)
        assert client.pull_blob(proxied, digest, dest, size=300_000).read_bytes() == source.read_bytes()
        assert [s.method for s in proxy.seen if "/blobs/" in s.path] == []
        # A leftover of the blob's size holding other bytes is fetched again, from the start.
        dest.unlink()
        leftover.write_bytes(bytes(300_000))
        assert client.pull_blob(proxied, digest, dest, size=300_000).read_bytes() == source.read_bytes()
        assert [(s.headers.get("Range"), s.status) for s in proxy.seen if "/blobs/" in s.path] == [(None, 200)]
    finally:
        proxy.stop()
    assert list(dest.parent.iterdir()) == [dest]


def test_a_chunked_upload_streams_from_disk(registry: RegistryProcess, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    digest = write_random(source, 12 * MiB)
    client = RegistryClient({})
    ref = repo(registry.host)
    assert client.push_blob(ref, source, chunk_size=5 * MiB).how == "uploaded"
    assert client.head_blob(ref, digest) == 12 * MiB
    assert _file_sha256(client.pull_blob(ref, digest, tmp_path / "back")) == digest


def _file_sha256(path: Path) -> str:
    import hashlib

    with path.open("rb") as handle:
        return f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}"


# --- skopeo as the oracle -------------------------------------------------------------------


def skopeo(*args: str) -> str:
    assert SKOPEO is not None
    done = subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_skopeo
@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-v2s2"])
def test_skopeo_reads_what_we_push_and_we_read_what_skopeo_pushes(
    registry: RegistryProcess, tmp_path: Path, docker: bool
) -> None:
    image = build_image([{"etc/a": b"a" * 3000}, {"etc/b": os.urandom(2048)}], docker=docker)
    client = RegistryClient({})
    ours = repo(registry.host).at("v1")
    push_image(client, ours, image, tmp_path / "up")

    skopeo("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{ours}", f"dir:{tmp_path / 'dir'}")
    copied = (tmp_path / "dir" / "manifest.json").read_bytes()
    assert sha256(copied) == image.digest
    for digest, data in image.blobs.items():
        assert (tmp_path / "dir" / digest.removeprefix("sha256:")).read_bytes() == data
    assert skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{ours}").encode() == image.manifest

    theirs = repo(registry.host).at("v1")
    skopeo("copy", "--dest-tls-verify=false", "--dest-no-creds", f"dir:{tmp_path / 'dir'}", f"docker://{theirs}")
    pulled = client.get_manifest(theirs)
    assert (pulled.digest, pulled.data) == (image.digest, image.manifest)
    for blob in pulled.blobs:
        assert client.blob_bytes(theirs, blob.digest, MiB) == image.blobs[blob.digest]


@needs_skopeo
def test_skopeo_copies_our_index_copy_to_the_same_digest(registry: RegistryProcess, tmp_path: Path) -> None:
    amd64 = build_image([{"app": b"amd64"}], arch="amd64")
    arm64 = build_image([{"app": b"arm64"}], arch="arm64")
    client = RegistryClient({})
    source = repo(registry.host).at("multi")
    for image in (amd64, arm64):
        push_image(client, source.at(image.digest), image, tmp_path / "up")
    index = Manifest.of(build_index([amd64, arm64]), OCI_INDEX)
    client.put_manifest(source, index)
    dest = repo(registry.host).at("copy")

    assert copy_image(client, source, dest, tmp_path).digest == index.digest

    skopeo("copy", "--all", "--src-tls-verify=false", "--src-no-creds", f"docker://{dest}", f"dir:{tmp_path / 'dir'}")
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == index.data
    for image in (amd64, arm64):
        assert (
            tmp_path / "dir" / f"{image.digest.removeprefix('sha256:')}.manifest.json"
        ).read_bytes() == image.manifest
