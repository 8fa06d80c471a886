"""Tasks: install and check the pinned helm, helmfile and kubectl."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors, warn
from astrago_deploy.core.errors import ToolNotInstalledError


@task(
    help={
        "name": "Install only these tools (repeatable); default all",
        "mirror": "Root URL or directory laid out <host>/<path>/ for the archive sources (or TOOLS_MIRROR)",
    },
    iterable=["name"],
)
@user_errors
def install(ctx: Context, name: list[str] | None = None, mirror: str | None = None) -> None:
    """Install the pinned tools into .tools/bin, verifying each sha256."""
    from astrago_deploy.toolchain import pinned as toolchain

    layout = layout_of(ctx)
    installer = toolchain.default_installer(layout, mirror, warn)
    for line in installer.install(name or None):
        say(line)


@task
@user_errors
def check(ctx: Context) -> None:
    """Print each pinned tool's version and whether its binary matches the pin."""
    from astrago_deploy.toolchain import pinned as toolchain

    layout = layout_of(ctx)
    bad = []
    for status in toolchain.check_tools(layout):
        if status.state == "missing":
            line = f"{status.name:9} {status.pinned_version:9} MISSING  ({status.path})"
        elif status.state == "corrupt":
            line = (
                f"{status.name:9} {status.pinned_version:9} CORRUPT  sha256 {status.actual_sha256} "
                f"does not match the pin"
            )
        else:
            verdict = "verified" if status.ok else f"VERSION MISMATCH (reports {status.reported_version})"
            line = f"{status.name:9} {status.reported_version:9} {verdict}"
        say(line)
        if not status.ok:
            bad.append(status.name)
    if bad:
        raise ToolNotInstalledError(f"not as pinned: {', '.join(bad)}; run `inv tools.install` to repair")


ns = Collection("tools", install, check)
