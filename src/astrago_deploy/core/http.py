"""HTTP for the whole package: the one retry policy and session factory (used by `Fetcher`,
the GitHub client and the registry client), downloads streamed to disk while hashed, local
files, and the `<host>/<path>` mirror mapping.

Retries are urllib3's `Retry`: connection failures and the statuses in `RETRYABLE_STATUS`,
with exponential backoff, honouring `Retry-After` up to `MAX_RETRY_WAIT` seconds. A request
that may have taken effect (POST, PATCH) is retried on a status only when the server refused
it (429, 503), never after a read error.

`Fetcher.download_to` streams raw bytes (an archive served with `Content-Encoding: gzip` is
kept as sent, so its digest holds) to a temporary file next to the destination while hashing,
resumes a cut body with `Range` when the server allows, and renames into place only when the
digest matches.

Every request of a `Fetcher` (`get`, `http`, `download_to`) has one total deadline covering
connecting, urllib3's retries and their waits, redirects and the body, however slowly or
silently the server behaves; it and the per-read timeout are multiplied by
`ASTRAGO_TIMEOUT_SCALE`, like command timeouts. The deadline reaches the session's retry policy
through `deadline_for` (per thread), so a retry is not started, nor waited for, past it.

Only `http(s)://` is fetched from the network. A local file is read only from a mirror
directory (`CHARTS_MIRROR`, or a `file://` mirror root): the path must resolve, symlinks
followed, to a regular file inside the mirror, so an index naming `file:///dev/zero` or
`file:///etc/...` (or a symlink in the mirror leading out of it) is refused before it is read.

A mirror is a root URL or directory laid out `<host>/<path>/`; with one configured, every
upstream URL `https://HOST/PATH/x` is read from `<mirror>/HOST/PATH/x` instead. This is how
CI reads `../shared/upstream` and how an air-gapped site reads its own mirror.

Credentials come from environment variables named after the host
(`ASTRAGO_REPO_<HOST>_USERNAME` / `_PASSWORD`, host upper-cased, other characters `_`); they
are sent only as an Authorization header and never appear in a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from astrago_deploy.core.command import TIMEOUT_SCALE_ENV, timeout_scale
from astrago_deploy.core.errors import FetchError, IntegrityError

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Downloads go to disk, not memory: the limit only guards the disk against a runaway server.
DEFAULT_MAX_DOWNLOAD = 4 * 1024 * 1024 * 1024
# Seconds, before ASTRAGO_TIMEOUT_SCALE: a whole download, and one wait for the server's next bytes.
DEFAULT_DEADLINE = 600.0
DEFAULT_READ_TIMEOUT = 30.0
MAX_RETRY_WAIT = 60
CHUNK = 1024 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Statuses that say the server did not act on the request: safe to retry any method.
REFUSED_STATUS = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


_deadlines = threading.local()


@contextlib.contextmanager
def deadline_for(seconds: float) -> Iterator[float]:
    """Within the block, requests of this thread through a `new_session` session start no retry
    (and wait for none) past `seconds` from now; yields that moment (`time.monotonic()`). A nested
    block can only shorten the deadline."""
    outer: float | None = getattr(_deadlines, "ends", None)
    ends = time.monotonic() + seconds
    _deadlines.ends = ends if outer is None else min(outer, ends)
    try:
        yield _deadlines.ends
    finally:
        _deadlines.ends = outer


class DeadlineReached(urllib3.exceptions.HTTPError):
    """The deadline of `deadline_for` came before the request could be completed."""

    def __init__(self, last: str) -> None:
        self.last = last
        super().__init__(f"deadline reached ({last})" if last else "deadline reached")


class _Retry(Retry):
    """urllib3's `Retry`, plus: a request that may have taken effect is retried when the server
    refused it (429, 503). With `refused_writes=False` it is never retried on a status (a
    streamed upload body cannot be sent twice). No retry is started or waited for past the
    thread's `deadline_for`, and a `Retry-After` that is not a usable delay counts as absent."""

    refused_writes = True

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if self._is_method_retryable(method):
            return super().is_retry(method, status_code, has_retry_after)
        return self.refused_writes and status_code in REFUSED_STATUS

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            return super().parse_retry_after(retry_after)
        except (urllib3.exceptions.InvalidHeader, ValueError, OverflowError):
            # `soon`, a date in the year 99999: ignore it as RFC 9110 says, and back off instead.
            return 0.0

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Self:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        ends: float | None = getattr(_deadlines, "ends", None)
        if ends is not None and time.monotonic() >= ends:
            raise urllib3.exceptions.MaxRetryError(_pool, url, retry._deadline_reason())
        return retry

    def sleep(self, response: Any = None) -> None:
        ends: float | None = getattr(_deadlines, "ends", None)
        if ends is not None:
            planned = (self.get_retry_after(response) if response and self.respect_retry_after_header else None) or (
                self.get_backoff_time()
            )
            if time.monotonic() + planned >= ends:
                raise urllib3.exceptions.MaxRetryError(None, None, self._deadline_reason())  # type: ignore[arg-type]
        super().sleep(response)

    def _deadline_reason(self) -> DeadlineReached:
        if not self.history:
            return DeadlineReached("")
        last = self.history[-1]
        if last.status is not None:
            return DeadlineReached(f"the last reply was HTTP {last.status}")
        if isinstance(last.error, urllib3.exceptions.ReadTimeoutError):
            return DeadlineReached("the server sent nothing within the read timeout")
        return DeadlineReached(f"the last try failed: {type(last.error).__name__}" if last.error else "")


