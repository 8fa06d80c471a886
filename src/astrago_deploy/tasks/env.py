"""Tasks: list and create deployment environments."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors
from astrago_deploy.tasks import env_backport


@task(name="list")
@user_errors
def list_(ctx: Context) -> None:
    """Show every environment and its value layers (lowest precedence first)."""
    from astrago_deploy.model import environments

    layout = layout_of(ctx)
    for env in environments.discover(layout):
        kind = "customer" if env.customer else "stage"
        layers = " -> ".join(
            layer if (layout.environments_dir / layer).is_dir() else f"{layer} (missing)" for layer in env.layers
        )
        say(f"{env.name:16} {kind:8} {layers}")


@task(
    help={
        "name": "Customer environment name (DNS label)",
        "ip": "External IP address of the site",
        "nfs_server": "NFS server (IP or host name)",
        "nfs_path": "Absolute NFS export path",
        "kube_context": "Kube context deploys must run against (default: NAME)",
        "registry": "Site registry host[:port][/path] for offline installs (sets offline.registry)",
    }
)
@user_errors
def init(
    ctx: Context,
    name: str,
    ip: str,
    nfs_server: str,
    nfs_path: str,
    kube_context: str | None = None,
    registry: str | None = None,
) -> None:
    """Create environments/customers/NAME/values.yaml; refuses bad input or an existing name."""
    from astrago_deploy.model import environments

    path = environments.init_customer(layout_of(ctx), name, ip, nfs_server, nfs_path, kube_context, registry)
    say(f"created {path}")


@task(help={"json": "Print the state as JSON", "fetch": "Fetch origin's stage branches and tags first"})
@user_errors
def status(ctx: Context, json_: bool = False, fetch: bool = False) -> None:
    """Per stage: tip, chart versions, pending and drift commits, last promotion, containment; a chart matrix."""
    import json

    from astrago_deploy.core.git import GitRepo
    from astrago_deploy.model import promotion
    from astrago_deploy.promote import status as promotion_status

    layout = layout_of(ctx)
    repo = GitRepo(layout.root)
    path = promotion.load(layout)
    state = promotion.read_state(repo, path, promotion.refresh(repo, path, fetch))
    if json_:
        say(json.dumps(state.as_json(), indent=2))
        return
    say(promotion_status.render_text(state).rstrip("\n"))


@task(
    help={
        "target": "Stage to promote into (not the first one): e.g. stage, prod",
        "commit": "Promote this commit (it must be on the predecessor's branch) instead of its tip",
        "no_pr": "Fast-forward the target branch directly even where promotion.yaml asks for a pull request",
        "dry_run": "Run every check and gate and print the summary; move nothing",
        "json": "Write the result, gates and summary as JSON to this file",
        "mirror": "Chart mirror for charts a commit locks but this checkout has not vendored",
    }
)
@user_errors
def promote(
    ctx: Context,
    target: str,
    commit: str | None = None,
    no_pr: bool = False,
    dry_run: bool = False,
    json_: str | None = None,
    mirror: str | None = None,
) -> None:
    """Promote the predecessor's tip (or --commit) into TARGET after gates, fast-forward only, tagged."""
    from pathlib import Path

    from astrago_deploy.promote import promoter

    layout = layout_of(ctx)
    options = promoter.PromoteOptions(
        target, commit, not no_pr, dry_run, Path(json_).resolve() if json_ else None, mirror
    )
    result = promoter.Promoter(layout, say).run(options)
    if result.outcome in ("nothing", "tagged"):
        extra = f"; tagged its tip {result.tag} (it had no promotion tag)" if result.tag else ""
        say(f"nothing to promote: {target} already holds {result.candidate[:12]}{extra}")
        return
    assert result.summary is not None and result.gates is not None
    for gate in result.gates.gates:
        say(f"gate {gate.name:14} ok  {gate.summary} ({gate.seconds:.1f}s)")
    say(result.summary.text().rstrip("\n"))
    if result.outcome == "dry-run":
        say(f"dry run: {target} would move {result.old[:12]} -> {result.candidate[:12]}; nothing was changed")
    elif result.outcome == "pull-request":
        say(
            f"opened {result.pull_request} (merging it fast-forwards {target}; run `inv env.promote {target}` "
            "after the merge to tag it)"
        )
    else:
        say(f"promoted {target}: {result.old[:12]} -> {result.candidate[:12]}, tagged {result.tag}")


@task(
    help={
        "at": "Commit to create missing stage branches at (default: HEAD)",
        "dry_run": "Print what would be created; create nothing",
    }
)
@user_errors
def branches(ctx: Context, at: str = "HEAD", dry_run: bool = False) -> None:
    """Create missing stage branches (local and origin) at --at (default HEAD); never moves an existing one."""
    from astrago_deploy.core.git import GitRepo
    from astrago_deploy.model import promotion
    from astrago_deploy.promote import branches as stage_branches

    layout = layout_of(ctx)
    repo = GitRepo(layout.root)
    plans, remote = stage_branches.create(repo, promotion.load(layout), at, dry_run)
    for plan in plans:
        say(plan.describe(remote))
    if dry_run:
        say("dry run: nothing was created")
    elif not any(p.create_local or p.create_origin for p in plans):
        say("every stage branch exists: nothing to create")


ns = Collection("env", list_, init, status, promote, branches, env_backport.backport, env_backport.rollback)
