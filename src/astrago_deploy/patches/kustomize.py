"""Kustomize patches: applied to a release's rendered manifests, and checked one by one.

`patches/<release>/kustomization.yaml` (strategic-merge and JSON 6902 patches, optional extra
resources) applies to that release in every environment; `patches/<release>/<env>/` adds
patches for one environment. The kustomizations are standard ones: the rendered manifests are
injected as their first resource, and the pinned kubectl's built-in kustomize builds them.

`check` tells, for every patch, whether it applies and whether it changes anything. Kustomize
skips a selector-targeted patch that matches nothing without a word; here that is "stale".
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.command import Command, Timeouts
from astrago_deploy.core.errors import ConfigError, KubectlError
from astrago_deploy.core.yaml import CommentedMap, CommentedSeq
from astrago_deploy.render.manifests import load_documents

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
RENDERED = "rendered-manifests.yaml"


@dataclass(frozen=True)
class Target:
    group: str = ""
    version: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""
    label_selector: str = ""
    annotation_selector: str = ""
    exact: bool = False  # names from a strategic-merge patch match literally, selectors as regexes

    def describe(self) -> str:
        parts = [self.kind or "*", self.namespace + "/" if self.namespace else "", self.name or "*"]
        text = f"{parts[0]}/{parts[1]}{parts[2]}"
        if self.label_selector:
            text += f" [{self.label_selector}]"
        return text

    def matches(self, doc: dict[str, Any]) -> bool:
        api = str(doc.get("apiVersion", ""))
        group, _, version = api.rpartition("/")
        meta = doc.get("metadata") or {}
        checks = [
            (self.kind, str(doc.get("kind", ""))),
            (self.group, group),
            (self.version, version),
            (self.namespace, str(meta.get("namespace") or "")),
        ]
        if any(want and not re.fullmatch(want, have) for want, have in checks[:3]):
            return False
        for want, have in ((self.namespace, checks[3][1]), (self.name, str(meta.get("name", "")))):
            if want and (want != have if self.exact else not re.fullmatch(want, have)):
                return False
        return _selector_matches(self.label_selector, meta.get("labels") or {}) and _selector_matches(
            self.annotation_selector, meta.get("annotations") or {}
        )


def _selector_matches(selector: str, values: dict[str, Any]) -> bool:
    for term in filter(None, (t.strip() for t in re.split(r",(?![^(]*\))", selector))):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            options = {o.strip() for o in m[3].split(",")}
            present = m[1] in values and str(values[m[1]]) in options
            if present != (m[2] == "in"):
                return False
        elif term.startswith("!"):
            if term[1:] in values:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if str(values.get(key.strip())) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if str(values.get(key.strip())) != value.strip():
                return False
        elif term not in values:
            return False
    return True


@dataclass(frozen=True)
class PatchEntry:
    """One patch of a kustomization, as written there."""

    layer: Path  # the kustomization's folder
    index: int
    field: str  # patches | patchesStrategicMerge | patchesJson6902
    raw: Any  # the entry itself

    @property
    def file(self) -> Path | None:
        if isinstance(self.raw, str):
            return self.layer / self.raw
        if isinstance(self.raw, dict) and isinstance(self.raw.get("path"), str):
            return self.layer / str(self.raw["path"])
        return None

    def label(self, root: Path) -> str:
        if self.file is not None:
            return str(self.file.relative_to(root)) if self.file.is_relative_to(root) else str(self.file)
        kustomization = kustomization_file(self.layer)
        where = kustomization.relative_to(root) if kustomization and kustomization.is_relative_to(root) else self.layer
        return f"{where} {self.field}[{self.index}] (inline)"

    def patch_text(self) -> str:
        if self.file is not None:
            try:
                return yaml.read_text(self.file)
            except FileNotFoundError as exc:
                raise ConfigError(f"{self.file}: patch file does not exist") from exc
        if isinstance(self.raw, dict) and isinstance(self.raw.get("patch"), str):
            return str(self.raw["patch"])
        raise ConfigError(f"{kustomization_file(self.layer)}: {self.field}[{self.index}] has neither path nor patch")

    def target(self) -> Target:
        """The explicit target selector, or the resource the strategic-merge patch names."""
        if isinstance(self.raw, dict) and isinstance(self.raw.get("target"), dict):
            t = self.raw["target"]
            for key in ("group", "version", "kind", "name", "namespace"):
                # kustomize reads these as regular expressions; so does Target.matches.
                try:
                    re.compile(str(t.get(key, "")))
                except re.error as exc:
                    where = f"{self.label(self.layer)}: target.{key} {t.get(key)!r}"
                    raise ConfigError(f"{where} is not a valid regular expression ({exc})") from exc
            return Target(
                str(t.get("group", "")),
                str(t.get("version", "")),
                str(t.get("kind", "")),
                str(t.get("name", "")),
                str(t.get("namespace", "")),
                str(t.get("labelSelector", "")),
                str(t.get("annotationSelector", "")),
            )
        text = self.patch_text()
        docs = [d for d in yaml.load_all(text, self.label(self.layer)) if d is not None]
        if len(docs) != 1 or not isinstance(docs[0], dict):
            if docs and isinstance(docs[0], list):
                raise ConfigError(f"{self.label(self.layer)}: a JSON 6902 patch needs a `target:` in the kustomization")
            raise ConfigError(f"{self.label(self.layer)}: expected one resource in the patch")
        doc = docs[0]
        meta = doc.get("metadata") or {}
        api = str(doc.get("apiVersion", ""))
        group, _, version = api.rpartition("/")
        if not doc.get("kind") or not meta.get("name"):
            raise ConfigError(f"{self.label(self.layer)}: a strategic-merge patch must name kind and metadata.name")
        namespace = str(meta.get("namespace") or "")
        return Target(group, version, str(doc["kind"]), str(meta["name"]), namespace, exact=True)


def kustomization_file(folder: Path) -> Path | None:
    found = [folder / name for name in KUSTOMIZATION_NAMES if (folder / name).is_file()]
    return found[0] if found else None


def load_kustomization(folder: Path) -> dict[str, Any]:
    path = kustomization_file(folder)
    if path is None:
        raise ConfigError(f"{folder}: no kustomization.yaml")
    return yaml.read_mapping(path)


def patch_layers(patches_dir: Path, release: str, env: str) -> list[Path]:
    """The kustomization folders that apply to `release` in `env`, release-wide first."""
    layers = []
    for folder in (patches_dir / release, patches_dir / release / env):
        if kustomization_file(folder) is not None:
            layers.append(folder)
    return layers


def entries(layer: Path) -> list[PatchEntry]:
    data = load_kustomization(layer)
    found = []
    for field in ("patches", "patchesStrategicMerge", "patchesJson6902"):
        items = data.get(field) or []
        if not isinstance(items, list):
            raise ConfigError(f"{kustomization_file(layer)}: {field} must be a list")
        found += [PatchEntry(layer, index, field, item) for index, item in enumerate(items)]
    return found


class Kustomizer:
    """Builds kustomizations over rendered manifests with the pinned kubectl."""

    def __init__(self, kubectl: Path, env: dict[str, str]) -> None:
        self.kubectl = kubectl
        self.env = env

    def build(self, manifests: str, layers: list[tuple[Path, dict[str, Any]]]) -> str:
        """Apply each (folder, kustomization) in turn on top of `manifests`."""
        with tempfile.TemporaryDirectory(prefix="astrago-kustomize-") as tmp:
            work = Path(tmp)
            base = work / "base"
            base.mkdir()
            (base / RENDERED).write_text(manifests, encoding="utf-8")
            (base / "kustomization.yaml").write_text(yaml.dump({"resources": [RENDERED]}), encoding="utf-8")
            previous = "../base"
            for index, (folder, kustomization) in enumerate(layers):
                copy = work / f"layer{index}"
                shutil.copytree(folder, copy)
                for name in KUSTOMIZATION_NAMES:
                    (copy / name).unlink(missing_ok=True)
                data = dict(kustomization)
                data["resources"] = [previous, *(data.get("resources") or [])]
                (copy / "kustomization.yaml").write_text(yaml.dump(data), encoding="utf-8")
                previous = f"../layer{index}"
            top = work / previous.removeprefix("../")
            command = Command(
                [str(self.kubectl), "kustomize", str(top)], work, self.env, KubectlError, timeout=Timeouts.KUSTOMIZE
            )
            return command.run().stdout


def apply(patches_dir: Path, release: str, env: str, manifests: str, kustomizer: Kustomizer) -> str:
    """The release's manifests with its patches applied (unchanged when it has none)."""
    layers = patch_layers(patches_dir, release, env)
    if not layers or not manifests.strip():
        return manifests
    return kustomizer.build(manifests, [(layer, load_kustomization(layer)) for layer in layers])


