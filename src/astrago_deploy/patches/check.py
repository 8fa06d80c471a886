"""Checking the repository's patches against fresh, unpatched renders (inv patches.check).

Each environment is rendered once with patches switched off (the post-renderer's
`ASTRAGO_PATCHES=off`), cached under .cache/unpatched; every patch is then built by kustomize
on its own over the release it patches (see `kustomize.check`), one release and environment
per job, as many jobs at once as there are cores. The same results feed the upgrade report.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.core.errors import InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.parallel import run_jobs
from astrago_deploy.model import environments
from astrago_deploy.model.releases import declared_releases
from astrago_deploy.patches import kustomize as patching
from astrago_deploy.render.manifests import read_documents, resource_id
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools


@dataclass(frozen=True)
class GroupedStatus:
    """One patch's result, with the environments it holds for."""

    patch: str
    target: str
    status: str
    reason: str
    release: str
    envs: tuple[str, ...]


def unpatched_renderer(layout: RepoLayout, tools: PinnedTools) -> Renderer:
    renderer = Renderer(layout, tools, layout.cache_dir / "unpatched")
    renderer.patches = False
    return renderer


def check_patches(
    layout: RepoLayout, releases: Sequence[str] = (), env_names: Sequence[str] = (), tools: PinnedTools | None = None
) -> list[patching.PatchStatus]:
    # An upgrade checks a worktree with the checkout's tools: the worktree has no .tools of its own.
    tools = tools or PinnedTools(layout)
    known = {r.name for r in declared_releases(layout, tools)}
    wanted = list(releases) or patching.patched_releases(layout.patches_dir)
    for name in wanted:
        if name not in known:
            raise InputError(f"there is no release {name!r} (patches/{name} would patch nothing)")
    envs = environments.select(layout, list(env_names) or None)
    out_root = layout.cache_dir / "unpatched"
    unpatched_renderer(layout, tools).render(envs)
    kustomizer = patching.Kustomizer(tools.path("kubectl"), tools.env())
    jobs = [
        (
            f"{release} ({env.name})",
            functools.partial(_check_release, layout.patches_dir, release, env.name, out_root, kustomizer),
        )
        for env in envs
        for release in wanted
    ]
    # Each job is a few `kubectl kustomize` runs, light next to the helm renders before them.
    checked, failures = run_jobs(jobs, min(len(jobs), os.cpu_count() or 1), "patches")
    if failures:
        raise failures[0][1]
    return [status for statuses in checked for status in statuses]


def _check_release(
    patches_dir: Path, release: str, env: str, out_root: Path, kustomizer: patching.Kustomizer
) -> list[patching.PatchStatus]:
    manifests_file = out_root / env / f"{release}.yaml"
    manifests = manifests_file.read_text(encoding="utf-8") if manifests_file.is_file() else ""
    return patching.check(patches_dir, release, env, manifests, kustomizer)


def grouped(results: Sequence[patching.PatchStatus]) -> list[GroupedStatus]:
    """Identical results across environments on one line, in first-seen order."""
    order: dict[tuple[str, str, str, str, str], list[str]] = {}
    for r in results:
        order.setdefault((r.release, r.patch, r.target, r.status, r.reason), []).append(r.env)
    return [
        GroupedStatus(patch, target, status, reason, release, tuple(envs))
        for (release, patch, target, status, reason), envs in order.items()
    ]


def find_resource(
    layout: RepoLayout, release: str, kind: str, name: str, env_names: Sequence[str], tools: PinnedTools | None = None
) -> dict[str, object]:
    """The resource as the release renders it (without patches), for scaffolding a patch."""
    tools = tools or PinnedTools(layout)
    if release not in {r.name for r in declared_releases(layout, tools)}:
        raise InputError(f"there is no release {release!r}")
    envs = environments.select(layout, list(env_names) or None)
    unpatched_renderer(layout, tools).render(envs)
    same_kind: set[str] = set()
    for env in envs:
        path = layout.cache_dir / "unpatched" / env.name / f"{release}.yaml"
        for doc in read_documents(path) if path.is_file() else []:
            if doc.get("kind") == kind:
                if (doc.get("metadata") or {}).get("name") == name:
                    return doc
                same_kind.add(resource_id(doc))
    hint = f"; {kind} resources of {release}: {', '.join(sorted(same_kind))}" if same_kind else ""
    raise InputError(f"release {release} renders no {kind} named {name!r}{hint}")
