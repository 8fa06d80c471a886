"""HTTP for the whole package: downloads with retries, local files, the `<host>/<path>`
mirror mapping, and the transport the GitHub client sends its API requests through.

A mirror is a root URL or directory laid out `<host>/<path>/`; with one configured, every
upstream URL `https://HOST/PATH/x` is read from `<mirror>/HOST/PATH/x` instead. This is how
CI reads `../shared/upstream` and how an air-gapped site reads its own mirror.

Credentials come from environment variables named after the host
(`ASTRAGO_REPO_<HOST>_USERNAME` / `_PASSWORD`, host upper-cased, other characters `_`); they
are sent only as an Authorization header and never appear in a message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions

from astrago_deploy.core.errors import FetchError

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Statuses that say the server did not act on the request: safe to retry any method.
REFUSED_STATUS = frozenset({429, 503})


def redact_url(url: str) -> str:
    """The URL without any user:password part and without a query string."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    return urlunsplit((parts.scheme, host_port(url), parts.path, "", ""))


def host_port(url: str) -> str:
    """`host[:port]` of a URL: no user:password, host lower-cased, an IPv6 literal kept in its
    brackets (`https://[fd00::5]:8443/x` -> `[fd00::5]:8443`, not the ambiguous `fd00::5:8443`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        # Not a number or out of range: keep what was written rather than drop it.
        return parts.netloc.rpartition("@")[2]
    return f"{host}:{port}" if port is not None else host


def host_env_key(host: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", host.upper())


def host_credentials(host: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(`user`, `password`) for `host[:port]` from `ASTRAGO_REPO_<HOST>_USERNAME/_PASSWORD`, if both are set."""
    env = os.environ if environ is None else environ
    key = host_env_key(host)
    user = env.get(f"ASTRAGO_REPO_{key}_USERNAME")
    password = env.get(f"ASTRAGO_REPO_{key}_PASSWORD")
    if user and password:
        return user, password
    return None


def credentials_hint(host: str) -> str:
    """The variable names that hold `host[:port]`'s credentials (for messages; never the values)."""
    return f"ASTRAGO_REPO_{host_env_key(host)}_USERNAME/_PASSWORD"