@dataclass(frozen=True)
class PatchStatus:
    release: str
    env: str
    patch: str  # file, or kustomization + index for inline patches
    target: str
    status: str  # applied | stale | failed
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == "applied"


def _only(kustomization: dict[str, Any], entry: PatchEntry) -> dict[str, Any]:
    """The kustomization with this one patch and nothing else that transforms."""
    return {"patches" if entry.field == "patches" else entry.field: [entry.raw]}


def check(patches_dir: Path, release: str, env: str, manifests: str, kustomizer: Kustomizer) -> Iterator[PatchStatus]:
    """Every patch of `release` in `env`, each checked on its own against what it patches."""
    root = patches_dir.parent
    current = manifests
    for layer in patch_layers(patches_dir, release, env):
        try:
            kustomization = load_kustomization(layer)
            layer_entries = entries(layer)
        except ConfigError as exc:
            yield PatchStatus(release, env, str(kustomization_file(layer) or layer), "-", "failed", str(exc))
            continue
        docs = load_documents(current)
        for entry in layer_entries:
            label = entry.label(root)
            try:
                target = entry.target()
            except ConfigError as exc:
                yield PatchStatus(release, env, label, "-", "failed", str(exc).split(": ", 1)[-1])
                continue
            matched = [d for d in docs if target.matches(d)]
            if not matched:
                yield PatchStatus(
                    release,
                    env,
                    label,
                    target.describe(),
                    "stale",
                    "its target is not in the rendered release (renamed or removed upstream?)",
                )
                continue
            try:
                patched = kustomizer.build(current, [(layer, _only(kustomization, entry))])
            except KubectlError as exc:
                reason = yaml.first_line(exc.stderr.replace("Error: ", "")) or "kustomize failed"
                yield PatchStatus(release, env, label, target.describe(), "failed", reason)
                continue
            if _canonical(load_documents(patched)) == _canonical(docs):
                yield PatchStatus(
                    release,
                    env,
                    label,
                    target.describe(),
                    "stale",
                    f"matches {len(matched)} resource(s) but changes nothing (already upstream?)",
                )
                continue
            yield PatchStatus(release, env, label, target.describe(), "applied", f"changes {len(matched)} resource(s)")
        try:
            current = kustomizer.build(current, [(layer, kustomization)])
        except KubectlError:
            break  # the failing patch was reported above


