"""Tasks: check the Kustomize patches under patches/ and scaffold new ones."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors
from astrago_deploy.core.errors import AstragoError


@task(
    iterable=["env"],
    help={
        "release": "Only this release's patches (default: every patched release)",
        "env": "Environment to check in (repeatable; default all)",
    },
)
@user_errors
def check(ctx: Context, release: str | None = None, env: list[str] | None = None) -> None:
    """Per patch: file, target, applied / stale / failed and why; non-zero if any is not applied."""
    from astrago_deploy.patches import check as patch_check

    layout = layout_of(ctx)
    results = patch_check.check_patches(layout, [release] if release else [], env or [])
    if not results:
        say("no patches")
        return
    for item in patch_check.grouped(results):
        say(f"{item.status:8} {item.patch}  ->  {item.target}: {item.reason} [{', '.join(item.envs)}]")
    bad = [r for r in results if not r.ok]
    if bad:
        raise AstragoError(f"{len({(r.patch, r.status) for r in bad})} patch(es) stale or failed")


@task(
    iterable=["env"],
    help={
        "release": "Release whose rendered resource the patch targets",
        "kind": "Resource kind, e.g. Deployment",
        "name": "Resource name as rendered",
        "env": "Look the resource up in this environment (repeatable)",
        "only_env": "Put the patch under patches/<release>/<env>/ (one environment only)",
    },
)
@user_errors
def new(
    ctx: Context, release: str, kind: str, name: str, env: list[str] | None = None, only_env: str | None = None
) -> None:
    """Scaffold a strategic-merge patch for a resource that exists in the current render."""
    from astrago_deploy.patches import check as patch_check
    from astrago_deploy.patches import kustomize as patching

    layout = layout_of(ctx)
    lookup = env or ([only_env] if only_env else [])
    resource = patch_check.find_resource(layout, release, kind, name, lookup)
    for path in patching.scaffold_patch(layout.patches_dir, release, resource, only_env):
        say(f"wrote {path.relative_to(layout.root)}")
    say("fill in the patch, then run `inv patches.check` (an empty patch is reported as stale)")


ns = Collection("patches", check, new)
