"""The registry HTTP API v2 over requests: manifests, blobs, tags, uploads.

Everything is content-addressed and checked while it is read:
- manifests are kept as the exact bytes served (`Manifest.data`) and verified against the
  digest asked for, or against `Docker-Content-Digest` when a tag is resolved; they are
  size-limited;
- blobs are streamed to a partial file next to their destination while hashed (constant
  memory, raw bytes: a gzip layer is never decoded on the way), renamed into place only when
  digest and size match; a cut download resumes from what is on disk with a `Range` request
  (and starts over if the server ignores it);
- pushes go blob -> manifest by digest -> tag; a blob the repository holds is found with HEAD
  and not sent again, one another repository of the same registry holds can be mounted;
  uploads stream from disk, monolithic or in chunks.

Authentication (see `auth`): anonymous, Basic on a Basic challenge, Bearer tokens cached per
(registry host, scope); a 401 leads to one (re-)authentication and one retry, then a clear
error. Plain HTTP only for loopback registries and hosts the caller lists (see `reference`). A
registry given as `insecure` (`--insecure`) is spoken to over HTTPS without checking its
certificate, or over plain HTTP when it speaks no TLS (found with one probe, as Docker does for
its insecure registries); credentials go to it either way, as the caller asked.
GET and HEAD are retried on connection failures and 408/429/5xx with backoff, honouring
`Retry-After` (the package's one retry policy, `core.http.new_session`).

Every operation (a manifest, a tag list, a blob, a push) has one total deadline covering
authentication, retries and their waits, and the body, however slowly the registry sends it
(bodies are read as they arrive, so a registry dripping bytes meets it too), and a per-read
timeout; both default to `core.http`'s and follow `ASTRAGO_TIMEOUT_SCALE`. A missed deadline is
one line naming the URL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3

from astrago_deploy.core.command import timeout_scale
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.http import (
    DEFAULT_DEADLINE,
    DEFAULT_READ_TIMEOUT,
    credentials_hint,
    deadline_for,
    deadline_reached,
    host_credentials,
    new_session,
    timeout_within,
    too_slow,
)
from astrago_deploy.registry.auth import (
    DEFAULT_TOKEN_SECONDS,
    Challenge,
    TokenCache,
    parse_challenge,
)
from astrago_deploy.registry.errors import AccessDeniedError, DigestMismatchError, NotFoundError, RegistryError
from astrago_deploy.registry.manifest import (
    ACCEPT,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    digest_of,
)
from astrago_deploy.registry.reference import DIGEST, Reference, plain_http_hosts, split_host_port, uses_plain_http

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CHUNK = 1024 * 1024
MAX_TOKEN_REPLY = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
OCTET_STREAM = "application/octet-stream"
_GENERIC_TYPES = ("", "application/json", OCTET_STREAM, "text/plain")
# Failures while a response body is read: the connection closed or stalled mid-body.
_CUT = (requests.RequestException, urllib3.exceptions.HTTPError)
_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class _Deadline:
    """The total deadline of one operation: `seconds` long, ending at `ends` (`time.monotonic()`)."""

    seconds: float
    ends: float

    def passed(self) -> bool:
        return time.monotonic() > self.ends

    def read_timeout(self, timeout: float) -> float:
        return timeout_within(timeout, self.ends)

    def missed(self, where: str, url: str, detail: str) -> RegistryError:
        return RegistryError(where, too_slow(_shown(url), self.seconds, detail))

    def check(self, where: str, url: str, detail: str) -> None:
        if self.passed():
            raise self.missed(where, url, detail)

    def sleep(self, seconds: float, where: str, url: str, detail: str) -> None:
        """A back-off before the next try, unless it would end past the deadline."""
        if time.monotonic() + seconds >= self.ends:
            raise self.missed(where, url, detail)
        time.sleep(seconds)


def _bounded(
    operation: Callable[Concatenate[RegistryClient, _P], _R],
) -> Callable[Concatenate[RegistryClient, _P], _R]:
    """A client operation run within the client's total deadline (or the one around it)."""

    def bounded(self: RegistryClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.deadline_of_operation():
            return operation(self, *args, **kwargs)

    functools.update_wrapper(bounded, operation)
    return bounded


class _NoNetrc(requests.auth.AuthBase):
    """An explicit 'no credentials': stops requests from reading ~/.netrc for a registry or realm."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_ANONYMOUS = _NoNetrc()


@dataclass(frozen=True)
class BlobPush:
    digest: str
    size: int
    how: str  # "exists", "mounted" or "uploaded"


@dataclass(frozen=True)
class _Body:
    """What a request sends: bytes, or a region of a file reopened for every attempt."""

    data: bytes = b""
    path: Path | None = None
    start: int = 0
    length: int = 0


class _FileRegion:
    """`length` bytes of a file from `start`, read in blocks (requests streams objects with `read`)."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._file = path.open("rb")
        self._file.seek(start)
        self._left = length

    def __len__(self) -> int:
        return self._left

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(CHUNK):
            yield block

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        block = self._file.read(want)
        self._left -= len(block)
        return block

    def close(self) -> None:
        self._file.close()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            hasher.update(block)
    return f"{algorithm}:{hasher.hexdigest()}"


class RegistryClient:
    """One client for every registry a run talks to; tokens never leave the host they came from."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float | None = None,
        deadline: float | None = None,
        plain_http: Iterable[str] | None = None,
        insecure: Iterable[str] = (),
    ) -> None:
        """`timeout` (one wait for the registry's next bytes) and `deadline` (one whole operation)
        are seconds as given; left out, `core.http`'s defaults times `ASTRAGO_TIMEOUT_SCALE`."""
        self.environ: Mapping[str, str] = dict(os.environ) if environ is None else environ
        self.plain_http = frozenset(plain_http) if plain_http is not None else plain_http_hosts(self.environ)
        self.insecure = frozenset(host.strip().lower() for host in insecure if host.strip())
        self._schemes: dict[str, str] = {}  # insecure registry -> "https" or "http", once probed
        if self.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the caller chose this
        self.retries = retries
        self.backoff = backoff
        scale = timeout_scale(self.environ)
        self.timeout = DEFAULT_READ_TIMEOUT * scale if timeout is None else timeout
        self.deadline = DEFAULT_DEADLINE * scale if deadline is None else deadline
        self._operation = threading.local()  # the deadline in force, per thread
        self.tokens = TokenCache()
        self._basic: set[str] = set()  # registries that asked for Basic credentials
        self._lock = threading.Lock()
        # Uploads stream from disk and cannot be sent twice: only GET and HEAD are retried.
        self._session = new_session(retries, backoff, status=RETRY_STATUS, refused_writes=False)

    # --- deadlines -----------------------------------------------------------------------

    @contextlib.contextmanager
    def deadline_of_operation(self, seconds: float | None = None) -> Iterator[_Deadline]:
        """Within the block, requests and body reads end by `seconds` (default: the client's
        deadline) from now; inside another operation's block, by the earlier of the two. The
        session's retry policy stops there too (`core.http.deadline_for`)."""
        outer: _Deadline | None = getattr(self._operation, "deadline", None)
        limit = self.deadline if seconds is None else seconds
        with deadline_for(limit) as ends:
            current = outer if outer is not None and outer.ends <= ends else _Deadline(limit, ends)
            self._operation.deadline = current
            try:
                yield current
            finally:
                self._operation.deadline = outer

    def _deadline(self) -> _Deadline:
        current: _Deadline | None = getattr(self._operation, "deadline", None)
        return current if current is not None else _Deadline(self.deadline, time.monotonic() + self.deadline)

    # --- addresses -----------------------------------------------------------------------

    def base_url(self, registry: str) -> str:
        return f"{self.scheme(registry)}://{registry}/v2/"

    def scheme(self, registry: str) -> str:
        """ "http" or "https" for `registry`: an insecure one is probed once (HTTPS, unverified,
        else plain HTTP when the answer is no TLS at all)."""
        if not self.is_insecure(registry):
            return "http" if uses_plain_http(registry, self.plain_http) else "https"
        key = registry.lower()
        with self._lock:
            known = self._schemes.get(key)
        if known is not None:
            return known
        scheme = "https"
        probe = new_session(0, 0, status=frozenset())
        try:
            probe.get(f"https://{registry}/v2/", verify=False, timeout=self.timeout, allow_redirects=False).close()
        except requests.exceptions.SSLError:
            scheme = "http"  # a plain HTTP server answers a TLS hello with no TLS
        except requests.RequestException:
            pass  # unreachable: the request that follows says so, over HTTPS
        finally:
            probe.close()
        with self._lock:
            return self._schemes.setdefault(key, scheme)

    def is_insecure(self, registry: str) -> bool:
        """Whether `registry` (host or host:port) was given as insecure, by host:port or host."""
        if not self.insecure:
            return False
        try:
            host, _port = split_host_port(registry)
        except InputError:
            return False
        return registry.lower() in self.insecure or host.lower() in self.insecure

    def _verify(self, url: str) -> bool:
        """Whether TLS certificates are checked for `url`: always, but for an insecure registry."""
        return not self.is_insecure(urlsplit(url).netloc)

    def _url(self, ref: Reference, tail: str) -> str:
        return f"{self.base_url(ref.registry)}{ref.repository}/{tail}"

    @staticmethod
    def _scope(ref: Reference, push: bool = False) -> str:
        return f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"

    # --- requests with authentication ----------------------------------------------------

    def _authorization(self, registry: str, scope: str) -> str | requests.auth.AuthBase:
        token = self.tokens.get(registry, scope)
        if token is not None:
            return f"Bearer {token.value}"
        with self._lock:
            wants_basic = registry.lower() in self._basic
        creds = host_credentials(registry, self.environ) if wants_basic else None
        return requests.auth.HTTPBasicAuth(*creds) if creds else _ANONYMOUS

    def _call(
        self,
        method: str,
        ref: Reference,
        url: str,
        *,
        scope: str,
        ok: Iterable[int],
        headers: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        body: _Body | None = None,
        missing: str = "",
    ) -> requests.Response:
        """Send one request (authenticating once on a 401) and return a response in `ok`."""
        accepted = frozenset(ok)
        authenticated = False
        while True:
            sent = dict(headers or {})
            auth = self._authorization(ref.registry, scope)
            if isinstance(auth, str):
                sent["Authorization"] = auth
                auth = _ANONYMOUS
            resp = self._send(method, ref, url, sent, params, body, auth)
            if resp.status_code != 401:
                break
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            resp.close()
            self.tokens.drop(ref.registry, scope)
            if authenticated:
                raise AccessDeniedError(ref.name, self._refused(ref, challenge))
            self._authenticate(ref, scope, challenge)
            authenticated = True
        if resp.status_code in accepted:
            return resp
        try:
            self._fail(resp, ref, method, missing, self._deadline())
        finally:
            resp.close()
        raise AssertionError("unreachable")  # _fail always raises

    def _send(
        self,
        method: str,
        ref: Reference,
        url: str,
        headers: dict[str, str],
        params: list[tuple[str, str]] | None,
        body: _Body | None,
        auth: requests.auth.AuthBase,
    ) -> requests.Response:
        deadline = self._deadline()
        data: bytes | _FileRegion | None = None
        if body is not None:
            if body.path is not None:
                data = _FileRegion(body.path, body.start, body.length)
                headers["Content-Length"] = str(body.length)
            else:
                data = body.data
        try:
            return self._session.request(
                method,
                url,
                headers=headers,
                params=params,
                data=data,
                auth=auth,
                verify=self._verify(url),
                stream=True,
                timeout=(self.timeout, deadline.read_timeout(self.timeout)),
            )
        except requests.RequestException as exc:
            if (reached := deadline_reached(exc)) is not None:
                raise deadline.missed(ref.name, url, reached.last) from exc
            if deadline.passed():
                raise deadline.missed(ref.name, url, f"the last try failed: {_reason(exc)}") from exc
            raise RegistryError(ref.name, f"{method} {_shown(url)} failed: {_reason(exc)}") from exc
        finally:
            if isinstance(data, _FileRegion):
                data.close()

    def _authenticate(self, ref: Reference, scope: str, challenge: Challenge | None) -> None:
        registry = ref.registry
        creds = host_credentials(registry, self.environ)
        if challenge is None:
            raise AccessDeniedError(ref.name, "HTTP 401 without an authentication challenge")
        if challenge.scheme == "basic":
            if creds is None:
                raise AccessDeniedError(
                    ref.name, f"the registry wants credentials; none are set ({credentials_hint(registry)})"
                )
            with self._lock:
                self._basic.add(registry.lower())
            return
        realm = challenge.realm
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AccessDeniedError(ref.name, "the registry's token challenge names no usable realm")
        plain_ok = uses_plain_http(parts.netloc, self.plain_http) or self.is_insecure(parts.netloc)
        if parts.scheme == "http" and creds is not None and not plain_ok:
            raise AccessDeniedError(
                ref.name, f"refusing to send credentials to the token service {_shown(realm)} over plain HTTP"
            )
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params += [("scope", s) for s in (challenge.scopes or scope.split())]
        deadline = self._deadline()
        try:
            with self._session.get(
                realm,
                params=params,
                auth=requests.auth.HTTPBasicAuth(*creds) if creds else _ANONYMOUS,
                headers={"Accept": "application/json"},
                verify=self._verify(realm),
                stream=True,
                timeout=(self.timeout, deadline.read_timeout(self.timeout)),
            ) as reply:
                if reply.status_code in (401, 403):
                    detail = (
                        "the token service refused the credentials"
                        if creds
                        else f"the registry wants credentials; none are set ({credentials_hint(registry)})"
                    )
                    raise AccessDeniedError(ref.name, detail)
                if reply.status_code != 200:
                    raise RegistryError(ref.name, f"the token service answered HTTP {reply.status_code}")
                answer = json.loads(_read_limited(reply, MAX_TOKEN_REPLY, ref.name, "token reply", deadline))
        except requests.RequestException as exc:
            if deadline_reached(exc) is not None or deadline.passed():
                raise deadline.missed(ref.name, realm, f"the token service: {_reason(exc)}") from exc
            raise RegistryError(ref.name, f"cannot reach the token service {_shown(realm)}: {_reason(exc)}") from exc
        except ValueError as exc:
            raise RegistryError(ref.name, "the token service answered with malformed JSON") from exc
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(ref.name, "the token service gave no token")
        try:
            lifetime = float(answer.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_SECONDS
        self.tokens.put(registry, scope, token, lifetime)

    def _refused(self, ref: Reference, challenge: Challenge | None) -> str:
        if host_credentials(ref.registry, self.environ) is None:
            return f"access denied (set {credentials_hint(ref.registry)})"
        if challenge is not None and challenge.scheme == "basic":
            return "access denied: the registry refused the credentials"
        return "access denied: the registry refused a fresh token (no permission for this repository?)"

    @staticmethod
    def _fail(resp: requests.Response, ref: Reference, method: str, missing: str, deadline: _Deadline) -> None:
        codes = _error_codes(resp, deadline)
        if resp.status_code == 404 and missing:
            raise NotFoundError(ref.name, missing)
        if resp.status_code == 403:
            raise AccessDeniedError(ref.name, f"access denied (HTTP 403{codes})")
        raise RegistryError(ref.name, f"{method} {_shown(resp.url)}: HTTP {resp.status_code}{codes}")

    # --- a registry's own API beside /v2/ (Harbor's /api/v2.0) ---------------------------

    @_bounded
    def api(
        self,
        registry: str,
        method: str,
        path: str,
        *,
        ok: Iterable[int] = (200,),
        params: list[tuple[str, str]] | None = None,
        document: Any = None,
    ) -> tuple[int, Any]:
        """One request to `path` (e.g. `/api/v2.0/projects`) on `registry`, sending `document` as
        JSON and the host's Basic credentials when they are set (such APIs take them without a
        challenge); (status, the JSON answer or None). A status outside `ok` is an error naming
        it: 401/403 an `AccessDeniedError` saying where credentials come from."""
        url = f"{self.scheme(registry)}://{registry}{path}"
        creds = host_credentials(registry, self.environ)
        deadline = self._deadline()
        headers = {"Accept": "application/json"}
        data = None
        if document is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(document).encode()
        try:
            with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                auth=requests.auth.HTTPBasicAuth(*creds) if creds else _ANONYMOUS,
                verify=self._verify(url),
                stream=True,
                allow_redirects=False,
                timeout=(self.timeout, deadline.read_timeout(self.timeout)),
            ) as resp:
                status = resp.status_code
                what = f"{method} {path}"
                body = b"" if method == "HEAD" else _read_limited(resp, MAX_TOKEN_REPLY, registry, what, deadline)
        except requests.RequestException as exc:
            if deadline_reached(exc) is not None or deadline.passed():
                raise deadline.missed(registry, url, _reason(exc)) from exc
            raise RegistryError(registry, f"{method} {_shown(url)} failed: {_reason(exc)}") from exc
        if status not in frozenset(ok):
            codes = _api_errors(body)
            if status in (401, 403):
                hint = "the credentials were refused" if creds else f"none are set ({credentials_hint(registry)})"
                raise AccessDeniedError(registry, f"{method} {_shown(url)}: HTTP {status}{codes}: {hint}")
            raise RegistryError(registry, f"{method} {_shown(url)}: HTTP {status}{codes}")
        try:
            return status, json.loads(body) if body.strip() else None
        except ValueError:
            return status, None

    # --- manifests -----------------------------------------------------------------------

    @_bounded
    def get_manifest(self, ref: Reference, accept: str = ACCEPT, max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """The manifest `ref` names, as the exact bytes served, verified against its digest."""
        target = ref.target
        with self._call(
            "GET",
            ref,
            self._url(ref, f"manifests/{target}"),
            scope=self._scope(ref),
            ok={200},
            headers={"Accept": accept},
            missing=f"{target} not found",
        ) as resp:
            data = _read_limited(resp, max_bytes, ref.name, f"manifest {target}", self._deadline())
            served = resp.headers.get("Docker-Content-Digest", "").strip()
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        expected = ref.digest or (served if DIGEST.match(served) else "")
        actual = digest_of(data, expected.split(":")[0] if expected else "sha256")
        if expected and actual != expected:
            raise DigestMismatchError(ref.name, "manifest", expected, actual)
        return Manifest(_media_type(data, content_type, ref), data, actual)

    @_bounded
    def head_manifest(self, ref: Reference, accept: str = ACCEPT) -> Descriptor | None:
        """The descriptor of `ref` without its body, or None when it does not exist."""
        with self._call(
            "HEAD",
            ref,
            self._url(ref, f"manifests/{ref.target}"),
            scope=self._scope(ref),
            ok={200, 404},
            headers={"Accept": accept},
        ) as resp:
            if resp.status_code == 404:
                return None
            served = resp.headers.get("Docker-Content-Digest", "").strip()
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            length = resp.headers.get("Content-Length", "")
        if not DIGEST.match(served) or content_type in _GENERIC_TYPES or not length.isdigit():
            # The registry did not say (a static mirror): read the manifest to know.
            return self.get_manifest(ref, accept).descriptor()
        if ref.digest and served != ref.digest:
            raise DigestMismatchError(ref.name, "manifest", ref.digest, served)
        return Descriptor(content_type, served, int(length))

    @_bounded
    def put_manifest(self, ref: Reference, manifest: Manifest) -> str:
        """Store the exact bytes at `ref` (a digest or a tag); returns the manifest digest."""
        target = ref.target
        if ref.digest and ref.digest != manifest.digest:
            raise DigestMismatchError(ref.name, "manifest", ref.digest, manifest.digest)
        with self._call(
            "PUT",
            ref,
            self._url(ref, f"manifests/{target}"),
            scope=self._scope(ref, push=True),
            ok={200, 201},
            headers={"Content-Type": manifest.media_type},
            body=_Body(data=manifest.data),
        ) as resp:
            stored = resp.headers.get("Docker-Content-Digest", "").strip()
        if stored and stored != manifest.digest:
            raise DigestMismatchError(ref.name, "stored manifest", manifest.digest, stored)
        return manifest.digest

    @_bounded
    def tags(self, ref: Reference) -> list[str]:
        """Every tag of the repository (following `Link` pagination)."""
        found: list[str] = []
        url = self._url(ref, "tags/list")
        for _page in range(10_000):
            with self._call("GET", ref, url, scope=self._scope(ref), ok={200}, missing="no such repository") as resp:
                body = _read_limited(resp, MAX_MANIFEST_BYTES, ref.name, "tag list", self._deadline())
                link = resp.headers.get("Link", "")
            try:
                found += [str(t) for t in json.loads(body).get("tags") or []]
            except (ValueError, AttributeError) as exc:
                raise RegistryError(ref.name, "malformed tag list") from exc
            following = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            if not following:
                return found
            url = urljoin(url, following.group(1))
        raise RegistryError(ref.name, "the tag list does not end")

    # --- blobs ---------------------------------------------------------------------------

    @_bounded
    def head_blob(self, ref: Reference, digest: str, push: bool = False) -> int | None:
        """The size of blob `digest` in the repository, or None when it is not there."""
        with self._call(
            "HEAD",
            ref,
            self._url(ref, f"blobs/{digest}"),
            scope=self._scope(ref, push),
            ok={200, 404},
        ) as resp:
            if resp.status_code == 404:
                return None
            length = resp.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else -1

    @_bounded
    def blob_bytes(self, ref: Reference, digest: str, max_bytes: int) -> bytes:
        """A small blob (a config, a chart archive) in memory, verified; larger ones: `pull_blob`."""
        hasher = hashlib.new(digest.split(":", maxsplit=1)[0])
        chunks: list[bytes] = []
        total = 0
        deadline = self._deadline()
        url = self._url(ref, f"blobs/{digest}")
        with self._call(
            "GET",
            ref,
            url,
            scope=self._scope(ref),
            ok={200},
            headers={"Accept-Encoding": "identity"},
            missing=f"blob {digest} not found",
        ) as resp:
            try:
                # read1: what one receive brought, so a registry dripping bytes meets the deadline.
                while chunk := resp.raw.read1(CHUNK, decode_content=False):
                    total += len(chunk)
                    if total > max_bytes:
                        raise RegistryError(ref.name, f"blob {digest}: more than {max_bytes} bytes, refused")
                    hasher.update(chunk)
                    chunks.append(chunk)
                    deadline.check(ref.name, url, f"{total} bytes received")
            except _CUT as exc:
                deadline.check(ref.name, url, f"{total} bytes received")
                raise RegistryError(ref.name, f"blob {digest}: download cut ({_reason(exc)})") from exc
        actual = f"{digest.split(':', maxsplit=1)[0]}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestMismatchError(ref.name, "blob", digest, actual)
        return b"".join(chunks)

    def pull_blob(
        self, ref: Reference, digest: str, dest: Path, size: int | None = None, deadline: float | None = None
    ) -> Path:
        """Stream blob `digest` to `dest`, hashing as it arrives; resume a cut transfer with Range.

        The bytes land in `.<dest>.<digest>.partial` beside `dest` and are renamed to `dest` only
        once digest (and `size`, when given) match; a partial file left by an earlier attempt or
        run is resumed, or, holding `size` bytes already, checked and kept. `deadline` bounds the
        whole transfer in seconds (default: the client's); what arrived before it stays in the
        partial file for the next try.
        """
        hexdigest = digest.partition(":")[2]
        partial = dest.with_name(f".{dest.name}.{hexdigest[:16]}.partial")
        dest.parent.mkdir(parents=True, exist_ok=True)
        inherited = partial.exists()
        with self.deadline_of_operation(deadline) as bound:
            actual = self._stream_blob(ref, digest, partial, size, bound)
            if actual != digest and inherited:
                # The partial file an earlier run left held other bytes: fetch from scratch, once.
                partial.unlink(missing_ok=True)
                actual = self._stream_blob(ref, digest, partial, size, bound)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise DigestMismatchError(ref.name, "blob", digest, actual)
        written = partial.stat().st_size
        if size is not None and written != size:
            partial.unlink(missing_ok=True)
            raise DigestMismatchError(ref.name, "blob size", str(size), str(written))
        partial.replace(dest)
        return dest

    def _stream_blob(self, ref: Reference, digest: str, partial: Path, size: int | None, deadline: _Deadline) -> str:
        """Complete `partial` from the registry (resuming with Range); the digest of its content."""
        algorithm = digest.partition(":")[0]
        url = self._url(ref, f"blobs/{digest}")
        cuts = 0
        while True:
            offset = partial.stat().st_size if partial.exists() else 0
            if size is not None and offset > size:
                offset = 0
            hasher = hashlib.new(algorithm)
            if offset:
                _hash_prefix(partial, offset, hasher)
            if offset and offset == size:
                # A run stopped between the last byte and the rename left the whole blob: no
                # request, since a registry that ignores a Range past the end sends all of it again.
                if f"{algorithm}:{hasher.hexdigest()}" == digest:
                    break
                offset = 0
                hasher = hashlib.new(algorithm)
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            resp = self._call(
                "GET",
                ref,
                url,
                scope=self._scope(ref),
                ok={200, 206, 416},
                headers=headers,
                missing=f"blob {digest} not found",
            )
            received = 0
            try:
                if resp.status_code == 416 or (resp.status_code == 206 and _range_start(resp) != offset):
                    # Nothing past `offset` (the partial file may be whole already) or a range we
                    # did not ask for: check what is on disk, else start over.
                    if f"{algorithm}:{hasher.hexdigest()}" == digest:
                        break
                    partial.unlink(missing_ok=True)
                    cuts += 1
                    if cuts > self.retries:
                        raise RegistryError(ref.name, f"blob {digest}: the registry answers ranges inconsistently")
                    continue
                if resp.status_code == 200:
                    # The server ignored Range (or none was sent): the body is the whole blob.
                    offset = 0
                    hasher = hashlib.new(algorithm)
                with partial.open("r+b" if offset else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    # read1: what one receive brought, so a registry dripping bytes meets the deadline.
                    while chunk := resp.raw.read1(CHUNK, decode_content=False):
                        out.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        if size is not None and offset + received > size:
                            raise DigestMismatchError(
                                ref.name, "blob", digest, f"more than the {size} bytes it is pinned at"
                            )
                        deadline.check(ref.name, url, f"{offset + received} bytes received")
                    out.flush()
                    os.fsync(out.fileno())
            except _CUT as exc:
                shown = f"{offset + received} bytes received"
                deadline.check(ref.name, url, shown)
                cuts += 1
                if cuts > self.retries:
                    raise RegistryError(
                        ref.name,
                        f"blob {digest}: download cut at {offset + received} bytes, {cuts} times ({_reason(exc)})",
                    ) from exc
                deadline.sleep(self.backoff * (2 ** (cuts - 1)), ref.name, url, shown)
                continue
            except DigestMismatchError:
                partial.unlink(missing_ok=True)
                raise
            finally:
                resp.close()
            break
        return f"{algorithm}:{hasher.hexdigest()}"

    @_bounded
    def mount_blob(self, ref: Reference, digest: str, source_repository: str) -> bool:
        """Mount `digest` from another repository of the same registry; False if it would not."""
        source = ref.in_repository(source_repository)
        scope = f"{self._scope(ref, push=True)} {self._scope(source)}"
        with self._call(
            "POST",
            ref,
            self._url(ref, "blobs/uploads/"),
            scope=scope,
            ok={201, 202},
            params=[("mount", digest), ("from", source_repository)],
            headers={"Content-Length": "0"},
        ) as resp:
            mounted = resp.status_code == 201
            location = resp.headers.get("Location", "")
        if not mounted and location:
            # The registry opened an upload session instead: close it rather than leave it open.
            self._cancel_upload(ref, urljoin(self.base_url(ref.registry), location))
        return mounted

    @_bounded
    def push_blob(
        self, ref: Reference, source: Path, digest: str | None = None, chunk_size: int | None = None
    ) -> BlobPush:
        """Upload `source` as a blob unless the repository holds it; streamed from disk.

        Monolithic (POST then one PUT) by default; with `chunk_size`, PATCH chunks then PUT.
        A connection failure restarts the upload, up to the client's retries.
        """
        size = source.stat().st_size
        digest = digest or file_digest(source)
        if self.head_blob(ref, digest, push=True) is not None:
            return BlobPush(digest, size, "exists")
        failures = 0
        while True:
            try:
                self._upload(ref, source, digest, size, chunk_size)
                return BlobPush(digest, size, "uploaded")
            except RegistryError as exc:
                if not isinstance(exc.__cause__, _CUT) or failures >= self.retries:
                    raise
                failures += 1
                wait = self.backoff * (2 ** (failures - 1))
                self._deadline().sleep(wait, ref.name, self._url(ref, "blobs/uploads/"), exc.detail)

    def _upload(self, ref: Reference, source: Path, digest: str, size: int, chunk_size: int | None) -> None:
        scope = self._scope(ref, push=True)
        with self._call(
            "POST",
            ref,
            self._url(ref, "blobs/uploads/"),
            scope=scope,
            ok={202},
            headers={"Content-Length": "0"},
        ) as resp:
            location = self._location(ref, resp)
        if chunk_size:
            start = 0
            while start < size:
                length = min(chunk_size, size - start)
                with self._call(
                    "PATCH",
                    ref,
                    location,
                    scope=scope,
                    ok={202},
                    headers={"Content-Type": OCTET_STREAM, "Content-Range": f"{start}-{start + length - 1}"},
                    body=_Body(path=source, start=start, length=length),
                ) as resp:
                    location = self._location(ref, resp)
                start += length
            body = _Body(data=b"")
        else:
            body = _Body(path=source, start=0, length=size)
        with self._call(
            "PUT",
            ref,
            location,
            scope=scope,
            ok={201},
            params=[("digest", digest)],
            headers={"Content-Type": OCTET_STREAM},
            body=body,
        ) as resp:
            stored = resp.headers.get("Docker-Content-Digest", "").strip()
        if stored and stored != digest:
            raise DigestMismatchError(ref.name, "uploaded blob", digest, stored)

    def _location(self, ref: Reference, resp: requests.Response) -> str:
        location = resp.headers.get("Location", "")
        if not location:
            raise RegistryError(ref.name, f"the registry gave no upload location (HTTP {resp.status_code})")
        return urljoin(self.base_url(ref.registry), location)

    def _cancel_upload(self, ref: Reference, location: str) -> None:
        try:
            with self._call("DELETE", ref, location, scope=self._scope(ref, push=True), ok={200, 202, 204, 404}):
                pass
        except RegistryError:
            pass  # an abandoned session expires on the registry's side


# --- helpers ---------------------------------------------------------------------------------


def _read_limited(resp: requests.Response, max_bytes: int, where: str, what: str, deadline: _Deadline) -> bytes:
    """A small body (a manifest, a token, an error), at most `max_bytes`, read by `deadline`."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RegistryError(where, f"{what}: {declared} bytes exceeds the limit of {max_bytes}")
    chunks: list[bytes] = []
    total = 0
    try:
        # read1: what one receive brought, so a registry dripping bytes meets the deadline.
        while chunk := resp.raw.read1(64 * 1024, decode_content=True):
            total += len(chunk)
            if total > max_bytes:
                raise RegistryError(where, f"{what}: more than {max_bytes} bytes, refused")
            chunks.append(chunk)
            deadline.check(where, resp.url, f"{what}: {total} bytes read")
    except _CUT as exc:
        deadline.check(where, resp.url, f"{what}: {total} bytes read")
        raise RegistryError(where, f"{what}: transfer cut ({_reason(exc)})") from exc
    return b"".join(chunks)


def _hash_prefix(path: Path, length: int, hasher: Any) -> None:
    with path.open("rb") as handle:
        left = length
        while left > 0 and (block := handle.read(min(CHUNK, left))):
            hasher.update(block)
            left -= len(block)


def _range_start(resp: requests.Response) -> int:
    match = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else -1


def _media_type(data: bytes, content_type: str, ref: Reference) -> str:
    if content_type not in _GENERIC_TYPES:
        return content_type
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise RegistryError(ref.name, f"the manifest {ref.target} is not JSON") from exc
    declared = document.get("mediaType") if isinstance(document, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if isinstance(document, dict) and "manifests" in document else OCI_MANIFEST


def _error_codes(resp: requests.Response, deadline: _Deadline) -> str:
    """`: CODE (message)` from a registry error body, when it has one."""
    try:
        return _api_errors(_read_limited(resp, MAX_ERROR_BODY, "", "error body", deadline))
    except RegistryError:
        return ""


def _api_errors(body: bytes) -> str:
    """`: CODE (message)` from an API's `{"errors": [...]}` answer (Harbor's and the registry's shape)."""
    try:
        errors = [e for e in json.loads(body).get("errors") or [] if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return ""
    shown = [f"{e.get('code', '?')} ({str(e.get('message', ''))[:200]})" for e in errors[:3]]
    return f": {'; '.join(shown)}" if shown else ""


def _shown(url: str) -> str:
    """The URL without user:password and query (upload locations carry state in the query)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _reason(exc: BaseException) -> str:
    # requests' messages repeat the URL with its query; keep the exception kind and last clause.
    text = str(exc).rsplit(":", 1)[-1].strip(" ')\"")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
