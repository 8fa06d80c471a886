"""Diffs between renders: another git ref against the working tree, per environment and resource.

The other ref is rendered in a temporary git worktree (the working tree is never touched)
with the same pinned tools; its vendored charts are copied from this checkout when their
content digest matches the lock, and vendored otherwise. The charts lock is held shared
throughout, so a sync cannot change the charts between the two renders. Secret values appear as
`sha256:` digests: a changed value shows as a changed digest, the value itself never.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import yaml
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.render.generated import NORMALIZED
from astrago_deploy.render.manifests import digest_secret, read_documents, resource_id
from astrago_deploy.render.renderer import EnvironmentRender, Renderer
from astrago_deploy.toolchain.pinned import PinnedTools


@dataclass
class ResourceChange:
    release: str
    resource: str  # Kind/namespace/name
    change: str  # added | removed | changed
    diff: str = ""


@dataclass
class EnvironmentDiff:
    env: str
    changes: list[ResourceChange] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0}
        for change in self.changes:
            out[change.change] += 1
        return out


def load_render(folder: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """resource id -> (release, document) for every release file of a rendered environment."""
    resources: dict[str, tuple[str, dict[str, Any]]] = {}
    if not folder.is_dir():
        return resources
    for path in sorted(folder.glob("*.yaml")):
        release = path.stem
        for doc in read_documents(path):
            resources[f"{release}:{resource_id(doc)}"] = (release, doc)
    return resources


def _text(doc: dict[str, Any]) -> list[str]:
    # Renders hold digests already; a render made elsewhere (or by hand) may not.
    return yaml.dump(digest_secret(doc, keep=(NORMALIZED,)), sort_keys=True).splitlines(keepends=True)


def diff_folders(env: str, before: Path, after: Path) -> EnvironmentDiff:
    old, new = load_render(before), load_render(after)
    result = EnvironmentDiff(env)
    for key in sorted(set(old) | set(new)):
        release, resource = key.split(":", 1)
        if key not in old:
            result.changes.append(
                ResourceChange(release, resource, "added", "".join(f"+{line}" for line in _text(new[key][1])))
            )
        elif key not in new:
            result.changes.append(
                ResourceChange(release, resource, "removed", "".join(f"-{line}" for line in _text(old[key][1])))
            )
        else:
            a, b = _text(old[key][1]), _text(new[key][1])
            if a != b:
                text = "".join(difflib.unified_diff(a, b, f"a/{env}/{resource}", f"b/{env}/{resource}", n=3))
                result.changes.append(ResourceChange(release, resource, "changed", text))
    return result


def prepare_vendored(source: RepoLayout, target: RepoLayout, fetcher: Fetcher) -> None:
    """Give the worktree `target` its vendored charts: copied when this checkout has them
    with the locked content, vendored (through the mirror, if any) otherwise."""
    lock = VersionsLock.load(target.lock_file)
    here = ChartVendor(source, fetcher)
    missing = []
    # Shared: a sync in this checkout must not swap a tree between its digest check and its copy.
    with charts_lock(source).shared("diff"):
        for chart in lock.charts():
            dest = target.chart_dir(chart.name, chart.version)
            if dest.is_dir():
                continue
            if here.is_current(chart):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(source.chart_dir(chart.name, chart.version), dest, symlinks=True)
            else:
                missing.append(chart.name)
    if missing:
        ChartVendor(target, fetcher).sync(missing)


def render_tree(tree: RepoLayout, tools: PinnedTools, out_root: Path, env_names: list[str]) -> list[EnvironmentRender]:
    known = {e.name for e in environments.discover(tree)}
    envs = [environments.get(tree, name) for name in env_names if name in known]
    return Renderer(tree, tools, out_root).render(envs)


def compare(layout: RepoLayout, base: str, env_names: list[str], mirror: str | None) -> list[EnvironmentDiff]:
    """Render `base` (in a temporary worktree) and the working tree; diff each environment."""
    repo = GitRepo(layout.root)
    commit = repo.resolve(base)
    names = env_names or [e.name for e in environments.discover(layout)]
    current = [environments.get(layout, name).name for name in env_names] if env_names else names
    tools = PinnedTools(layout)
    base_out = layout.cache_dir / "renders" / commit
    # One shared hold over both sides: the base reuses this checkout's chart trees, and both
    # renders must see the same ones.
    with (
        charts_lock(layout).shared("diff"),
        repo.temp_worktree(commit, layout.cache_dir / "worktrees", f"render {base}") as tree_path,
    ):
        Renderer(layout, tools, layout.rendered_dir).render([environments.get(layout, n) for n in current])
        tree = RepoLayout.at(tree_path)
        prepare_vendored(layout, tree, Fetcher.for_mirror(mirror))
        render_tree(tree, tools, base_out, names)
    return [diff_folders(name, base_out / name, layout.rendered_dir / name) for name in names]
