"""The GitHub client sends through the package's HTTP transport: retried only when safe.

The API is faked at the HTTP level on a loopback server (GitHub itself is not reachable here).
"""

from __future__ import annotations

import http.server
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.github import GitHub, github_repository, server_host
from astrago_deploy.core.http import Fetcher

from .conftest import loopback

TOKEN = "ghp_fake_token_for_tests"


@dataclass
class Api:
    """Replies are taken in order; each call records (method, path, Authorization)."""

    replies: list[tuple[int, object] | tuple[int, object, dict[str, str]]] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    api: Api

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.api.calls.append((self.command, self.path, self.headers.get("Authorization", "")))
        status, payload, *extra = self.api.replies.pop(0)
        body = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (extra[0] if extra else {}).items():
            self.send_header(key, value)
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


# --- secondary rate limits ----------------------------------------------------------------------

LIMITED = {"message": "You have exceeded a secondary rate limit."}
CREATED = {"number": 9, "html_url": "https://github.com/acme/astrago/pull/9"}


def test_a_403_rate_limit_with_retry_after_is_waited_out(api: Api) -> None:
    api.replies = [(403, LIMITED, {"Retry-After": "1"}), (201, CREATED)]
    started = time.monotonic()
    pull = client(api).open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", [])
    assert pull.number == 9
    assert len(api.calls) == 2
    assert time.monotonic() - started >= 0.9  # it did wait (loose: only a lower bound)


def test_an_exhausted_rate_limit_waits_for_its_reset(api: Api) -> None:
    reset = str(int(time.time()) + 1)
    api.replies = [(403, LIMITED, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}), (201, CREATED)]
    started = time.monotonic()
    pull = client(api).open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", [])
    assert pull.number == 9
    assert len(api.calls) == 2
    assert time.monotonic() - started >= 0.9


def test_a_rate_limit_beyond_the_bound_fails_at_once_saying_when(api: Api) -> None:
    api.replies = [(403, LIMITED, {"Retry-After": "3600"})]
    # One call and the "try again after" error: it did not wait (pytest-timeout ends a run that does).
    with pytest.raises(AstragoError, match=r"rate limited \(HTTP 403\); try again after \d\d:\d\d:\d\d UTC$"):
        client(api).open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", [])
    assert len(api.calls) == 1


def test_a_429_with_retry_after_is_honoured_by_the_transport(api: Api) -> None:
    api.replies = [(429, LIMITED, {"Retry-After": "1"}), (201, CREATED)]
    started = time.monotonic()
    github = GitHub(TOKEN, api.url, Fetcher(retries=2, backoff=0.0))
    assert github.open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", []).number == 9
    assert time.monotonic() - started >= 0.9  # backoff is 0: only Retry-After made it wait


def test_a_forbidden_reply_that_is_no_rate_limit_is_not_repeated(api: Api) -> None:
    api.replies = [(403, {"message": "Resource not accessible by integration"})]
    with pytest.raises(AstragoError, match=r"HTTP 403 Resource not accessible by integration$"):
        client(api).open_pull_request("acme", "astrago", "chart/x-2", "main", "t", "b", [])
    assert len(api.calls) == 1


# --- which remotes are on GitHub ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "host"),
    [
        ("https://api.github.com", "github.com"),
        ("https://ghe.acme.corp/api/v3", "ghe.acme.corp"),
        ("https://api.acme.ghe.com", "acme.ghe.com"),
        ("https://ghe.acme.corp:8443/api/v3/", "ghe.acme.corp:8443"),
    ],
)
def test_the_server_follows_from_the_api_url(api_url: str, host: str) -> None:
    assert server_host(api_url) == host


@pytest.mark.parametrize(
    "remote",
    [
        "https://ghe.acme.corp/acme/deploy.git",
        "https://ci-bot@ghe.acme.corp/acme/deploy",
        "git@ghe.acme.corp:acme/deploy.git",
        "ssh://git@ghe.acme.corp/acme/deploy.git",
        "ssh://git@GHE.acme.corp:2222/acme/deploy/",
    ],
)
def test_a_github_enterprise_remote_is_matched(remote: str) -> None:
    assert github_repository(remote, "https://ghe.acme.corp/api/v3") == ("acme", "deploy")
    assert github_repository(remote, "http://127.0.0.1:8080", "https://ghe.acme.corp") == ("acme", "deploy")
    # Not a github.com remote: with the default API it is no GitHub repository.
    assert github_repository(remote) is None


def test_github_com_remotes_and_others() -> None:
    assert github_repository("git@github.com:acme/astrago.git") == ("acme", "astrago")
    assert github_repository("https://github.com/acme/astrago") == ("acme", "astrago")
    assert github_repository("https://gitlab.com/acme/astrago.git") is None
    assert github_repository("https://github.com.evil.example/acme/astrago.git") is None
    assert github_repository("/srv/git/astrago.git") is None