def credentials_for(url: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    return host_credentials(host_port(url), environ)


def resolve_reference(base_url: str, ref: str) -> str:
    """A chart URL from an index: absolute as written, or relative to the repository URL."""
    if urlsplit(ref).scheme:
        return ref
    return urljoin(base_url.rstrip("/") + "/", ref)


@dataclass(frozen=True)
class Mirror:
    """A root (URL or directory) that stands in for every upstream host."""

    root: str

    @classmethod
    def from_option(cls, value: str | None, base: Path | None = None) -> Mirror | None:
        """`--mirror` wins over `CHARTS_MIRROR`; a relative directory is taken from `base`
        (default: the current directory, as for any path typed at a shell)."""
        raw = value if value else os.environ.get("CHARTS_MIRROR", "")
        if not raw:
            return None
        if urlsplit(raw).scheme in ("http", "https", "file"):
            return cls(raw.rstrip("/"))
        path = Path(raw)
        if not path.is_absolute():
            path = ((base or Path.cwd()) / path).resolve()
        if not path.is_dir():
            raise FetchError(f"mirror directory {path} does not exist")
        return cls(str(path))

    def map(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return url
        tail = f"{host_port(url)}{parts.path}"
        if urlsplit(self.root).scheme:
            return f"{self.root}/{tail}"
        return str(Path(self.root) / tail)


@dataclass
class Fetcher:
    """Fetches bytes from URLs (through a mirror when one is set) with bounded retries."""

    mirror: Mirror | None = None
    retries: int = 4
    backoff: float = 0.5
    timeout: float = 30.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    @classmethod
    def for_mirror(cls, option: str | None) -> Fetcher:
        """A fetcher reading through `--mirror` (or `CHARTS_MIRROR`) when one is given."""
        return cls(mirror=Mirror.from_option(option))

    def location(self, url: str) -> str:
        return self.mirror.map(url) if self.mirror else url

    def get(self, url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """The content at `url`; raises FetchError naming the (redacted) place and reason."""
        where = self.location(url)
        scheme = urlsplit(where).scheme
        if scheme in ("http", "https"):
            return self._get_http(where, max_bytes)
        path = Path(urlsplit(where).path) if scheme == "file" else Path(where)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise FetchError(f"{path}: {size} bytes exceeds the limit of {max_bytes}")
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise FetchError(f"not found: {path} (for {redact_url(url)})") from exc
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror}") from exc

    def _get_http(self, url: str, max_bytes: int) -> bytes:
        return self.http(url, max_bytes).body

    def http(
        self,
        url: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        accept_status: frozenset[int] = frozenset(),
        method: str = "GET",
        json_body: Any = None,
    ) -> HttpReply:
        """`method` `url` (no mirror mapping) with retries on transient failures.

        Status 200 and those in `accept_status` are returned; others raise FetchError.
        Without `auth` or an Authorization header, host credentials from the environment are
        used. A request that is not a GET (it may have taken effect) is retried only when it
        surely did not: the connection was never made, or the server refused it (429, 503).
        """
        sent_headers = dict(headers or {})
        has_authorization = any(key.lower() == "authorization" for key in sent_headers)
        creds = auth if auth is not None or has_authorization else credentials_for(url, self.environ)
        idempotent = method in ("GET", "HEAD")
        retry_status = RETRYABLE_STATUS if idempotent else REFUSED_STATUS
        retry_errors = (requests.ConnectionError, requests.Timeout) if idempotent else (requests.ConnectTimeout,)
        shown = redact_url(url)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                with self._session.request(
                    method, url, auth=creds, headers=sent_headers, json=json_body, stream=True, timeout=self.timeout
                ) as resp:
                    if resp.status_code in retry_status:
                        last = f"HTTP {resp.status_code}"
                        continue
                    if resp.status_code != 200 and resp.status_code not in accept_status:
                        raise FetchError(f"{shown}: HTTP {resp.status_code}")
                    body = self._read_body(resp, shown, max_bytes)
                    return HttpReply(resp.status_code, dict(resp.headers), body)
            except _Truncated as exc:
                if not idempotent:
                    raise FetchError(f"{shown}: {exc}") from exc
                last = str(exc)
            except retry_errors as exc:
                last = f"{type(exc).__name__}: {_reason(exc)}"
            except requests.RequestException as exc:
                # An invalid URL or header, too many redirects: asking again gets the same answer.
                raise FetchError(f"{shown}: {type(exc).__name__}: {_reason(exc)}") from exc
        raise FetchError(f"{shown}: {last} (after {self.retries + 1} attempts)")

    @staticmethod
    def _read_body(resp: requests.Response, shown: str, max_bytes: int) -> bytes:
        declared = _content_length(resp, shown)
        if declared is not None and declared > max_bytes:
            raise FetchError(f"{shown}: {declared} bytes exceeds the limit of {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in resp.raw.stream(64 * 1024, decode_content=True):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"{shown}: more than {max_bytes} bytes, refused")
                chunks.append(chunk)
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
            # The connection broke mid-body: a new attempt may get all of it.
            raise _Truncated(
                f"truncated download (the connection closed before {declared or 'the end'} bytes: {type(exc).__name__})"
            ) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise _Truncated(f"timed out reading the body after {total} bytes") from exc
        except urllib3.exceptions.DecodeError as exc:
            # The server sent what it meant to send; it is not valid for its Content-Encoding.
            encoding = resp.headers.get("Content-Encoding", "identity")
            raise FetchError(f"{shown}: the body is not valid {encoding} data ({exc})") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise FetchError(f"{shown}: {type(exc).__name__}: {exc}") from exc
        body = b"".join(chunks)
        encoding = resp.headers.get("Content-Encoding", "identity")
        if declared is not None and encoding == "identity" and len(body) != declared:
            raise _Truncated(f"truncated download ({len(body)} of {declared} bytes)")
        return body


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


class _Truncated(Exception):
    pass


def _content_length(resp: requests.Response, shown: str) -> int | None:
    declared = resp.headers.get("Content-Length")
    if declared is None:
        return None
    try:
        value = int(declared.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise FetchError(f"{shown}: the server sent an invalid Content-Length header {declared!r}")
    return value


def _reason(exc: Exception) -> str:
    # requests' messages can contain the full URL; keep only the last clause.
    text = str(exc)
    return text.rsplit(":", 1)[-1].strip(" ')\"") or type(exc).__name__
