"""Diffs between renders: another git ref against the working tree, per environment and resource.

The other ref is rendered in a temporary git worktree (the working tree is never touched)
with the same pinned tools; its vendored charts are copied from this checkout when their
content digest matches the lock, and vendored otherwise. Secret data never appears in a diff.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.digests import tree_digest
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.render.manifests import load_documents, resource_id
from astrago_deploy.render.renderer import EnvironmentRender, Renderer
from astrago_deploy.toolchain.pinned import PinnedTools

REDACTED = "<redacted>"


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


def redact(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("kind") != "Secret":
        return doc
    copy = dict(doc)
    for section in ("data", "stringData"):
        if isinstance(copy.get(section), dict):
            copy[section] = {key: REDACTED for key in copy[section]}
    return copy


def load_render(folder: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """resource id -> (release, document) for every release file of a rendered environment."""
    resources: dict[str, tuple[str, dict[str, Any]]] = {}
    if not folder.is_dir():
        return resources
    for path in sorted(folder.glob("*.yaml")):
        release = path.stem
        for doc in load_documents(path.read_text()):
            resources[f"{release}:{resource_id(doc)}"] = (release, doc)
    return resources


def _text(doc: dict[str, Any]) -> list[str]:
    return yaml.safe_dump(redact(doc), sort_keys=True, width=1 << 20).splitlines(keepends=True)


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
    missing = []
    for chart in lock.charts():
        have = source.chart_dir(chart.name, chart.version)
        dest = target.chart_dir(chart.name, chart.version)
        if dest.is_dir():
            continue
        if have.is_dir() and chart.tree and tree_digest(have) == chart.tree:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(have, dest, symlinks=True)
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
    Renderer(layout, tools, layout.rendered_dir).render([environments.get(layout, n) for n in current])
    base_out = layout.cache_dir / "renders" / commit
    with repo.temp_worktree(commit, layout.cache_dir / "worktrees", f"render {base}") as tree_path:
        tree = RepoLayout.at(tree_path)
        prepare_vendored(layout, tree, Fetcher.for_mirror(mirror))
        render_tree(tree, tools, base_out, names)
    return [diff_folders(name, base_out / name, layout.rendered_dir / name) for name in names]
