"""Opening the upgrade pull request on GitHub through its REST API.

The token travels only in the Authorization header; it is never logged, put in a URL or in an
error message. `GITHUB_API_URL` (as GitHub Actions sets it) points elsewhere, e.g. at a
GitHub Enterprise server, or at a fake API in tests.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import requests

from astrago_deploy.core.errors import AstragoError

DEFAULT_API = "https://api.github.com"
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
    def __init__(self, token: str, api_url: str = DEFAULT_API, timeout: float = 30.0) -> None:
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            response = self._session.post(f"{self.api_url}{path}", json=payload, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise AstragoError(f"GitHub API {path}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            message = ""
            with contextlib.suppress(ValueError):
                message = str(response.json().get("message", ""))
            raise AstragoError(f"GitHub API {path}: HTTP {response.status_code} {message}".rstrip())
        return response.json()

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
