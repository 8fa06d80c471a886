"""Real peers for the registry tests: the CNCF distribution registry (anonymous or with token
auth), a Docker token service signing JWTs with a key made by `openssl`, a loopback proxy that
records requests and can cut a response mid-body or drop `Range`, and images built here
(real gzip layers, OCI and Docker v2 schema 2 manifests, an index).

Nothing of ours is faked: the token server and the proxy are peers on the wire, as a real
token service and a flaky network path would be.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROJECT = Path(__file__).resolve().parent.parent
INSTALLED_REGISTRY = PROJECT / ".tools" / "registry" / "usr" / "bin" / "docker-registry"
REGISTRY_BINARY = Path(os.environ.get("ASTRAGO_TEST_REGISTRY") or INSTALLED_REGISTRY)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 401 from a token-auth registry: it is up
    except (urllib.error.URLError, OSError):
        return False


class RegistryProcess:
    """`docker-registry serve` on 127.0.0.1, storage under `root`; `auth` is a YAML `auth:` block;
    `tls` (certificate, key) serves HTTPS."""

    def __init__(self, root: Path, auth: str = "", tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.storage = root / "data"
        self.log = root / "registry.log"
        self.host = ""
        self._process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # another process may grab the free port first
            host = f"127.0.0.1:{free_port()}"
            config = root / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: error\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: {host}\n"
                + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "")
                + auth
            )
            with self.log.open("wb") as out:
                process = subprocess.Popen([str(REGISTRY_BINARY), "serve", str(config)], stdout=out, stderr=out)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None and not _answers(host):
                time.sleep(0.05)
            if process.poll() is None and _answers(host):
                self.host, self._process = host, process
                return
            process.kill()
            process.wait()
        raise RuntimeError(f"the test registry did not start:\n{self.log.read_text()}")

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


# --- the token service -----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _libtrust_key_id(public_der: bytes) -> str:
    """distribution's `kid` for a key: base32 of the first 240 bits of sha256(DER), in groups of 4."""
    text = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


@dataclass
class Issued:
    service: str
    scopes: list[str]
    token: str
    account: str
    exp: int