def _canonical(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(yaml.dump(d, sort_keys=True) for d in docs)


# --- whole-repository operations (behind inv patches.check / patches.new) --------------------


def patched_releases(patches_dir: Path) -> list[str]:
    """Releases with a folder under patches/ (release-wide or per-environment patches)."""
    if not patches_dir.is_dir():
        return []
    return sorted(p.name for p in patches_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scaffold_patch(patches_dir: Path, release: str, resource: dict[str, Any], env: str | None) -> list[Path]:
    """Create a strategic-merge patch skeleton for `resource` and list it in the kustomization.

    The skeleton changes nothing until it is filled in, so patches.check reports it as stale
    until then. Returns the files written; refuses to overwrite a patch file.
    """
    folder = patches_dir / release / env if env else patches_dir / release
    kind, meta = str(resource["kind"]), resource.get("metadata") or {}
    name = str(meta["name"])
    patch_file = folder / f"{kind.lower()}-{name}.yaml"
    if patch_file.exists():
        raise ConfigError(f"{patch_file} already exists")
    skeleton: dict[str, Any] = {"apiVersion": resource["apiVersion"], "kind": kind, "metadata": {"name": name}}
    if meta.get("namespace"):
        skeleton["metadata"]["namespace"] = meta["namespace"]
    patch_text = (
        f"# Why: say here why {kind} {name} needs this change and why values cannot do it.\n"
        "# Strategic-merge patch: write only the fields to change (lists of containers merge by name).\n"
        + yaml.dump(skeleton)
    )
    kustomization = kustomization_file(folder)
    entry = {"path": patch_file.name}
    if kustomization is None:
        kustomization = folder / "kustomization.yaml"
        kustomization_text = (
            f"# Kustomize patches for release {release}{' in ' + env if env else ''}, applied by scripts/post-render.\n"
            + yaml.dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "patches": [entry]})
        )
    else:
        kustomization_text = _append_patch_entry(kustomization, entry)
    transaction = atomic.FileTransaction()
    transaction.write(patch_file, patch_text)
    transaction.write(kustomization, kustomization_text)
    transaction.commit()
    return [kustomization, patch_file]


def _append_patch_entry(kustomization: Path, entry: dict[str, str]) -> str:
    """Add an entry to `patches:` keeping the file's comments and layout (round-trip edit)."""
    edited = yaml.load_for_edit(kustomization)
    doc = edited.doc
    patches = doc.get("patches")
    if patches is None:
        patches = doc["patches"] = CommentedSeq()
    if not isinstance(patches, list):
        raise ConfigError(f"{kustomization}: patches must be a list")
    patches.append(CommentedMap(entry))
    return edited.text()
