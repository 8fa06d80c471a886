"""Tasks: the image inventory of environments (what a cluster pulls, why, and its site reference)."""

from __future__ import annotations

import json

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors, warn
from astrago_deploy.core.errors import AstragoError


@task(
    name="list",
    iterable=["env"],
    help={
        "env": "Environment (repeatable); default all",
        "all": "Every environment (the default when no --env is given)",
        "json": "Print {environment, images: [{image, site, why}]} (a list for several environments)",
        "why": "Under each image, every place that pulls it (release, resource, field)",
    },
)
@user_errors
def list_(
    ctx: Context, env: list[str] | None = None, all_: bool = False, json_: bool = False, why: bool = False
) -> None:
    """List every image an environment pulls, fully qualified, with its site reference when offline."""
    from astrago_deploy.core.diagnostics import format_diagnostic
    from astrago_deploy.images import inventory
    from astrago_deploy.render.renderer import select_environments

    layout = layout_of(ctx)
    envs = select_environments(layout, env or [], all_)
    found = inventory.inventories(layout, envs, warn)
    for item in found:
        for finding in item.findings:
            warn(format_diagnostic(finding))
    errors = sum(len(item.errors) for item in found)
    if errors:
        raise AstragoError(f"images.list: {errors} error(s) in {', '.join(i.environment for i in found if i.errors)}")
    if json_:
        data = [item.as_json() for item in found]
        say(json.dumps(data[0] if len(data) == 1 else data, indent=2))
        return
    for item in found:
        if len(found) > 1:
            say(f"=== {item.environment}" + (f" (through {item.registry})" if item.registry else ""))
        for image in item.images:
            say(f"{image.image} -> {image.site}" if image.site else image.image)
            if why:
                for place in image.why:
                    say(f"    {place}")


ns = Collection("images", list_)
