"""Step 5, commit: one commit on the upgrade worktree's detached HEAD holding the lock and the
report; the caller then creates the branch on it, expecting the branch absent."""

from __future__ import annotations

from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.upgrade import report as upgrade_report


def commit_upgrade(tree: RepoLayout, name: str, old: str, new: str, report: upgrade_report.UpgradeReport) -> str:
    """Commit the lock and the reports in `tree`; the new commit's id."""
    repo = GitRepo(tree.root)
    repo.run("add", "--", str(tree.lock_file.relative_to(tree.root)), "reports/upgrades")
    title = f"charts: upgrade {name} {old} -> {new} ({report.bump}, risk {report.risk})"
    body = "\n".join(f"- {line}" for line in report.notable()[1:]) or "- no notable change"
    repo.run("commit", "--quiet", "--no-verify", "-m", title, "-m", body)
    return repo.resolve("HEAD")