class _ReadOnlyRetry(_Retry):
    refused_writes = False


def retry_policy(
    retries: int,
    backoff: float,
    *,
    status: frozenset[int] = RETRYABLE_STATUS,
    max_wait: int = MAX_RETRY_WAIT,
    refused_writes: bool = True,
) -> Retry:
    """The package's one retry policy: `retries` more attempts after the first on connection
    failures, read failures (idempotent methods only) and `status`; backoff `backoff * 2**n`
    seconds, or the server's `Retry-After`, both capped at `max_wait`."""
    kind = _Retry if refused_writes else _ReadOnlyRetry
    return kind(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff,
        backoff_max=max_wait,
        status_forcelist=sorted(status),
        allowed_methods=IDEMPOTENT_METHODS,
        respect_retry_after_header=True,
        retry_after_max=max_wait,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def new_session(
    retries: int = 4,
    backoff: float = 0.5,
    *,
    status: frozenset[int] = RETRYABLE_STATUS,
    max_wait: int = MAX_RETRY_WAIT,
    refused_writes: bool = True,
) -> requests.Session:
    """A requests session whose every request follows `retry_policy`."""
    session = requests.Session()
    adapter = HTTPAdapter(
        max_retries=retry_policy(retries, backoff, status=status, max_wait=max_wait, refused_writes=refused_writes)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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

    @property
    def directory(self) -> Path | None:
        """The local folder of a directory or `file://` mirror; None for an http(s) one."""
        if urlsplit(self.root).scheme in ("http", "https"):
            return None
        return _local_path(self.root)

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
    """Fetches bytes from URLs (through a mirror when one is set) with bounded retries.

    `retries` and `backoff` set the retry policy of its session (see `retry_policy`); a body
    cut short is asked for again up to `retries` times. `timeout` (one wait for the server's
    next bytes) and `deadline` (one whole request or download, retries included) are seconds
    before `ASTRAGO_TIMEOUT_SCALE` (read from `environ`); `read_timeout` and `total_deadline`
    are the scaled values in force.
    """

    mirror: Mirror | None = None
    retries: int = 4
    backoff: float = 0.5
    timeout: float = DEFAULT_READ_TIMEOUT
    deadline: float = DEFAULT_DEADLINE
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _session: requests.Session | None = field(default=None, repr=False)
    read_timeout: float = field(init=False, repr=False)
    total_deadline: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self._session is None:
            self._session = new_session(self.retries, self.backoff)
        scale = timeout_scale(self.environ)
        self.read_timeout = self.timeout * scale
        self.total_deadline = self.deadline * scale

    @property
    def session(self) -> requests.Session:
        assert self._session is not None  # set by __post_init__
        return self._session

    @classmethod
    def for_mirror(cls, option: str | None) -> Fetcher:
        """A fetcher reading through `--mirror` (or `CHARTS_MIRROR`) when one is given."""
        return cls(mirror=Mirror.from_option(option))

    def location(self, url: str) -> str:
        return self.mirror.map(url) if self.mirror else url

    def source(self, url: str) -> str | Path:
        """Where `url` is read from: an http(s) URL, or a regular file inside the mirror directory.

        Anything else is refused before it is opened, naming the URL: another scheme (`oci://`,
        `ftp://`), a local file without a mirror directory, or a path that resolves (through `..`
        or a symlink) outside the mirror or to something other than a regular file.
        """
        where = self.location(url)
        scheme = urlsplit(where).scheme
        if scheme in ("http", "https"):
            return where
        shown = redact_url(url)
        if scheme not in ("", "file"):
            raise FetchError(
                f"{shown}: refused: only http(s):// URLs are downloaded (a chart repository names its archives so)"
            )
        folder = self.mirror.directory if self.mirror else None
        if folder is None:
            raise FetchError(
                f"{shown}: refused: a local file is read only from a mirror directory (CHARTS_MIRROR); "
                "a chart repository must name its archives by http(s) URL"
            )
        path = _local_path(where)
        root = Path(os.path.realpath(folder))
        resolved = Path(os.path.realpath(path))
        if not resolved.is_relative_to(root):
            raise FetchError(f"{shown}: refused: {path} resolves to {resolved}, outside the mirror {folder}")
        try:
            mode = resolved.stat().st_mode
        except FileNotFoundError as exc:
            raise FetchError(f"not found: {path} (for {shown})") from exc
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(mode):
            raise FetchError(f"{shown}: refused: {path} in the mirror is not a regular file")
        return resolved

    def get(self, url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """The content at `url`; raises FetchError naming the (redacted) place and reason."""
        where = self.source(url)
        if isinstance(where, str):
            return self._get_http(where, max_bytes)
        try:
            with where.open("rb") as source:
                data = source.read(max_bytes + 1)
        except OSError as exc:
            raise FetchError(f"cannot read {where}: {exc.strerror}") from exc
        if len(data) > max_bytes:
            raise FetchError(f"{where}: more than {max_bytes} bytes, refused")
        return data

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

        Status 200 and those in `accept_status` are returned (a retryable status only once the
        retries are spent); others raise FetchError. Without `auth` or an Authorization header,
        host credentials from the environment are used. A request that is not a GET (it may
        have taken effect) is retried only when it surely did not: the connection was never
        made, or the server refused it (429, 503). All of it, body included, must finish within
        `total_deadline`.
        """
        sent_headers = dict(headers or {})
        has_authorization = any(key.lower() == "authorization" for key in sent_headers)
        creds = auth if auth is not None or has_authorization else credentials_for(url, self.environ)
        idempotent = method in IDEMPOTENT_METHODS
        attempts = self.retries + 1
        shown = redact_url(url)
        last = ""
        with deadline_for(self.total_deadline) as ends:
            # The session retries connections and statuses; this loop asks again for a body cut short.
            for attempt in range(attempts):
                if attempt:
                    self._pause(attempt, ends, shown, last)
                try:
                    with self.session.request(
                        method,
                        url,
                        auth=creds,
                        headers=sent_headers,
                        json=json_body,
                        stream=True,
                        timeout=(self.read_timeout, timeout_within(self.read_timeout, ends)),
                        hooks={"response": _deadline_hook(shown, self.total_deadline, ends)},
                    ) as resp:
                        status = resp.status_code
                        if status != 200 and status not in accept_status:
                            spent = f" (after {attempts} attempts)" if self._retried(method, status) else ""
                            raise FetchError(f"{shown}: HTTP {status}{spent}")
                        body = self._read_body(resp, shown, max_bytes, ends)
                        return HttpReply(status, dict(resp.headers), body)
                except _Truncated as exc:
                    if not idempotent:
                        raise FetchError(f"{shown}: {exc}") from exc
                    last = str(exc)
                except requests.RequestException as exc:
                    raise self._request_failed(exc, shown, method) from exc
        raise FetchError(f"{shown}: {last} (after {attempts} attempts)")

    def _pause(self, attempt: int, ends: float, shown: str, last: str) -> None:
        """The back-off before asking again for a body cut short; never past the deadline."""
        wait = self.backoff * (2 ** (attempt - 1))
        if time.monotonic() + wait >= ends:
            raise FetchError(too_slow(shown, self.total_deadline, last))
        time.sleep(wait)

    def _request_failed(
        self, exc: requests.RequestException, shown: str, method: str, deadline: float | None = None
    ) -> FetchError:
        """The one-line error for a request that raised, naming the URL and what to do."""
        reached = deadline_reached(exc)
        if reached is not None:
            return FetchError(too_slow(shown, deadline or self.total_deadline, reached.last))
        if isinstance(exc, requests.TooManyRedirects):
            return FetchError(f"{shown}: more than 30 redirects (a redirect loop); check the URL or the server")
        if isinstance(exc, requests.exceptions.InvalidHeader):
            detail = str(exc.args[0]) if exc.args else type(exc).__name__
            return FetchError(f"{shown}: the server sent an invalid header ({detail}); check the server or proxy")
        if isinstance(exc, requests.exceptions.InvalidSchema):
            return FetchError(f"{shown}: redirected to a URL that is not http(s); refused")
        spent = self._spent(exc, method)
        if isinstance(exc, requests.ReadTimeout) or isinstance(_cause(exc), urllib3.exceptions.ReadTimeoutError):
            return FetchError(
                f"{shown}: the server sent nothing for {self.read_timeout:g} s{spent} "
                f"(a stalled server: try again later or use a mirror; {TIMEOUT_SCALE_ENV} scales the timeout)"
            )
        return FetchError(f"{shown}: {_failure(exc)}{spent}")

    def _retried(self, method: str, status: int) -> bool:
        """Whether the session retried `status` before handing it over (see `retry_policy`)."""
        retryable = RETRYABLE_STATUS if method in IDEMPOTENT_METHODS else REFUSED_STATUS
        return bool(self.retries) and status in retryable

    def _spent(self, exc: requests.RequestException, method: str) -> str:
        # Connection failures (and read failures of a GET) were retried by the session.
        retried = isinstance(exc, (requests.ConnectionError, requests.Timeout)) and (
            method in IDEMPOTENT_METHODS or isinstance(exc, requests.ConnectTimeout) or _never_connected(exc)
        )
        return f" (after {self.retries + 1} attempts)" if retried and self.retries else ""

    def download_to(
        self,
        url: str,
        path: Path,
        digest: str | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD,
        deadline: float | None = None,
    ) -> str:
        """Stream the raw bytes at `url` (through the mirror) into `path`; returns their digest.

        The bytes go to a temporary file next to `path` while hashed (constant memory) and are
        renamed into place only when they match `digest` (`ALGORITHM:HEX`, e.g. `sha256:...`;
        with None, any content is accepted and the sha256 returned). A mismatch raises
        IntegrityError and leaves `path` as it was. The whole download, retries included, must
        finish within `deadline` seconds (scaled; default: the fetcher's). A URL that `source`
        refuses is refused before anything is written.
        """
        algorithm = digest.split(":", 1)[0] if digest else "sha256"
        where = self.source(url)
        limit = deadline * timeout_scale(self.environ) if deadline is not None else self.total_deadline
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as sink:
                if isinstance(where, str):
                    hasher = _Download(self, where, sink, algorithm, max_bytes, limit).run()
                else:
                    hasher = _copy_local(where, url, sink, algorithm, max_bytes)
                sink.flush()
                os.fsync(sink.fileno())
            actual = f"{algorithm}:{hasher.hexdigest()}"
            if digest and actual != digest:
                raise IntegrityError(
                    f"{redact_url(url)} has {algorithm} {actual.split(':', 1)[1]}, expected {digest.split(':', 1)[1]} "
                    "(tampered or truncated download)"
                )
            tmp.chmod(0o644)
            tmp.replace(path)
            return actual
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _read_body(self, resp: requests.Response, shown: str, max_bytes: int, ends: float) -> bytes:
        declared = _content_length(resp, shown)
        if declared is not None and declared > max_bytes:
            raise FetchError(f"{shown}: {declared} bytes exceeds the limit of {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        try:
            # read1: what one receive brought, so a server dripping bytes meets the deadline.
            while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"{shown}: more than {max_bytes} bytes, refused")
                chunks.append(chunk)
                if time.monotonic() > ends:
                    raise FetchError(too_slow(shown, self.total_deadline, f"{total} bytes read"))
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
            # The connection broke mid-body: a new attempt may get all of it.
            raise _Truncated(
                f"truncated download (the connection closed before {declared or 'the end'} bytes: {type(exc).__name__})"
            ) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            if time.monotonic() > ends:
                raise FetchError(too_slow(shown, self.total_deadline, f"{total} bytes read")) from exc
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


class _Download:
    """One streamed HTTP download into `sink`: raw bytes, hashed as they arrive, a cut body
    resumed with `Range` (or started over when the server ignores it), one total deadline."""

    def __init__(self, fetcher: Fetcher, url: str, sink: Any, algorithm: str, max_bytes: int, deadline: float) -> None:
        self.fetcher = fetcher
        self.url = url
        self.shown = redact_url(url)
        self.sink = sink
        self.algorithm = algorithm
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.ends = time.monotonic() + deadline  # reset when `run` starts
        self.hasher = hashlib.new(algorithm)
        self.received = 0

    def run(self) -> Any:
        attempts = self.fetcher.retries + 1
        last = ""
        with deadline_for(self.deadline) as self.ends:
            for attempt in range(attempts):
                if attempt:
                    wait = self.fetcher.backoff * (2 ** (attempt - 1))
                    if time.monotonic() + wait >= self.ends:
                        raise FetchError(too_slow(self.shown, self.deadline, last))
                    time.sleep(wait)
                try:
                    self._attempt()
                    return self.hasher
                except _Truncated as exc:
                    last = str(exc)
                except requests.RequestException as exc:
                    raise self.fetcher._request_failed(exc, self.shown, "GET", self.deadline) from exc
        raise FetchError(f"{self.shown}: {last} (after {attempts} attempts)")

    def _check_deadline(self) -> None:
        if time.monotonic() > self.ends:
            raise FetchError(too_slow(self.shown, self.deadline, f"{self.received} bytes received"))

    def _attempt(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self.received:
            headers["Range"] = f"bytes={self.received}-"
        timeout = self.fetcher.read_timeout
        creds = credentials_for(self.url, self.fetcher.environ)
        with self.fetcher.session.get(
            self.url,
            auth=creds,
            headers=headers,
            stream=True,
            timeout=(timeout, timeout_within(timeout, self.ends)),
            hooks={"response": _deadline_hook(self.shown, self.deadline, self.ends)},
        ) as resp:
            status = resp.status_code
            if status == 206 and self.received and _range_start(resp) == self.received:
                pass  # the server resumes where the cut left us
            elif status == 200:
                self._restart()
            else:
                spent = f" (after {self.fetcher.retries + 1} attempts)" if self.fetcher._retried("GET", status) else ""
                raise FetchError(f"{self.shown}: HTTP {status}{spent}")
            declared = _content_length(resp, self.shown)
            expected_end = self.received + declared if declared is not None else None
            if expected_end is not None and expected_end > self.max_bytes:
                raise FetchError(f"{self.shown}: {expected_end} bytes exceeds the limit of {self.max_bytes}")
            self._stream(resp, expected_end)

    def _restart(self) -> None:
        self.sink.seek(0)
        self.sink.truncate()
        self.hasher = hashlib.new(self.algorithm)
        self.received = 0

    def _stream(self, resp: requests.Response, expected_end: int | None) -> None:
        try:
            # read1 returns what one receive brought, so a server dripping bytes cannot hold a
            # read past the deadline; decode_content=False keeps the bytes as served.
            while block := resp.raw.read1(CHUNK, decode_content=False):
                self.hasher.update(block)
                self.sink.write(block)
                self.received += len(block)
                if self.received > self.max_bytes:
                    raise FetchError(f"{self.shown}: more than {self.max_bytes} bytes, refused")
                self._check_deadline()
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as exc:
            raise _Truncated(
                f"truncated download (the connection closed after {self.received} "
                f"of {expected_end or 'unknown'} bytes: {type(exc).__name__})"
            ) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            self._check_deadline()
            raise _Truncated(f"timed out reading the body after {self.received} bytes") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise FetchError(f"{self.shown}: {type(exc).__name__}: {exc}") from exc
        if expected_end is not None and self.received != expected_end:
            raise _Truncated(f"truncated download ({self.received} of {expected_end} bytes)")


def _copy_local(path: Path, url: str, sink: Any, algorithm: str, max_bytes: int) -> Any:
    hasher = hashlib.new(algorithm)
    total = 0
    try:
        with path.open("rb") as source:
            while block := source.read(CHUNK):
                total += len(block)
                if total > max_bytes:
                    raise FetchError(f"{path}: more than {max_bytes} bytes, refused")
                hasher.update(block)
                sink.write(block)
    except FileNotFoundError as exc:
        raise FetchError(f"not found: {path} (for {redact_url(url)})") from exc
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror}") from exc
    return hasher


def timeout_within(timeout: float, ends: float) -> float:
    """A read timeout that does not outlast the deadline `ends` (at least 0.1 s, so it can fail)."""
    return max(0.1, min(timeout, ends - time.monotonic()))


def too_slow(shown: str, deadline: float, detail: str) -> str:
    why = f"; {detail}" if detail else ""
    return (
        f"{shown}: not complete after the deadline of {deadline:g} s{why} "
        f"(a slow or stalled server: try again later or use a mirror; {TIMEOUT_SCALE_ENV} scales the deadline)"
    )


def _deadline_hook(shown: str, deadline: float, ends: float) -> Callable[..., None]:
    """A requests response hook (it sees every redirect hop, and a retried status handed over
    once retries stopped) that ends the request once the deadline `ends` has passed."""

    def check(resp: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        if time.monotonic() >= ends:
            resp.close()
            raise FetchError(too_slow(shown, deadline, f"the last reply was HTTP {resp.status_code}"))

    return check


def _cause(exc: requests.RequestException) -> object:
    """The urllib3 reason behind a failed request (what its retries ended on), if any."""
    inner = exc.args[0] if exc.args else None
    return getattr(inner, "reason", inner)


def deadline_reached(exc: requests.RequestException) -> DeadlineReached | None:
    """The `DeadlineReached` behind a request that stopped for the deadline, if that is why."""
    reason = _cause(exc)
    return reason if isinstance(reason, DeadlineReached) else None


def _local_path(where: str) -> Path:
    return Path(urlsplit(where).path) if urlsplit(where).scheme == "file" else Path(where)


def _range_start(resp: requests.Response) -> int:
    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(match[1]) if match else -1


def _never_connected(exc: requests.RequestException) -> bool:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _failure(exc: requests.RequestException) -> str:
    return f"{type(exc).__name__}: {_reason(exc)}"


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
        raise FetchError(
            f"{shown}: the server sent an invalid Content-Length header {declared!r}; check the server or proxy"
        )
    return value


def _reason(exc: Exception) -> str:
    # requests' messages can contain the full URL; keep only the last clause.
    text = str(exc)
    return text.rsplit(":", 1)[-1].strip(" ')\"") or type(exc).__name__
