"""Opening a pull request into a stage branch instead of moving it: when `GITHUB_TOKEN` is set,
`origin` is on the GitHub server `GITHUB_API_URL` belongs to, and the user did not say `--no-pr`.

The head branch is new: it is pushed expecting it absent on origin (`lease=""`), so an existing
branch of that name is never overwritten. The token travels only inside `core.github.GitHub`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from astrago_deploy.core.errors import GitError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.github import DEFAULT_API, GitHub, github_repository
from astrago_deploy.core.http import Fetcher

# GitHub refuses a pull request body above 65,536 characters; keep room for the cut note.
BODY_LIMIT = 60_000


@dataclass(frozen=True)
class PullRequestTarget:
    """The GitHub repository behind `origin`, and the API client for it."""

    api: GitHub
    owner: str
    name: str


def github_target(
    repo: GitRepo, environ: Mapping[str, str], fetcher: Fetcher | None = None
) -> PullRequestTarget | None:
    """Where pull requests go, or None when there is no token or `origin` is not on GitHub."""
    token = environ.get("GITHUB_TOKEN", "")
    if not token:
        return None
    try:
        # As written (before any url.*.insteadOf rewrite): the name that says which repository it is.
        remote = repo.run("config", "--get", "remote.origin.url").strip()
    except GitError:
        return None
    api_url = environ.get("GITHUB_API_URL") or DEFAULT_API
    where = github_repository(remote, api_url, environ.get("GITHUB_SERVER_URL"))
    if where is None:
        return None
    return PullRequestTarget(GitHub(token, api_url, fetcher or Fetcher(environ=dict(environ))), *where)


def clipped(body: str) -> str:
    if len(body) <= BODY_LIMIT:
        return body
    return body[:BODY_LIMIT].rsplit("\n", 1)[0] + "\n\n(cut: the list is longer than a pull request body takes)\n"


def open_pull_request(
    repo: GitRepo,
    target: PullRequestTarget,
    branch: str,
    commit: str,
    base: str,
    title: str,
    body: str,
    labels: list[str],
) -> str:
    """Push `commit` as the new branch `branch` and open a pull request from it into `base`; its URL.
    A branch origin already holds at `commit` (a rerun) is not pushed again."""
    if repo.remote_value("origin", f"refs/heads/{branch}") != commit:
        repo.push("origin", commit, f"refs/heads/{branch}", lease="")
    pull = target.api.open_pull_request(target.owner, target.name, branch, base, title, clipped(body), labels)
    return pull.url
