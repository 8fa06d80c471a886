"""Kustomize patches: applied to a release's rendered manifests, and checked one by one.

`patches/<release>/kustomization.yaml` (strategic-merge and JSON 6902 patches, optional extra
resources) applies to that release in every environment; `patches/<release>/<env>/` adds
patches for one environment. The kustomizations are standard ones: the rendered manifests are
injected as their first resource, and the pinned kubectl's built-in kustomize builds them.

`check` tells, for every patch, whether it applies and whether it changes anything, and asks
kustomize rather than re-implementing it: which resources a target selects (regular
expressions, label and annotation selectors) and what a strategic-merge patch names are
kustomize's business, and the post-renderer uses that same kustomize. Kustomize skips a
selector-targeted patch that matches nothing without a word; here that is "stale".
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.command import Command, Timeouts
from astrago_deploy.core.diagnostics import shown_path
from astrago_deploy.core.errors import ConfigError, KubectlError, YamlError
from astrago_deploy.core.yaml import CommentedMap, CommentedSeq
from astrago_deploy.render.manifests import load_documents, resource_id

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
RENDERED = "rendered-manifests.yaml"
# The annotation a probe patch adds to every resource a target selects (see `_count_matches`).
PROBE_ANNOTATION = "astrago.patch-check/probe-{index}"
# Longer kustomize messages (one that quotes a whole inline patch) are cut here.
REASON_LIMIT = 300


@dataclass(frozen=True)
class Target:
    """What a patch names as its target, for the report; kustomize does the selecting."""

    kind: str = ""
    name: str = ""
    namespace: str = ""
    label_selector: str = ""

    def describe(self) -> str:
        text = f"{self.kind or '*'}/{self.namespace + '/' if self.namespace else ''}{self.name or '*'}"
        return f"{text} [{self.label_selector}]" if self.label_selector else text


@dataclass(frozen=True)
class PatchEntry:
    """One patch of a kustomization, as written there."""

    layer: Path  # the kustomization's folder
    index: int
    field: str  # patches | patchesStrategicMerge | patchesJson6902
    raw: Any  # the entry itself

    @property
    def inline_text(self) -> str | None:
        """The patch itself when it is written in the kustomization rather than in a file."""
        if isinstance(self.raw, dict) and isinstance(self.raw.get("patch"), str):
            return str(self.raw["patch"])
        # patchesStrategicMerge takes a file name or, as a multi-line string, the patch.
        if isinstance(self.raw, str) and "\n" in self.raw.strip():
            return self.raw
        return None

    @property
    def file(self) -> Path | None:
        if self.inline_text is not None:
            return None
        if isinstance(self.raw, str):
            return self.layer / self.raw
        if isinstance(self.raw, dict) and isinstance(self.raw.get("path"), str):
            return self.layer / str(self.raw["path"])
        return None

    @property
    def selector(self) -> dict[str, Any] | None:
        """The entry's `target:` as written, if it has one."""
        target = self.raw.get("target") if isinstance(self.raw, dict) else None
        return target if isinstance(target, dict) else None

    def label(self, root: Path) -> str:
        if self.file is not None:
            return str(self.file.relative_to(root)) if self.file.is_relative_to(root) else str(self.file)
        kustomization = kustomization_file(self.layer)
        where = kustomization.relative_to(root) if kustomization and kustomization.is_relative_to(root) else self.layer
        return f"{where} {self.field}[{self.index}] (inline)"

    def patch_text(self) -> str:
        inline = self.inline_text
        if inline is not None:
            return inline
        if self.file is not None:
            try:
                return yaml.read_text(self.file)
            except FileNotFoundError as exc:
                raise ConfigError(f"{self.file}: patch file does not exist") from exc
        raise ConfigError(f"{kustomization_file(self.layer)}: {self.field}[{self.index}] has neither path nor patch")

    def strategic_merge_documents(self, root: Path) -> list[dict[str, Any]]:
        """The resources a patch without `target:` names (one per document), read as kustomize
        reads them; a ConfigError if the patch cannot be read."""
        docs = [d for d in yaml.load_all(self.patch_text(), self.label(root)) if d is not None]
        return [d for d in docs if isinstance(d, dict)]

    def describe_target(self, root: Path) -> str:
        """The target for the report: the selector as written, or what the patch names."""
        if (t := self.selector) is not None:
            return Target(
                str(t.get("kind") or ""),
                str(t.get("name") or ""),
                str(t.get("namespace") or ""),
                str(t.get("labelSelector") or ""),
            ).describe()
        try:
            docs = self.strategic_merge_documents(root)
        except ConfigError:
            return "-"
        named = []
        for doc in docs:
            meta = doc.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            named.append(
                Target(str(doc.get("kind") or ""), str(meta.get("name") or ""), str(meta.get("namespace") or ""))
            )
        return ", ".join(target.describe() for target in named) or "-"


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
        """Apply each (folder, kustomization) in turn on top of `manifests`.

        A KubectlError names the real folders, not the temporary copies kustomize ran on.
        """
        with tempfile.TemporaryDirectory(prefix="astrago-kustomize-") as tmp:
            work = Path(tmp)
            base = work / "base"
            base.mkdir()
            (base / RENDERED).write_text(manifests, encoding="utf-8")
            (base / "kustomization.yaml").write_text(yaml.dump({"resources": [RENDERED]}), encoding="utf-8")
            previous = "../base"
            copies: dict[str, Path] = {}
            for index, (folder, kustomization) in enumerate(layers):
                copy = work / f"layer{index}"
                shutil.copytree(folder, copy)
                copies[str(copy)] = folder
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
            try:
                return command.run().stdout
            except KubectlError as exc:
                stderr = exc.stderr
                for copy_path, folder in copies.items():
                    stderr = stderr.replace(copy_path, str(folder))
                argv = [str(self.kubectl), "kustomize", "<" + ", ".join(str(folder) for folder, _ in layers) + ">"]
                raise KubectlError(
                    argv, exc.returncode, exc.stdout, stderr, problem=exc.problem, output=exc.output, log=exc.log
                ) from exc


