"""What a chart bump changes: the analysis and the report reviewers read.

Compares the old and new vendored chart trees (value defaults, CRDs), the renders of every
environment before and after (images, resources, rendered diffs), our overrides, the
patches' status and the upstream changelog, and writes one report as Markdown (the pull
request body, kept under GitHub's size limit) and JSON (the same content).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.charts.index import ChartVersion, bump_kind, newest_first, parse_version
from astrago_deploy.core import yaml
from astrago_deploy.core.diagnostics import Diagnostic, format_diagnostic, shown_path
from astrago_deploy.core.errors import FileAccessError, ImageReferenceError
from astrago_deploy.images.reference import parse_image, site_reference
from astrago_deploy.model.environments import group_equal
from astrago_deploy.render.diff import EnvironmentDiff
from astrago_deploy.render.generated import NORMALIZED
from astrago_deploy.render.manifests import crd_files, digest_secret, read_documents

GITHUB_BODY_LIMIT = 65_536
BODY_BUDGET = 60_000  # leave room for the trailer and GitHub's own accounting
_MISSING = object()


# --- values ------------------------------------------------------------------------------


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf key paths (`a.b.c`) to values; empty mappings count as leaves."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node} if prefix else {}


@dataclass
class ValuesDiff:
    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": {k: {"old": a, "new": b} for k, (a, b) in self.changed.items()},
        }


def diff_values(old: dict[str, Any], new: dict[str, Any]) -> ValuesDiff:
    a, b = flatten(old), flatten(new)
    result = ValuesDiff()
    for key in sorted(set(a) | set(b)):
        if key not in a:
            # A leaf that replaced an empty mapping or a scalar parent is still "added".
            result.added[key] = b[key]
        elif key not in b:
            result.removed[key] = a[key]
        elif a[key] != b[key]:
            result.changed[key] = (a[key], b[key])
    return result


@dataclass(frozen=True)
class AffectedOverride:
    file: str
    key: str
    change: str  # removed | changed
    detail: str


def _touches(key: str, paths: dict[str, Any]) -> str | None:
    """The changed/removed default path our key sets, or lies under, or lies above."""
    for path in paths:
        if key == path or path.startswith(key + ".") or key.startswith(path + "."):
            return path
    return None


def affected_overrides(overrides: dict[str, dict[str, Any]], diff: ValuesDiff) -> list[AffectedOverride]:
    """Which of our override files set keys whose defaults were removed or changed."""
    found = []
    for file, values in sorted(overrides.items()):
        for key in sorted(flatten(values)):
            if (path := _touches(key, diff.removed)) is not None:
                found.append(AffectedOverride(file, key, "removed", f"default {path} no longer exists"))
            elif (path := _touches(key, diff.changed)) is not None:
                old, new = diff.changed[path]
                found.append(AffectedOverride(file, key, "changed", f"default {path}: {_short(old)} -> {_short(new)}"))
    return found


class UnreadableOverride(Exception):
    """An override file whose keys cannot be checked; the report shows `diagnostic`."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(format_diagnostic(diagnostic))
        self.diagnostic = diagnostic


def load_override(path: Path, shown: str = "") -> dict[str, Any]:
    """Values a file sets; `.gotmpl` files are read with template expressions blanked out.

    A file that cannot be read raises UnreadableOverride: the report must say its keys went
    unchecked rather than treat it as setting nothing.
    """
    shown = shown or str(path)
    try:
        text = yaml.read_text(path)
    except FileAccessError as exc:
        raise UnreadableOverride(Diagnostic(shown, exc.line, "", "error", exc.reason)) from exc
    if path.suffix == ".gotmpl":
        # Directive lines become empty lines, so a YAML error's line number is the file's.
        lines = ["" if re.fullmatch(r"\s*\{\{-?.*-?\}\}\s*", line) else line for line in text.splitlines()]
        text = re.sub(r"\{\{.*?\}\}", "TEMPLATED", "\n".join(lines))
    try:
        data = yaml.load(text, shown)
    except yaml.YamlError as exc:
        raise UnreadableOverride(
            Diagnostic(
                shown, exc.line, "", "error", f"not valid YAML: {exc.reason}", "fix the file; its keys were not checked"
            )
        ) from exc
    return data if isinstance(data, dict) else {}


