"""Step 6, publish: push the upgrade branch to `origin` (created there expecting it absent, never
forced) and open a labelled pull request, when `origin` is on GitHub and GITHUB_TOKEN is set
(else the caller says how to open it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from astrago_deploy.core.errors import GitError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.github import DEFAULT_API, GitHub, github_repository
from astrago_deploy.core.http import Fetcher
from astrago_deploy.upgrade import report as upgrade_report


def open_pull_request(
    repo: GitRepo,
    environ: Mapping[str, str],
    branch: str,
    commit: str,
    base: str,
    report: upgrade_report.UpgradeReport,
    work: Path,
    fetcher: Fetcher,
) -> str:
    """The pull request's URL, or "" when there is no token or no GitHub remote."""
    token = environ.get("GITHUB_TOKEN", "")
    try:
        remote = repo.run("remote", "get-url", "origin").strip()
    except GitError:
        remote = ""
    api_url = environ.get("GITHUB_API_URL") or DEFAULT_API
    where = github_repository(remote, api_url, environ.get("GITHUB_SERVER_URL")) if remote else None
    if not token or where is None:
        return ""
    # The branch is new: the push expects it absent on the remote and never overwrites one.
    repo.push("origin", commit, f"refs/heads/{branch}", lease="")
    api = GitHub(token, api_url, fetcher)
    title = f"Upgrade {report.chart} {report.old} -> {report.new} ({report.bump})"
    body = report.markdown(f".cache/upgrades/{work.name}/full.diff")
    labels = [f"semver:{report.bump}", f"risk:{report.risk}", "chart-upgrade"]
    return api.open_pull_request(where[0], where[1], branch, base, title, body, labels).url
