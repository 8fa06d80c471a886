"""Opening the upgrade pull request on GitHub through its REST API.

The token travels only in the Authorization header; it is never logged, put in a URL or in an
error message. `GITHUB_API_URL` (as GitHub Actions sets it) points elsewhere, e.g. at a
GitHub Enterprise server (`https://ghe.acme.corp/api/v3`), or at a fake API in tests; the
server whose remotes count as GitHub follows from it (or from `GITHUB_SERVER_URL`).

Rate limits: a reply 403/429 that says so (`Retry-After`, or `x-ratelimit-remaining: 0` with
`x-ratelimit-reset`) is waited out and the request sent again, when the wait is within
`max_wait` seconds; otherwise the error says when to try again. A rate-limited request did not
take effect, so a POST is safe to send again.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from astrago_deploy.core.errors import AstragoError, FetchError
from astrago_deploy.core.http import Fetcher, HttpReply, host_port

DEFAULT_API = "https://api.github.com"
DEFAULT_SERVER = "https://github.com"
MAX_REPLY_BYTES = 16 * 1024 * 1024
MAX_RATE_LIMIT_WAIT = 90.0
RATE_LIMIT_ATTEMPTS = 3
_ANY_STATUS = frozenset(range(100, 600))
_NAME = r"(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?/?$"
# https://[user@]HOST/owner/repo, ssh://[user@]HOST[:port]/owner/repo, [user@]HOST:owner/repo
_REMOTES = (
    re.compile(r"^https://(?:[^@/]+@)?(?P<host>[^/@]+)/" + _NAME),
    re.compile(r"^ssh://(?:[^@/]+@)?(?P<host>[^/:@]+)(?::\d+)?/" + _NAME),
    re.compile(r"^(?:[^@/:]+@)?(?P<host>[^/:@]+):(?!//)" + _NAME),
)


def server_host(api_url: str) -> str:
    """The web host whose repositories `api_url` serves: `api.github.com` -> `github.com`,
    `https://ghe.acme.corp/api/v3` -> `ghe.acme.corp`, `api.acme.ghe.com` -> `acme.ghe.com`."""
    host = host_port(api_url)
    return host[len("api.") :] if host.startswith("api.") else host


def github_repository(
    remote_url: str, api_url: str = DEFAULT_API, server_url: str | None = None
) -> tuple[str, str] | None:
    """(owner, repo) when the remote is on the GitHub server that `api_url` (or `server_url`,
    as `GITHUB_SERVER_URL` names it) belongs to; None for any other remote."""
    hosts = {server_host(api_url)}
    if server_url:
        hosts.add(host_port(server_url))
    for pattern in _REMOTES:
        match = pattern.match(remote_url.strip())
        if match:
            return (match["owner"], match["repo"]) if match["host"].lower() in hosts else None
    return None


def rate_limit_wait(reply: HttpReply, now: float | None = None) -> float | None:
    """Seconds GitHub asks to wait before sending again, when `reply` is a rate-limit refusal."""
    if reply.status not in (403, 429):
        return None
    headers = {key.lower(): value for key, value in reply.headers.items()}
    retry_after = headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    reset = headers.get("x-ratelimit-reset", "").strip()
    if headers.get("x-ratelimit-remaining", "").strip() == "0" and reset.isdigit():
        return max(0.0, int(reset) - (time.time() if now is None else now)) + 1.0
    if reply.status == 429:
        return 60.0  # GitHub's advice for a secondary limit that names no time: at least a minute
    return None


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str


class GitHub:
    """The REST calls the upgrade makes, sent through the package's one HTTP transport
    (`core.http.Fetcher`: timeouts, and retries where a request surely did not take effect)."""

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API,
        fetcher: Fetcher | None = None,
        *,
        max_wait: float = MAX_RATE_LIMIT_WAIT,
    ) -> None:
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.fetcher = fetcher or Fetcher()
        self.max_wait = max_wait

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        waited = 0.0
        for attempt in range(RATE_LIMIT_ATTEMPTS):
            try:
                reply = self.fetcher.http(
                    f"{self.api_url}{path}",
                    MAX_REPLY_BYTES,
                    headers=headers,
                    accept_status=_ANY_STATUS,
                    method="POST",
                    json_body=payload,
                )
            except FetchError as exc:
                raise AstragoError(f"GitHub API {path}: {exc}") from None
            wait = rate_limit_wait(reply)
            if wait is None:
                break
            if waited + wait > self.max_wait or attempt == RATE_LIMIT_ATTEMPTS - 1:
                until = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + wait))
                raise AstragoError(f"GitHub API {path}: rate limited (HTTP {reply.status}); try again after {until}")
            time.sleep(wait)
            waited += wait
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(reply.body)
        if reply.status >= 300:
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
            raise AstragoError(f"GitHub API {path}: HTTP {reply.status} {message}".rstrip())
        if body is None:
            raise AstragoError(f"GitHub API {path}: the reply is not JSON")
        return body

    def open_pull_request(
        self, owner: str, repo: str, head: str, base: str, title: str, body: str, labels: list[str]
    ) -> PullRequest:
        data = self._post(
            f"/repos/{owner}/{repo}/pulls", {"title": title, "head": head, "base": base, "body": body, "draft": False}
        )
        pull = PullRequest(int(data["number"]), str(data.get("html_url", "")))
        if labels:
            self._post(f"/repos/{owner}/{repo}/issues/{pull.number}/labels", {"labels": labels})
        return pull