def read_overrides(paths: list[Path], root: Path) -> tuple[dict[str, dict[str, Any]], list[Diagnostic]]:
    """The values each override file sets (by path shown), and the files that could not be read."""
    values: dict[str, dict[str, Any]] = {}
    unreadable: list[Diagnostic] = []
    for path in paths:
        shown = shown_path(path, root)
        try:
            values[shown] = load_override(path, shown)
        except UnreadableOverride as exc:
            unreadable.append(exc.diagnostic)
    return values, unreadable


# --- CRDs --------------------------------------------------------------------------------


def crds_of_tree(chart_dir: Path, unreadable: list[Diagnostic]) -> dict[str, dict[str, Any]]:
    """CustomResourceDefinitions shipped in `crds/` folders (chart and subcharts), by name.

    A file that cannot be read is added to `unreadable`: its CRDs are missing from the
    comparison, and the report says so rather than under-rating the bump.
    """
    found = {}
    for path in crd_files(chart_dir):
        # Named from charts/external/ so the report reads the same from any checkout.
        label = path.relative_to(chart_dir.parent.parent.parent) if len(chart_dir.parents) > 2 else path
        try:
            docs = [doc for doc in yaml.load_all(yaml.read_text(path), label) if isinstance(doc, dict)]
        except yaml.YamlError as exc:
            unreadable.append(Diagnostic(str(label), exc.line, "", "error", f"not valid YAML: {exc.reason}"))
            continue
        except FileAccessError as exc:
            unreadable.append(Diagnostic(str(label), exc.line, "", "error", exc.reason))
            continue
        for doc in docs:
            if doc.get("kind") == "CustomResourceDefinition":
                found[_crd_name(doc, path.name)] = doc | {"_source": "crds/"}
    return found


def crd_folders(chart_dir: Path) -> list[str]:
    """The `crds/` folders of the chart and its subcharts that hold CRD files, named from the
    checkout's root (`charts/external/NAME-VERSION/charts/crds/crds/` for kube-prometheus-stack):
    what `kubectl apply --server-side` must be given on an upgrade, since helm never upgrades them."""
    root = chart_dir.parent.parent.parent if len(chart_dir.parents) > 2 else chart_dir.parent
    folders = dict.fromkeys(path.parent for path in crd_files(chart_dir))
    return [f"{folder.relative_to(root).as_posix()}/" for folder in folders]


def crds_of_render(folder: Path, release: str) -> dict[str, dict[str, Any]]:
    path = folder / f"{release}.yaml"
    if not path.is_file():
        return {}
    return {
        _crd_name(d, path.name): d | {"_source": "templates"}
        for d in read_documents(path)
        if d.get("kind") == "CustomResourceDefinition"
    }


def _crd_name(doc: dict[str, Any], file: str) -> str:
    # A CRD without a name is invalid, yet it must show in the report rather than crash it.
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return str(name) if name else f"(unnamed CRD in {file})"


