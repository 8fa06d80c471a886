"""The GitHub client sends through the package's HTTP transport: retried only when safe.

The API is faked at the HTTP level on a loopback server (GitHub itself is not reachable here).
"""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.github import GitHub
from astrago_deploy.core.http import Fetcher

from .conftest import loopback

TOKEN = "ghp_fake_token_for_tests"


@dataclass
class Api:
    """Replies are taken in order; each call records (method, path, Authorization)."""

    replies: list[tuple[int, object]] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    api: Api

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.api.calls.append((self.command, self.path, self.headers.get("Authorization", "")))
        status, payload = self.api.replies.pop(0)
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def api() -> Iterator[Api]:
    state = Api()
    with loopback(type("H", (_Handler,), {"api": state})) as state.url:
        yield state


def client(api: Api) -> GitHub:
    # Host credentials in the environment must not replace the token's Authorization header.
    environ = {"ASTRAGO_REPO_127_0_0_1_" + api.url.rsplit(":", 1)[1] + "_USERNAME": "u"}
    environ[next(iter(environ)).replace("USERNAME", "PASSWORD")] = "p"
    return GitHub(TOKEN, api.url, Fetcher(retries=3, backoff=0.0, environ=environ))


def test_a_refused_request_is_retried_and_the_pull_request_opened(api: Api) -> None:
    api.replies = [
        (503, {"message": "try later"}),
        (201, {"number": 7, "html_url": "https://github.com/acme/astrago/pull/7"}),
        (429, {"message": "slow down"}),
        (200, [{"name": "chart-upgrade"}]),
    ]
    pull = client(api).open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", ["chart-upgrade"])
    assert (pull.number, pull.url) == (7, "https://github.com/acme/astrago/pull/7")
    assert [call[:2] for call in api.calls] == [("POST", "/repos/acme/astrago/pulls")] * 2 + [
        ("POST", "/repos/acme/astrago/issues/7/labels")
    ] * 2
    assert {call[2] for call in api.calls} == {f"Bearer {TOKEN}"}


def test_a_post_that_may_have_taken_effect_is_not_repeated(api: Api) -> None:
    api.replies = [(502, {"message": "Bad Gateway"}), (201, {"number": 8})]
    with pytest.raises(AstragoError, match=r"^GitHub API /repos/acme/astrago/pulls: HTTP 502 Bad Gateway$"):
        client(api).open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", [])
    assert len(api.calls) == 1


def test_an_unreachable_api_is_one_line_without_the_token() -> None:
    github = GitHub(TOKEN, "http://127.0.0.1:9", Fetcher(retries=1, backoff=0.0, timeout=2))
    with pytest.raises(AstragoError, match=r"^GitHub API /repos/acme/astrago/pulls: ") as caught:
        github.open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", [])
    assert TOKEN not in str(caught.value)
