"""Checking the repository's patches against fresh, unpatched renders (inv patches.check).

Each environment is rendered once with patches switched off (the post-renderer's
`ASTRAGO_PATCHES=off`), cached under .cache/unpatched; every patch is then tried on its own
against what it targets. The same results feed the upgrade report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from astrago_deploy.core.errors import InputError
from astrago_deploy.core.layout import RepoLayout
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
    results: list[patching.PatchStatus] = []
    for env in envs:
        for release in wanted:
            manifests_file = out_root / env.name / f"{release}.yaml"
            manifests = manifests_file.read_text(encoding="utf-8") if manifests_file.is_file() else ""
            results += patching.check(layout.patches_dir, release, env.name, manifests, kustomizer)
    return results


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