def _schema_fields(schema: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if not isinstance(schema, dict):
        return out
    for name, child in (schema.get("properties") or {}).items():
        out.add(f"{prefix}{name}")
        out |= _schema_fields(child, f"{prefix}{name}.")
    if isinstance(schema.get("items"), dict):
        out |= _schema_fields(schema["items"], f"{prefix}[].")
    return out


def _versions(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(v.get("name")): v for v in (crd.get("spec") or {}).get("versions") or []}


def diff_crds(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "compared": sorted(set(old) | set(new)),
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": {},
    }
    for name in sorted(set(old) & set(new)):
        a, b = _versions(old[name]), _versions(new[name])
        change: dict[str, Any] = {}
        served = (
            sorted(k for k, v in a.items() if v.get("served")),
            sorted(k for k, v in b.items() if v.get("served")),
        )
        storage = ([k for k, v in a.items() if v.get("storage")], [k for k, v in b.items() if v.get("storage")])
        if served[0] != served[1]:
            change["served"] = {"old": served[0], "new": served[1]}
        if storage[0] != storage[1]:
            change["storage"] = {"old": storage[0], "new": storage[1]}
        for version in sorted(set(a) & set(b)):
            fa = _schema_fields((a[version].get("schema") or {}).get("openAPIV3Schema"))
            fb = _schema_fields((b[version].get("schema") or {}).get("openAPIV3Schema"))
            if fa != fb:
                change.setdefault("fields", {})[version] = {"added": sorted(fb - fa), "removed": sorted(fa - fb)}
        if not change and _strip(old[name]) != _strip(new[name]):
            change["other"] = "schema details changed (validation, descriptions or printer columns)"
        if change:
            change["source"] = new[name].get("_source", "")
            result["changed"][name] = change
    return result


def _strip(crd: dict[str, Any]) -> Any:
    return {k: v for k, v in crd.items() if k not in ("_source", "metadata")}


# --- images ------------------------------------------------------------------------------


def _repo_tag(image: str) -> tuple[str, str]:
    name, _, digest = image.partition("@")
    head, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:
        return head, tag + (f"@{digest}" if digest else "")
    return name, digest


def diff_images(before: set[str], after: set[str]) -> dict[str, Any]:
    old = {_repo_tag(i)[0]: i for i in before - after}
    new = {_repo_tag(i)[0]: i for i in after - before}
    retagged = {repo: {"old": old[repo], "new": new[repo]} for repo in sorted(set(old) & set(new))}
    return {
        "added": sorted(new[r] for r in set(new) - set(old)),
        "removed": sorted(old[r] for r in set(old) - set(new)),
        "retagged": retagged,
    }


def through_registry(image: str, registry: str) -> str:
    """`image` as an environment with `offline.registry` pulls it: `images.reference.site_reference`
    (the upstream host dropped, the path kept), the rule the render's offline rewrite follows."""
    try:
        return str(site_reference(parse_image(image), registry))
    except ImageReferenceError:
        return f"{registry}/{re.sub(r'^([^/]*[.:][^/]*|localhost)/', '', image)}"


def diff_through_registry(diff: dict[str, Any], registry: str) -> dict[str, Any]:
    """An image diff as an environment pulling through `registry` would see it."""

    def moved(image: str) -> str:
        return through_registry(image, registry)

    return {
        "added": sorted(moved(i) for i in diff["added"]),
        "removed": sorted(moved(i) for i in diff["removed"]),
        "retagged": {
            moved(repo): {"old": moved(pair["old"]), "new": moved(pair["new"])}
            for repo, pair in sorted(diff["retagged"].items())
        },
    }


@dataclass
class ImageGroup:
    """Environments whose image changes are the same: `envs` exactly these, and the
    environments in `through_registry` these pulled through their `offline.registry`."""

    envs: list[str]
    changes: dict[str, Any]
    through_registry: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [*self.envs, *self.through_registry]

    def as_json(self) -> dict[str, Any]:
        return {"envs": self.names, "through_registry": self.through_registry, **self.changes}


def group_images(images: dict[str, dict[str, Any]], offline_registries: dict[str, str]) -> list[ImageGroup]:
    """Environments grouped by identical image changes, so a list repeated for each of them is
    shown once. An environment that pulls through a site registry joins the group whose changes,
    rewritten to its registry, are exactly its own."""
    groups = [ImageGroup(envs, changes) for envs, changes in group_equal(images)]
    upstream = [g for g in groups if not any(env in offline_registries for env in g.envs)]
    kept = []
    for group in groups:
        if group in upstream:
            kept.append(group)
            continue
        for env in list(group.envs):
            registry = offline_registries.get(env)
            if registry is None:
                continue
            same = (u for u in upstream if diff_through_registry(u.changes, registry) == group.changes)
            if (match := next(same, None)) is not None:
                match.through_registry[env] = registry
                group.envs.remove(env)
        if group.envs:
            kept.append(group)
    return kept


# --- resources ---------------------------------------------------------------------------

# Labels every chart bump changes on every resource it renders (and on the selectors and pod
# templates that repeat them): a resource whose only change is these says nothing about the bump.
# `chart: NAME-VERSION` is Helm's older spelling of helm.sh/chart, still on every resource of
# kube-prometheus-stack; a `chart` label holding anything else is not discounted.
VERSION_LABELS = ("helm.sh/chart", "app.kubernetes.io/version", "chart")
_LABEL_MAPS = frozenset({"labels", "matchLabels", "selector"})
_NAME_VERSION = re.compile(r"[A-Za-z0-9._-]+-v?\d+\.\d+\.\d+\S*")


def _is_version_label(name: Any, value: Any) -> bool:
    if name == "chart":
        return isinstance(value, str) and _NAME_VERSION.fullmatch(value) is not None
    return name in VERSION_LABELS


def without_version_labels(node: Any, key: str = "") -> Any:
    """`node` with the version labels dropped from every label map and selector in it."""
    if isinstance(node, dict):
        return {
            k: without_version_labels(v, str(k))
            for k, v in node.items()
            if not (key in _LABEL_MAPS and _is_version_label(k, v))
        }
    if isinstance(node, list):
        return [without_version_labels(item) for item in node]
    return node


def split_version_label_changes(
    diff: EnvironmentDiff, old: dict[str, tuple[str, dict[str, Any]]], new: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[EnvironmentDiff, EnvironmentDiff]:
    """`diff` split into real changes and changes of version labels only.

    `old` and `new` are the renders `diff` was made from (`release:resource` -> (release,
    document)); Secrets are compared as digests, as the diff shows them.
    """
    real, labels_only = EnvironmentDiff(diff.env), EnvironmentDiff(diff.env)
    for change in diff.changes:
        key = f"{change.release}:{change.resource}"
        if change.change == "changed" and key in old and key in new:
            a = without_version_labels(digest_secret(old[key][1], keep=(NORMALIZED,)))
            b = without_version_labels(digest_secret(new[key][1], keep=(NORMALIZED,)))
            if a == b:
                labels_only.changes.append(change)
                continue
        real.changes.append(change)
    return real, labels_only


def _resource_list(diff: EnvironmentDiff) -> list[tuple[str, str, str]]:
    return [(c.change, c.release, c.resource) for c in diff.changes]


def _diff_body(diff: EnvironmentDiff) -> str:
    # The `---`/`+++` lines name the environment; the `#` line names the resource already,
    # and without them environments with the same changes have the same text.
    return "\n".join(
        f"# {c.change} {c.release}: {c.resource}\n"
        + "".join(line for line in c.diff.splitlines(keepends=True) if not line.startswith(("--- a/", "+++ b/")))
        for c in diff.changes
    )


# --- changelog ---------------------------------------------------------------------------


def changelog(versions: list[ChartVersion], old: str, new: str) -> list[dict[str, Any]]:
    """Entries of every version in (old, new], newest first, security fixes first within each."""
    low, high = parse_version(old), parse_version(new)
    out = []
    for entry in versions:
        v = entry.semver
        if v is None or low is None or high is None or not (low < v <= high):
            continue
        changes = []
        raw = entry.annotations.get("artifacthub.io/changes", "")
        if raw:
            try:
                parsed = yaml.load(raw, f"{entry.name} {entry.version} artifacthub.io/changes")
            except yaml.YamlError:
                parsed = [raw]  # shown as written
            for item in parsed if isinstance(parsed, list) else [parsed]:
                if isinstance(item, dict):
                    changes.append(
                        {
                            "kind": str(item.get("kind", "changed")),
                            "description": str(item.get("description", "")),
                            "links": [
                                str(link.get("url", "")) for link in item.get("links") or [] if isinstance(link, dict)
                            ],
                        }
                    )
                else:
                    changes.append({"kind": "changed", "description": str(item), "links": []})
        changes.sort(key=lambda c: (c["kind"] != "security",))
        out.append(
            {
                "version": entry.version,
                "app_version": entry.app_version,
                "changes": changes,
                "links": release_links(entry),
            }
        )
    return newest_first(out, lambda e: str(e["version"]), prereleases=True)


def release_links(entry: ChartVersion) -> list[str]:
    """Release notes the chart's own metadata names for this very version, or none.

    A guessed tag on a listed source is wrong more often than not: kube-prometheus-stack lists
    the kube-prometheus project, whose tag `61.9.0` is another project's release, and harbor's
    project tags its own versions (v2.x), not the chart's. So a link comes only from
    - an `artifacthub.io/links` entry named as release notes or a changelog;
    - the GitHub release the chart archive itself is attached to (in a multi-chart repository
      that is the chart's `<chart>-<version>` tag, e.g. prometheus-community/helm-charts);
    - the chart's own GitHub repository (named like the chart) when the chart is versioned
      with its application (version == appVersion), so the tag names this chart version.
    """
    links: list[str] = []
    raw = entry.annotations.get("artifacthub.io/links", "")
    try:
        parsed = yaml.load(raw, f"{entry.name} {entry.version} artifacthub.io/links") if raw else []
    except yaml.YamlError:
        parsed = []  # the links below still apply
    for item in parsed if isinstance(parsed, list) else []:
        if isinstance(item, dict) and re.search(r"release|change", str(item.get("name", "")), re.IGNORECASE):
            links.append(str(item.get("url")))
    for url in entry.urls:
        if m := re.match(r"(https://github\.com/[^/]+/[^/]+)/releases/download/([^/]+)/[^/]+$", url):
            links.append(f"{m.group(1)}/releases/tag/{m.group(2)}")
    if entry.version == entry.app_version:
        for source in entry.raw.get("sources") or []:
            m = re.match(r"(https://github\.com/[^/]+/([^/]+?))(?:\.git)?/?$", str(source))
            if m and m.group(2).lower() == entry.name.lower():
                links.append(f"{m.group(1)}/releases/tag/{entry.version}")
    return list(dict.fromkeys(links))


# --- the report --------------------------------------------------------------------------


@dataclass
class UpgradeReport:
    chart: str
    release_names: list[str]
    old: str
    new: str
    old_app: str
    new_app: str
    values: ValuesDiff
    overrides: list[AffectedOverride]
    crds: dict[str, Any]
    images: dict[str, dict[str, Any]]  # env -> diff
    resources: dict[str, EnvironmentDiff]  # env -> real changes (version-label-only ones apart)
    patches: list[dict[str, Any]]
    changelog: list[dict[str, Any]]
    render_notes: list[str] = field(default_factory=list)
    # Chart files the analysis could not read ("not valid YAML: ..."): what they hold is
    # missing from the comparison, so the report names them and rates the bump high.
    unreadable: list[Diagnostic] = field(default_factory=list)
    # override files that could not be read: their keys went unchecked
    unreadable_overrides: list[Diagnostic] = field(default_factory=list)
    # env -> offline.registry, for environments that pull through a site registry
    offline_registries: dict[str, str] = field(default_factory=dict)
    # env -> resources whose only change is the chart's version labels (counted, not shown)
    version_labels_only: dict[str, EnvironmentDiff] = field(default_factory=dict)
    # the new version's folders of CRD files (`crd_folders`), for the apply command the report shows
    crd_folders: list[str] = field(default_factory=list)

    @property
    def bump(self) -> str:
        return bump_kind(self.old, self.new)

    @property
    def app_bump(self) -> str:
        return bump_kind(self.old_app, self.new_app) if self.old_app and self.new_app else "unknown"

    @property
    def crd_changed(self) -> bool:
        return bool(self.crds["added"] or self.crds["removed"] or self.crds["changed"])

    def observed(self) -> list[str]:
        """Where what the bump does exceeds what its semver kind declares."""
        flags = []
        minor_or_less = self.bump in ("patch", "minor", "prerelease", "none")
        if self.values.removed and minor_or_less:
            flags.append(f"a {self.bump}-level bump removes {len(self.values.removed)} default value(s)")
        if self.crd_changed and minor_or_less:
            flags.append(f"a {self.bump}-level bump changes CRDs")
        if self.bump == "patch" and self.app_bump in ("major", "minor"):
            flags.append(f"a patch-level chart bump carries a {self.app_bump} appVersion bump")
        removed_crds = self.crds["removed"] or [
            n for n, c in self.crds["changed"].items() if any(f["removed"] for f in c.get("fields", {}).values())
        ]
        if removed_crds:
            flags.append(f"CRD fields or CRDs removed: {', '.join(removed_crds)}")
        return flags

    @property
    def risk(self) -> str:
        failing = [p for p in self.patches if p["status"] != "applied"]
        if (
            self.bump == "major"
            or self.crd_changed
            or failing
            or self.render_notes
            or self.unreadable
            or any(o.change == "removed" for o in self.overrides)
            or self.unreadable_overrides
        ):
            return "high"
        if self.bump == "minor" or self.overrides or self.values.removed or self.observed():
            return "medium"
        return "low"

    def notable(self) -> list[str]:
        lines = [
            f"{self.chart} {self.old} -> {self.new} ({self.bump}; appVersion {self.old_app or '?'} -> "
            f"{self.new_app or '?'}, {self.app_bump})"
        ]
        lines += [f"observed: {flag}" for flag in self.observed()]
        if self.values.added or self.values.removed or self.values.changed:
            lines.append(
                f"values: {len(self.values.added)} added, {len(self.values.removed)} removed, "
                f"{len(self.values.changed)} changed defaults"
            )
        if self.overrides:
            lines.append(f"{len(self.overrides)} of our overrides touch removed or changed defaults")
        if self.unreadable_overrides:
            lines.append(
                f"{len(self.unreadable_overrides)} override file(s) could not be read: their keys went unchecked"
            )
        if self.crd_changed:
            lines.append(
                f"CRDs: {len(self.crds['added'])} added, {len(self.crds['removed'])} removed, "
                f"{len(self.crds['changed'])} changed"
            )
        changed_images = self.mirror_list()
        if changed_images:
            lines.append(f"images: {len(changed_images)} new or retagged (mirror them for air-gapped sites)")
        failing = [p for p in self.patches if p["status"] != "applied"]
        if failing:
            lines.append(f"patches: {len(failing)} stale or failed")
        lines += self.render_notes
        lines += [f"not analysed (unreadable): {format_diagnostic(d)}" for d in self.unreadable]
        return lines

    def as_json(self) -> dict[str, Any]:
        return {
            "chart": self.chart,
            "releases": self.release_names,
            "from": self.old,
            "to": self.new,
            "bump": self.bump,
            "app_version": {"from": self.old_app, "to": self.new_app, "bump": self.app_bump},
            "risk": self.risk,
            "observed": self.observed(),
            "summary": self.notable(),
            "values": self.values.as_json(),
            "overrides_affected": [o.__dict__ for o in self.overrides],
            "overrides_unreadable": [d.as_json() for d in self.unreadable_overrides],
            "crds": self.crds,
            "crd_folders": self.crd_folders,
            "images": self.images,
            "image_groups": [g.as_json() for g in self.image_groups()],
            "mirror_images": self.mirror_list(),
            "resources": {env: self._resources_json(env) for env in self.resources},
            "resource_groups": [{"envs": envs, **self._resources_json(envs[0])} for envs, _ in self.resource_groups()],
            "patches": self.patches,
            "changelog": self.changelog,
            "render_notes": self.render_notes,
            "unreadable": [d.as_json() for d in self.unreadable],
        }

    def image_groups(self) -> list[ImageGroup]:
        return group_images(self.images, self.offline_registries)

    def resource_groups(self) -> list[tuple[list[str], tuple[list[tuple[str, str, str]], list[str]]]]:
        """Environments with the same resources changed (and the same version-label-only ones)."""
        lists = {env: (_resource_list(diff), self._labels_only(env)) for env, diff in self.resources.items()}
        return group_equal(lists)

    def _labels_only(self, env: str) -> list[str]:
        diff = self.version_labels_only.get(env)
        return [c.resource for c in diff.changes] if diff else []

    def _resources_json(self, env: str) -> dict[str, list[str]]:
        changes = self.resources[env].changes
        return {
            "added": [c.resource for c in changes if c.change == "added"],
            "removed": [c.resource for c in changes if c.change == "removed"],
            "changed": [c.resource for c in changes if c.change == "changed"],
            "version_labels_only": self._labels_only(env),
        }

    def mirror_list(self) -> list[str]:
        """New images as upstream names them (what a site copies into its registry).

        Environments that pull through `offline.registry` show the rewritten names; they are
        used only when every environment does.
        """
        upstream = [env for env in self.images if env not in self.offline_registries] or list(self.images)
        return sorted({image for env in upstream for image in _new_images(self.images[env])})

    def full_diff(self) -> str:
        """Every change of every environment, version-label-only ones included."""
        parts = []
        for env, diff in self.resources.items():
            labels_only = self.version_labels_only.get(env, EnvironmentDiff(env)).changes
            for change in sorted([*diff.changes, *labels_only], key=lambda c: (c.release, c.resource)):
                parts.append(f"### {env} {change.change} {change.release}: {change.resource}\n{change.diff}")
        return "\n".join(parts)

    def markdown(self, full_diff_path: str = "", budget: int = BODY_BUDGET) -> str:
        head = self._markdown_head()
        tail = "\n\n---\n_Generated by `inv charts.upgrade`._"
        if full_diff_path:
            tail = f"\n\nThe full rendered diff is in `{full_diff_path}`." + tail
        remaining = budget - len(head) - len(tail) - 200
        diffs = self._markdown_diffs(max(remaining, 0))
        return head + diffs + tail

    def _markdown_head(self) -> str:
        out: list[str] = []
        for section in MARKDOWN_SECTIONS:
            out += section(self)
        return "\n".join(out) + "\n"

    def _markdown_diffs(self, budget: int) -> str:
        out = ["", "## Rendered diffs", ""]
        used = 0
        omitted = 0
        bodies = {env: (len(diff.changes), _diff_body(diff)) for env, diff in self.resources.items()}
        for envs, (count, body) in group_equal(bodies):
            if not body:
                continue
            summary = f"<details><summary>{', '.join(envs)}: {count} resource(s)</summary>"
            section = summary + "\n\n```diff\n{}\n```\n</details>\n"
            room = budget - used - len(section) - 100
            if room <= 200:
                omitted += 1
                continue
            text = (
                body
                if len(body) <= room
                else body[: room - 60].rsplit("\n", 1)[0] + "\n... (trimmed; see the full diff)"
            )
            chunk = section.replace("{}", text, 1)
            out.append(chunk)
            used += len(chunk)
        if omitted:
            out.append(f"_{omitted} environment diff(s) omitted to keep this under GitHub's limit._")
        return "\n".join(out)

    def write(self, folder: Path, stem: str, full_diff_path: Path, shown_path: str = "") -> tuple[Path, Path]:
        """Write the Markdown and JSON reports to `folder` and the full diff to `full_diff_path`
        (named in the Markdown as `shown_path`, e.g. relative to the checkout)."""
        folder.mkdir(parents=True, exist_ok=True)
        full_diff_path.parent.mkdir(parents=True, exist_ok=True)
        full_diff_path.write_text(self.full_diff(), encoding="utf-8")
        md, js = folder / f"{stem}.md", folder / f"{stem}.json"
        md.write_text(self.markdown(shown_path or str(full_diff_path)), encoding="utf-8")
        js.write_text(json.dumps(self.as_json(), indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
        return md, js


# --- Markdown sections: one function each, in the order the report shows them ----------------


def _md_title(r: UpgradeReport) -> list[str]:
    return [
        f"# Upgrade {r.chart}: {r.old} -> {r.new}",
        "",
        f"**Semver:** {r.bump} (appVersion {r.old_app or '?'} -> {r.new_app or '?'}: {r.app_bump}) "
        f"· **Risk:** {r.risk} · **Releases:** {', '.join(r.release_names) or '-'}",
    ]


def _md_summary(r: UpgradeReport) -> list[str]:
    return ["", "## Summary", "", *(f"- {line}" for line in r.notable())]


def _md_impact(r: UpgradeReport) -> list[str]:
    flags = [f"- :warning: {flag}" for flag in r.observed()]
    return ["", "## Declared vs observed impact", "", *(flags or [f"- Nothing beyond what a {r.bump} bump declares."])]


def _md_values(r: UpgradeReport) -> list[str]:
    out = ["", "## Values", ""]
    out += _table(["key", "default"], [[f"`{k}`", _short(v)] for k, v in r.values.added.items()], "Added", 60)
    out += _table(["key", "old default"], [[f"`{k}`", _short(v)] for k, v in r.values.removed.items()], "Removed", 60)
    changed = [[f"`{k}`", _short(a), _short(b)] for k, (a, b) in r.values.changed.items()]
    out += _table(["key", "old", "new"], changed, "Changed", 60)
    if not (r.values.added or r.values.removed or r.values.changed):
        out.append("No default value changed.")
    return out


def _md_overrides(r: UpgradeReport) -> list[str]:
    out = ["", "### Our overrides affected", ""]
    out += [f"- `{format_diagnostic(d)}`" for d in r.unreadable_overrides]
    out += [f"- `{o.file}`: `{o.key}` ({o.change}: {o.detail})" for o in r.overrides]
    if not (r.overrides or r.unreadable_overrides):
        out.append("None of our environment or customer overrides touch a removed or changed default.")
    return out


def _md_crds(r: UpgradeReport) -> list[str]:
    out = ["", "## CRDs", ""]
    if not r.crd_changed:
        return [*out, "No CRD changed."]
    out += [f"- added: `{n}`" for n in r.crds["added"]]
    out += [f"- removed: `{n}`" for n in r.crds["removed"]]
    for name, change in r.crds["changed"].items():
        out.append(f"- changed: `{name}` ({change.get('source', '')})")
        if "served" in change:
            out.append(f"  - served versions {change['served']['old']} -> {change['served']['new']}")
        if "storage" in change:
            out.append(f"  - storage version {change['storage']['old']} -> {change['storage']['new']}")
        for version, fields in change.get("fields", {}).items():
            if fields["added"]:
                out.append(f"  - {version}: fields added: {_short(', '.join(fields['added']), 400)}")
            if fields["removed"]:
                out.append(f"  - {version}: fields removed: {_short(', '.join(fields['removed']), 400)}")
        if "other" in change:
            out.append(f"  - {change['other']}")
    folders = r.crd_folders or [f"charts/external/{r.chart}-{r.new}/crds/"]
    apply = " ".join(f"-f {folder}" for folder in folders)
    return [
        *out,
        "",
        "> Helm installs `crds/` on first install only and never upgrades them: apply the new CRDs "
        'before deploying (README "Upgrading CRDs"): '
        f"`kubectl --context CONTEXT apply --server-side --force-conflicts {apply}`.",
    ]


def _md_images(r: UpgradeReport) -> list[str]:
    out = ["", "## Images", ""]
    for group in r.image_groups():
        image_diff = group.changes
        if image_diff["added"] or image_diff["removed"] or image_diff["retagged"]:
            through = [f"{env} (through `{registry}`)" for env, registry in group.through_registry.items()]
            out.append(f"**{', '.join([*group.envs, *through])}**")
            out += [f"- retagged `{d['old']}` -> `{d['new']}`" for d in image_diff["retagged"].values()]
            out += [f"- added `{i}`" for i in image_diff["added"]]
            out += [f"- removed `{i}`" for i in image_diff["removed"]]
    mirror = r.mirror_list()
    if mirror:
        return [*out, "", "Images an air-gapped site must mirror:", "", "```", *mirror, "```"]
    return [*out, "No image changed."]


def _md_resources(r: UpgradeReport) -> list[str]:
    out = ["", "## Resources", ""]
    for envs, (changes, labels_only) in r.resource_groups():
        c = r.resources[envs[0]].counts()
        line = f"- **{', '.join(envs)}**: {c['added']} added, {c['removed']} removed, {c['changed']} changed"
        if labels_only:
            line += f"; {len(labels_only)} resources: version labels only ({', '.join(VERSION_LABELS)})"
        out.append(line)
        out += [f"  - {change} `{resource}` ({release})" for change, release, resource in changes[:40]]
        if len(changes) > 40:
            out.append(f"  - ... and {len(changes) - 40} more")
    return out


def _md_patches(r: UpgradeReport) -> list[str]:
    rows = [
        f"- {p['status']}: `{p['patch']}` -> {p['target']}: {p['reason']} [{', '.join(p['envs'])}]" for p in r.patches
    ]
    return ["", "## Patches", "", *(rows or ["No patch targets this chart's releases."])]


def _md_changelog(r: UpgradeReport) -> list[str]:
    out = ["", "## Changelog", ""]
    for entry in r.changelog:
        out.append(f"### {entry['version']} (appVersion {entry['app_version'] or '?'})")
        out += [
            f"- **{c['kind']}**: {c['description']}" + (f" ({', '.join(c['links'])})" if c["links"] else "")
            for c in entry["changes"]
        ]
        out += [f"- release notes: {link}" for link in entry["links"]]
        if not entry["changes"] and not entry["links"]:
            out.append("- (no changes annotated in the repository index)")
    if not r.changelog:
        out.append("The repository index lists no versions in between.")
    return out


MARKDOWN_SECTIONS: tuple[Callable[[UpgradeReport], list[str]], ...] = (
    _md_title,
    _md_summary,
    _md_impact,
    _md_values,
    _md_overrides,
    _md_crds,
    _md_images,
    _md_resources,
    _md_patches,
    _md_changelog,
)


def _new_images(diff: dict[str, Any]) -> list[str]:
    return [*diff["added"], *(r["new"] for r in diff["retagged"].values())]


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(header: list[str], rows: list[list[str]], title: str, limit: int) -> list[str]:
    if not rows:
        return []
    out = [
        f"<details><summary>{title}: {len(rows)}</summary>",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    out += ["| " + " | ".join(row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        out.append(f"| ... {len(rows) - limit} more (see the JSON report) |" + " |" * (len(header) - 1))
    out += ["", "</details>", ""]
    return out
