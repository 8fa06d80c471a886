"""The invoke namespace, wiring only (parse options, call the library): one sub-collection per concern.

Each task imports the library it calls inside its own body: `inv` loads every task module to
build this namespace, and at the top of a module the imports of every task would be paid by
every command (`inv render` would load the HTTP stack, GitPython and the schema validator;
about half of a warm no-op render's wall time). tests/test_layout_imports.py keeps it so.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection

from astrago_deploy.tasks import bundle, charts, deploy, env, images, patches, render, tools


def build_namespace(root: Path) -> Collection:
    ns = Collection()
    ns.add_collection(tools.ns)
    ns.add_collection(charts.ns)
    ns.add_collection(env.ns)
    ns.add_collection(patches.ns)
    ns.add_collection(images.ns)
    ns.add_collection(bundle.ns)
    ns.add_task(render.render)
    ns.add_task(render.diff)
    ns.add_task(render.validate)
    ns.add_task(deploy.deploy)
    ns.add_task(deploy.destroy)
    ns.configure({"astrago": {"root": str(root)}})
    return ns