def kustomize_reason(exc: KubectlError) -> str:
    """Kustomize's complaint in one line: without its `error:` prefix, the configuration it
    quotes back whole, deprecation warnings, or line breaks."""
    if exc.problem is not None:
        return exc.headline()
    lines = [line for line in exc.stderr.splitlines() if not line.startswith("# Warning:")]
    text = re.sub(r"\s*with config: `[^`]*`", "", "\n".join(lines))
    text = " ".join(text.split())
    text = re.sub(r"^(error|Error):\s*", "", text)
    if not text:
        return exc.headline()
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


def apply(patches_dir: Path, release: str, env: str, manifests: str, kustomizer: Kustomizer) -> str:
    """The release's manifests with its patches applied (unchanged when it has none)."""
    layers = patch_layers(patches_dir, release, env)
    if not layers or not manifests.strip():
        return manifests
    try:
        return kustomizer.build(manifests, [(layer, load_kustomization(layer)) for layer in layers])
    except KubectlError as exc:
        if exc.problem is not None:
            raise
        where = ", ".join(str(kustomization_file(layer)) for layer in layers)
        raise ConfigError(f"{where}: kustomize: {kustomize_reason(exc)} (see `inv patches.check`)") from exc


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


def _only(entry: PatchEntry) -> dict[str, Any]:
    """A kustomization with this one patch and nothing else that transforms."""
    return {entry.field: [entry.raw]}


def _resources(manifests: str) -> dict[str, str]:
    """Resource id -> canonical text, to compare what kustomize returns with what it was given."""
    return {
        f"{doc.get('apiVersion', '')}:{resource_id(doc)}": yaml.dump(doc, sort_keys=True)
        for doc in load_documents(manifests)
    }


def _changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(before.get(key) != after.get(key) for key in before.keys() | after.keys())


