"""The invoke namespace, wiring only (parse options, call the library): one sub-collection per concern."""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection

from astrago_deploy.tasks import charts, deploy, env, patches, render, tools


def build_namespace(root: Path) -> Collection:
    ns = Collection()
    ns.add_collection(tools.ns)
    ns.add_collection(charts.ns)
    ns.add_collection(env.ns)
    ns.add_collection(patches.ns)
    ns.add_task(render.render)
    ns.add_task(render.diff)
    ns.add_task(render.validate)
    ns.add_task(deploy.deploy)
    ns.add_task(deploy.destroy)
    ns.configure({"astrago": {"root": str(root)}})
    return ns