@dataclass
class TokenServer:
    """A Docker token service on loopback (RS256 JWTs; `openssl` makes the key and signs)."""

    workdir: Path
    issuer: str = "astrago-test-issuer"
    users: dict[str, str] = field(default_factory=dict)  # when set, Basic credentials are required
    exp_offset: int = 300  # seconds from now to the JWT's `exp` (the reply always claims 300 s)
    grant: bool = True  # False: tokens carry no access (the registry then refuses them)
    issued: list[Issued] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)  # raw query strings, as sent
    url: str = ""
    _server: http.server.ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "key.pem"
        self.cert = self.workdir / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=astrago-test-token"],
            check=True, capture_output=True,
        )  # fmt: skip
        public = subprocess.run(
            ["openssl", "pkey", "-in", str(self.key), "-pubout", "-outform", "DER"], check=True, capture_output=True
        ).stdout
        self.kid = _libtrust_key_id(public)
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._answer(self)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def auth_block(self, service: str) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.url}\n"
            f"    service: {json.dumps(service)}\n"
            f"    issuer: {self.issuer}\n"
            f"    rootcertbundle: {self.cert}\n"
        )

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def _answer(self, request: http.server.BaseHTTPRequestHandler) -> None:
        query = urlsplit(request.path).query
        params = parse_qs(query, keep_blank_values=True)
        account = ""
        if self.users:
            header = request.headers.get("Authorization", "")
            user, _colon, password = (
                base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
                if header.startswith("Basic ")
                else ("", "", "")
            )
            if self.users.get(user) != password or not user:
                self._reply(request, 401, {"details": "bad credentials"})
                return
            account = user
        scopes = [s for value in params.get("scope", []) for s in value.split()]
        service = params.get("service", [""])[0]
        now = int(time.time())
        with self._lock:
            self.queries.append(query)
        access = []
        for scope in scopes:
            kind, _colon, rest = scope.partition(":")
            name, _colon, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",") if self.grant else []})
        exp = now + self.exp_offset
        claims = {
            "iss": self.issuer, "sub": account, "aud": service, "exp": exp, "nbf": now - 300, "iat": now - 300,
            "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        token = self.sign(claims)
        with self._lock:
            self.issued.append(Issued(service, scopes, token, account, exp))
        self._reply(request, 200, {"token": token, "expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"})

    @staticmethod
    def _reply(request: http.server.BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# --- a recording, fault-injecting proxy ------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Proxy:
    """Forwards every request to `upstream` (host:port), recording it; `cut` closes a response
    to a path containing the key after that many body bytes (once per entry); `strip_range`
    drops the client's Range header, like a server that ignores it; `fail` answers that many
    requests to a path containing the key with HTTP 500 instead of forwarding them; `stall`
    stops a response to a path containing the key after `bytes` body bytes for `seconds` (once
    per entry), a link that goes quiet; `pace` waits that many seconds after each MiB of a
    response to a path containing the key, a slow link."""

    upstream: str
    cut: dict[str, int] = field(default_factory=dict)
    strip_range: bool = False
    fail: dict[str, int] = field(default_factory=dict)
    stall: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> (bytes, seconds)
    pace: dict[str, float] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    host: str = ""
    _server: http.server.ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        proxy = self
        self._faults = threading.Lock()  # handler threads take fault entries one at a time

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def _forward(self, request: http.server.BaseHTTPRequestHandler) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        seen = Seen(request.command, request.path, dict(headers))
        self.seen.append(seen)
        if self.strip_range:
            headers.pop("Range", None)
        length = int(request.headers.get("Content-Length") or 0)
        if self._take(self.fail, request.path, lambda left: left - 1 if left > 1 else None) is not None:
            request.rfile.read(length)
            seen.status = 500
            body = b'{"errors": [{"code": "UNKNOWN", "message": "injected by the test proxy"}]}'
            request.send_response(500)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        upstream.putrequest(request.command, request.path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            upstream.putheader(key, value)
        upstream.endheaders()
        left = length
        while left > 0:
            block = request.rfile.read(min(1 << 20, left))
            if not block:
                break
            upstream.send(block)
            left -= len(block)
        reply = upstream.getresponse()
        seen.status = reply.status
        body_length = reply.getheader("Content-Length")
        body = b"" if request.command == "HEAD" or body_length is not None else reply.read()
        request.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                request.send_header(key, value)
        request.send_header("Content-Length", body_length if body_length is not None else str(len(body)))
        request.end_headers()
        if request.command == "HEAD":
            upstream.close()
            return
        limit = self._take(self.cut, request.path, lambda _n: None)
        stall = self._take(self.stall, request.path, lambda _n: None)
        pace = next((seconds for key, seconds in self.pace.items() if key in request.path), 0.0)
        try:
            if body_length is None:
                request.wfile.write(body)
            else:
                sent = 0
                while block := reply.read(1 << 20):
                    if stall is not None and sent + len(block) > stall[0]:
                        request.wfile.write(block[: stall[0] - sent])
                        request.wfile.flush()
                        time.sleep(stall[1])
                        block, sent, stall = block[stall[0] - sent :], stall[0], None
                    if limit is not None and sent + len(block) > limit:
                        request.wfile.write(block[: limit - sent])
                        request.wfile.flush()
                        request.close_connection = True
                        request.connection.shutdown(socket.SHUT_RDWR)
                        break
                    request.wfile.write(block)
                    sent += len(block)
                    if pace:
                        request.wfile.flush()
                        time.sleep(pace)
        except OSError:
            request.close_connection = True  # the client hung up (it gave up on a stalled link)
        upstream.close()

    def _take(self, faults: dict[str, Any], path: str, rest: Any) -> Any:
        """The fault of the first key in `path`, replaced by `rest(fault)` (dropped when None)."""
        with self._faults:
            key = next((key for key in faults if key in path), None)
            if key is None:
                return None
            fault = faults[key]
            if (left := rest(fault)) is None:
                del faults[key]
            else:
                faults[key] = left
            return fault

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# --- images built here -----------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def write_random(path: Path, size: int) -> str:
    """Write `size` random bytes (whole MiB) to `path`, one MiB at a time; their digest."""
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            hasher.update(block)
            out.write(block)
    return f"sha256:{hasher.hexdigest()}"


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def gzip_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A real gzip-compressed tar layer (deterministic) and its uncompressed digest (diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 0, 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0), sha256(raw.getvalue())


@dataclass
class Image:
    manifest: bytes
    media_type: str
    blobs: dict[str, bytes]  # digest -> bytes (config and layers)
    arch: str

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def build_image(layers: list[dict[str, bytes]], arch: str = "amd64", docker: bool = False) -> Image:
    blobs: dict[str, bytes] = {}
    descriptors = []
    diff_ids = []
    for files in layers:
        data, diff_id = gzip_layer(files)
        blobs[sha256(data)] = data
        diff_ids.append(diff_id)
        descriptors.append({"mediaType": DOCKER_LAYER if docker else OCI_LAYER, "digest": sha256(data),
                            "size": len(data)})  # fmt: skip
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
         "config": {"Cmd": ["/bin/true"]}},
        sort_keys=True,
    ).encode()  # fmt: skip
    blobs[sha256(config)] = config
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": sha256(config),
                   "size": len(config)},
        "layers": descriptors,
    }  # fmt: skip
    # Indented on purpose: a client that re-serializes would change the digest.
    return Image(json.dumps(manifest, indent=3).encode(), media_type, blobs, arch)


def build_index(images: list[Image], docker: bool = False) -> bytes:
    media_type = DOCKER_LIST if docker else OCI_INDEX
    entries = [
        {"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest),
         "platform": {"architecture": image.arch, "os": "linux", **({"variant": "v8"} if image.arch == "arm64" else {})}}
        for image in images
    ]  # fmt: skip
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, indent=1).encode()


def drip_manifest(handler: http.server.BaseHTTPRequestHandler, byte: bytes) -> None:
    """Answer with a 100,000-byte manifest sent one `byte` at a time, 100 a second, until the
    client hangs up (a registry too slow for any deadline)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    try:
        for _ in range(100_000):
            handler.wfile.write(byte)
            handler.wfile.flush()
            time.sleep(0.01)
    except OSError:
        pass  # the client gave up