def check(patches_dir: Path, release: str, env: str, manifests: str, kustomizer: Kustomizer) -> list[PatchStatus]:
    """Every patch of `release` in `env`, each built by kustomize on its own over what it patches.

    A patch kustomize refuses is failed (with kustomize's words); one whose output equals its
    input is stale, and one more kustomize run over all of a layer's stale patches at once
    tells whether their targets select anything. Patches of an environment's layer are checked
    against the output of the release-wide one, as the post-renderer applies them.
    """
    root = patches_dir.parent
    layers = patch_layers(patches_dir, release, env)
    results: list[PatchStatus] = []
    current = manifests
    for layer in layers:
        try:
            kustomization = load_kustomization(layer)
            layer_entries = entries(layer)
        except ConfigError as exc:
            label = _relative(kustomization_file(layer) or layer, root)
            if isinstance(exc, YamlError):  # named like the label, not by the absolute path it was read from
                exc = YamlError(shown_path(exc.path, root), exc.line, exc.column, exc.reason, exc.fix)
            results.append(PatchStatus(release, env, label, "-", "failed", yaml.first_line(str(exc))))
            continue
        if not current.strip():
            reason = f"{release} renders nothing in {env}"
            results += [
                PatchStatus(release, env, e.label(root), e.describe_target(root), "stale", reason)
                for e in layer_entries
            ]
            continue
        checked, combined = _check_layer(root, layer, kustomization, layer_entries, current, kustomizer)
        results += [PatchStatus(release, env, *result) for result in checked]
        if any(result[2] == "failed" for result in checked):
            break  # the layer does not build; the ones above it build on it
        if combined is None:
            try:
                combined = kustomizer.build(current, [(layer, kustomization)])
            except KubectlError as exc:
                if exc.problem is not None:
                    raise
                reason = f"its patches fail together: {kustomize_reason(exc)}"
                label = _relative(kustomization_file(layer) or layer, root)
                results.append(PatchStatus(release, env, label, "-", "failed", reason))
                break
        current = combined
    return results


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _check_layer(
    root: Path,
    layer: Path,
    kustomization: dict[str, Any],
    layer_entries: list[PatchEntry],
    current: str,
    kustomizer: Kustomizer,
) -> tuple[list[tuple[str, str, str, str]], str | None]:
    """(patch, target, status, reason) per entry, and the whole layer's output when the one
    per-patch build was exactly that build (None when it still has to be run)."""
    before = _resources(current)
    results: list[tuple[str, str, str, str]] = []
    unchanged: list[int] = []
    combined: str | None = None
    rest = {key: value for key, value in kustomization.items() if key not in ("apiVersion", "kind")}
    for position, entry in enumerate(layer_entries):
        label, target = entry.label(root), entry.describe_target(root)
        try:
            patched = kustomizer.build(current, [(layer, _only(entry))])
        except KubectlError as exc:
            if exc.problem is not None:
                raise  # kubectl timed out or could not start: not the patch's fault
            results.append((label, target, "failed", _failure_reason(entry, root, exc)))
            continue
        if len(layer_entries) == 1 and rest == _only(entry):
            combined = patched
        changed = _changed(before, _resources(patched))
        if changed:
            results.append((label, target, "applied", f"changes {changed} resource(s)"))
        else:
            unchanged.append(position)
            results.append((label, target, "stale", "changes nothing"))
    matches = _count_matches(layer, [layer_entries[i] for i in unchanged], current, kustomizer)
    for position in unchanged:
        entry = layer_entries[position]
        label, target, _, _ = results[position]
        results[position] = (label, target, "stale", _stale_reason(entry, root, matches))
    return results, combined


def _stale_reason(entry: PatchEntry, root: Path, matches: dict[tuple[str, int], int]) -> str:
    if entry.selector is not None:
        count = matches.get((entry.field, entry.index))
    else:
        # Kustomize refuses a strategic-merge patch whose resource is missing, so each
        # document of this one found its resource.
        try:
            count = len(entry.strategic_merge_documents(root))
        except ConfigError:
            count = None
    if count == 0:
        return "its target is not in the rendered release (renamed or removed upstream?)"
    if count is None:
        return "changes nothing"
    return f"matches {count} resource(s) but changes nothing (already upstream?)"


def _count_matches(
    layer: Path, stale: list[PatchEntry], current: str, kustomizer: Kustomizer
) -> dict[tuple[str, int], int]:
    """For each stale entry with a `target:`, how many resources kustomize selects with it.

    One build for all of them: each target gets a strategic-merge probe that only adds its own
    annotation, so counting the annotation counts the matches. Empty if the probe build fails.
    """
    probes = [
        ((entry.field, entry.index), entry.selector, PROBE_ANNOTATION.format(index=f"{entry.field}-{entry.index}"))
        for entry in stale
        if entry.selector is not None
    ]
    if not probes:
        return {}
    probe_patches = [
        {
            "target": selector,
            "patch": yaml.dump(
                {"apiVersion": "v1", "kind": "Probe", "metadata": {"name": "probe", "annotations": {annotation: "1"}}}
            ),
        }
        for _, selector, annotation in probes
    ]
    try:
        probed = load_documents(kustomizer.build(current, [(layer, {"patches": probe_patches})]))
    except KubectlError:
        return {}
    annotated = [set((doc.get("metadata") or {}).get("annotations") or {}) for doc in probed]
    return {key: sum(annotation in keys for keys in annotated) for key, _, annotation in probes}


def _failure_reason(entry: PatchEntry, root: Path, exc: KubectlError) -> str:
    """Kustomize's message, or ours when the patch is not even readable YAML: ours names the
    file and line."""
    try:
        entry.strategic_merge_documents(root)
    except ConfigError as unreadable:
        return yaml.first_line(str(unreadable))
    return kustomize_reason(exc)


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
