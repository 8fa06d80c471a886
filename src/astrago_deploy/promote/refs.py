"""Moving a stage branch and recording the move: the one place promote, rollback and backport
change a stage's refs.

A stage branch only ever moves forward (the new commit contains the old one), never by force.
With an `origin`, the branch and its promotion tag are pushed in one atomic push: origin takes
both or neither, so a kill at any moment leaves the completed promotion or nothing there. The
tag object is written first with no ref naming it, and the local tag ref is created only after
origin took it: a commit never carries a local promotion tag that origin lacks, so a killed run
cannot make an unpromoted commit look deployable. Without an origin the local branch is moved
by compare-and-swap, then the tag created; a kill in between leaves an untagged tip, which the
next `env.promote` tags ("a rerun finishes").
"""

from __future__ import annotations

from dataclasses import dataclass

from astrago_deploy.core.errors import InputError, RefMovedError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.model import promotion
from astrago_deploy.model.promotion import Stage


@dataclass(frozen=True)
class Move:
    stage: Stage
    old: str  # the branch's tip as it was read ("" if it does not exist)
    new: str
    tag: str  # promotion tag name to create on `new` ("" for none)
    message: str  # the tag's message


def local_worktree_check(repo: GitRepo, stage: Stage) -> None:
    """Refuse when the stage's local branch is checked out in a worktree with local changes:
    moving it would leave that worktree's files behind the branch."""
    where = repo.checked_out_at(stage.ref)
    if where is not None and GitRepo(where).is_dirty():
        raise InputError(
            f"branch {stage.branch} is checked out in {where} with local changes: commit or stash them there "
            "(or check out another branch) first; nothing was changed"
        )


def apply(repo: GitRepo, move: Move, remote: bool) -> None:
    """Publish `move`: origin's branch (and tag) atomically, or the local branch by compare-and-swap."""
    if move.old and not repo.is_ancestor(move.old, move.new):
        tip = move.old[:12]
        raise InputError(f"{move.new[:12]} does not contain {move.stage.branch}'s tip {tip}: not a fast-forward")
    tag_object = repo.write_tag_object(move.tag, move.new, move.message) if move.tag else ""
    if remote:
        updates = [(move.new, move.stage.ref)]
        if tag_object:
            updates.append((tag_object, f"refs/tags/{move.tag}"))
        try:
            repo.push_atomic("origin", updates)
        except RefMovedError as exc:
            raise RefMovedError(
                exc.argv, exc.returncode, exc.stdout, exc.stderr, exc.ref, exc.expected, exc.found,
                "origin changed since it was read, a concurrent push; run the command again",
            ) from None  # fmt: skip
        # Mirror what origin now holds; a kill here is repaired by the next fetch.
        tracking = promotion.branch_ref(repo, move.stage, True)
        current = repo.ref_value(tracking)
        if current != move.new:
            repo.call("update-ref", tracking, move.new)
        if tag_object and not repo.ref_value(f"refs/tags/{move.tag}"):
            repo.create_ref(f"refs/tags/{move.tag}", tag_object, f"astrago: {move.tag}")
        return
    local_worktree_check(repo, move.stage)
    journal = journal_ref(move.stage)
    if tag_object:
        # The tag about to be made, kept where no deploy check looks: a kill after the branch
        # moved and before the tag exists is finished from it by the next run (`finish`).
        stale = repo.ref_value(journal)
        if stale:
            repo.delete_ref(journal, stale)
        repo.create_ref(journal, tag_object, f"astrago: promoting {move.stage.name}")
    if move.old:
        repo.move_ref(move.stage.ref, move.new, move.old, f"astrago: {move.stage.name} -> {move.new[:12]}")
    else:
        repo.create_ref(move.stage.ref, move.new, f"astrago: create {move.stage.branch}")
    where = repo.checked_out_at(move.stage.ref)
    if where is not None and move.old:
        # The clean worktree that has the branch checked out follows it (a two-tree fast-forward).
        GitRepo(where).run("read-tree", "-m", "-u", move.old, move.new)
    if tag_object:
        repo.create_ref(f"refs/tags/{move.tag}", tag_object, f"astrago: {move.tag}")
        repo.delete_ref(journal, tag_object)


def journal_ref(stage: Stage) -> str:
    return f"refs/astrago/promoting/{stage.name}"


def finish(repo: GitRepo, stage: Stage, tip: str, remote: bool, message: str) -> str:
    """Tag the stage's untagged tip when a promotion is known to have brought it there: the
    journal of a local promotion killed between its move and its tag, or (with origin) the
    merged pull request branch `promote/<stage>-<shortsha>` (or `rollback/...`) at the tip. The tag's name, or ""."""
    if remote:
        for kind in ("promote", "rollback"):
            if repo.remote_value("origin", f"refs/heads/{kind}/{stage.name}-{tip[:12]}") == tip:
                return tag_existing(repo, stage, tip, message, remote)
        return ""
    journal = journal_ref(stage)
    tag_object = repo.ref_value(journal)
    if not tag_object:
        return ""
    name = ""
    if repo.resolve(tag_object) == tip:
        header = repo.run("cat-file", "tag", tag_object).split("\n\n", 1)[0]
        name = next((line[4:] for line in header.splitlines() if line.startswith("tag ")), "")
        if name and not repo.ref_value(f"refs/tags/{name}"):
            repo.create_ref(f"refs/tags/{name}", tag_object, f"astrago: {name} (finished)")
    repo.delete_ref(journal, tag_object)  # a promotion that never moved the branch: forgotten
    return name


def tag_name(repo: GitRepo, stage: Stage, remote: bool) -> str:
    """The next free `<stage>/<YYYY.MM.DD>-<n>`, counting origin's tags too."""
    taken: set[str] = set()
    if remote:
        listing = repo.run("ls-remote", "--tags", "--", "origin", f"refs/tags/{stage.name}/*")
        taken = {line.split("\t", 1)[1].removeprefix("refs/tags/") for line in listing.splitlines() if "\t" in line}
    return promotion.next_tag_name(repo, stage.name, taken=taken)


def tag_existing(repo: GitRepo, stage: Stage, commit: str, message: str, remote: bool) -> str:
    """Create (and push) a promotion tag on `commit`, already the stage's tip: what a promotion
    killed between its move and its tag, or a merged pull request, left untagged. The tag's name."""
    name = tag_name(repo, stage, remote)
    tag_object = repo.write_tag_object(name, commit, message)
    if remote:
        repo.push("origin", tag_object, f"refs/tags/{name}", lease="")
    repo.create_ref(f"refs/tags/{name}", tag_object, f"astrago: {name}")
    return name
