"""Tasks: back-merge drift up the promotion path, roll a stage back (wired into `env`)."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors


@task(
    help={
        "no_pr": "Move the branches here even where a stage wants a pull request",
        "dry_run": "Merge in temporary worktrees and show what would move; move nothing",
    }
)
@user_errors
def backport(ctx: Context, no_pr: bool = False, dry_run: bool = False) -> None:
    """Merge each later stage's drift into its predecessor (prod -> stage -> dev); rollbacks as history only."""
    from astrago_deploy.promote import backport as back_merge

    result = back_merge.backport(layout_of(ctx), pull_requests=not no_pr, dry_run=dry_run, progress=say)
    if result.nothing_to_do:
        say(back_merge.NOTHING_TO_DO)
        return
    for merge in result.merges:
        say(merge.summary())
    if dry_run:
        say("dry run: nothing was moved")


@task(
    help={
        "env": "The stage to roll back (dev, stage, prod)",
        "to": "Commit or tag whose tree to restore; it must have been on ENV (default: ENV's previous promotion tag)",
        "no_pr": "Move the branch here even where the stage wants a pull request",
        "dry_run": "Check and show what would be done; create and move nothing",
    }
)
@user_errors
def rollback(ctx: Context, env: str, to: str | None = None, no_pr: bool = False, dry_run: bool = False) -> None:
    """Add one commit to ENV's branch restoring REF's tree (Rollback-To trailer), tagged; no rewrite, no force."""
    from astrago_deploy.promote import rollback as roll

    result = roll.rollback(layout_of(ctx), env, to, pull_requests=not no_pr, dry_run=dry_run)
    where = f"{'origin/' if result.remote else ''}{result.stage.branch}"
    if result.nothing_to_do:
        say(f"nothing to roll back: {where} at {result.old[:12]} already has the tree of {result.label}")
    elif dry_run:
        target = f"{result.label} ({result.target[:12]})"
        say(f"dry run: would roll {where} ({result.old[:12]}) back to the tree of {target}; nothing was changed")
    elif result.pull_request:
        say(f"opened {result.pull_request} ({result.head_branch} -> {result.stage.branch}); "
            "tag the tip once it is merged")  # fmt: skip
    else:
        say(f"rolled {where} back to the tree of {result.label}: {result.old[:12]} -> {result.commit[:12]}, "
            f"tagged {result.tag}")  # fmt: skip
