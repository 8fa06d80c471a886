"""Opening the upgrade pull request on GitHub through its REST API.

The token travels only in the Authorization header; it is never logged, put in a URL or in an
error message. `GITHUB_API_URL` (as GitHub Actions sets it) points elsewhere, e.g. at a
GitHub Enterprise server, or at a fake API in tests.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from astrago_deploy.core.errors import AstragoError, FetchError
from astrago_deploy.core.http import Fetcher

DEFAULT_API = "https://api.github.com"
MAX_REPLY_BYTES = 16 * 1024 * 1024
_ANY_STATUS = frozenset(range(100, 600))
_REMOTE = re.compile(
    r"^(?:https://(?:[^@/]+@)?github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?/?$"
)


def github_repository(remote_url: str) -> tuple[str, str] | None:
    """(owner, repo) when the remote is on github.com."""
    match = _REMOTE.match(remote_url.strip())
    return (match["owner"], match["repo"]) if match else None


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str


class GitHub:
    """The REST calls the upgrade makes, sent through the package's one HTTP transport
    (`core.http.Fetcher`: timeouts, and retries where a request surely did not take effect)."""

    def __init__(self, token: str, api_url: str = DEFAULT_API, fetcher: Fetcher | None = None) -> None:
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.fetcher = fetcher or Fetcher()

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
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
