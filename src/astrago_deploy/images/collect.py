"""Every place a rendered release names an image: pod specs, operator env vars and flags, kind plugins.

Pod specs of the workload kinds (containers, initContainers, ephemeralContainers) give each
container's `image`, every `*_IMAGE` env value and the image flags of `IMAGE_FLAGS` in its
args (operators start pods from those); custom
resources go to their kind's plugin (images/kinds/). A custom resource of a kind with no plugin
whose fields look like images (`image`, `*Image`, `repository` with a tag or version) is a
warning at its place: nothing may be pulled that the inventory does not list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from astrago_deploy.core.diagnostics import Diagnostic, warning
from astrago_deploy.images.kinds import plugin_for
from astrago_deploy.images.uses import Found, ImageUse, KindContext, Unresolved
from astrago_deploy.render.manifests import read_documents

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_IMAGE_KEY = re.compile(r"^(image|.*Image)$")
# Operator flags that name an image the operator puts into the pods it starts.
IMAGE_FLAGS = {
    "--prometheus-config-reloader": "prometheus-operator's config reloader in every Prometheus and Alertmanager pod",
}
PLUGIN_FIX = "add a plugin under src/astrago_deploy/images/kinds/, or list the image in images.extra.yaml"


def resource_name(doc: dict[str, Any], default_namespace: str = "") -> str:
    """`Kind/namespace/name`, or `Kind/name` for a resource without a namespace."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    namespace = meta.get("namespace") or default_namespace
    kind, name = doc.get("kind", "?"), meta.get("name", "?")
    return f"{kind}/{namespace}/{name}" if namespace and not _cluster_scoped(doc) else f"{kind}/{name}"


def _cluster_scoped(doc: dict[str, Any]) -> bool:
    return doc.get("kind") in {"ClusterPolicy", "Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass"}


def is_custom_resource(doc: dict[str, Any]) -> bool:
    """An API group with a dot that is not Kubernetes' own (`*.k8s.io`)."""
    group = str(doc.get("apiVersion") or "").rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def pod_spec_images(pod_spec: dict[str, Any], prefix: str) -> Iterator[Found]:
    for list_name in CONTAINER_LISTS:
        containers = pod_spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                continue
            where = f"{prefix}.{list_name}[{container.get('name') or index}]"
            if "image" in container:
                yield Found(container["image"], f"{where}.image")
            yield from _flag_images(container.get("args"), where)
            for env in container.get("env") or []:
                if not isinstance(env, dict) or not str(env.get("name", "")).endswith("_IMAGE"):
                    continue
                value = env.get("value")
                if value not in (None, ""):
                    yield Found(value, f"{where}.env[{env['name']}]")


def _flag_images(args: Any, where: str) -> Iterator[Found]:
    """Images named by `IMAGE_FLAGS` in a container's args (`--flag=IMAGE` or `--flag IMAGE`)."""
    if not isinstance(args, list):
        return
    for index, arg in enumerate(args):
        flag, equals, value = str(arg).partition("=")
        if flag not in IMAGE_FLAGS:
            continue
        if not equals:
            value = str(args[index + 1]) if index + 1 < len(args) else ""
        if value:
            yield Found(value, f"{where}.args[{flag}]", IMAGE_FLAGS[flag])


def workload_images(doc: dict[str, Any]) -> Iterator[Found]:
    path = POD_SPEC_PATHS.get(str(doc.get("kind")))
    if path is None:
        return
    node: Any = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        yield from pod_spec_images(node, ".".join(path))


def image_like_fields(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(field path, value) of every field of `node` that looks like it names an image."""
    if isinstance(node, dict):
        repository = node.get("repository")
        if isinstance(repository, str) and repository and any(k in node for k in ("tag", "version", "image")):
            yield (f"{prefix}.repository".lstrip("."), repository)
        for key, value in node.items():
            path = f"{prefix}.{key}".lstrip(".")
            if isinstance(value, str) and value and _IMAGE_KEY.match(str(key)):
                yield (path, value)
            else:
                yield from image_like_fields(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            name = value.get("name") if isinstance(value, dict) else None
            yield from image_like_fields(value, f"{prefix}[{name if isinstance(name, str) else index}]")


def release_uses(
    release: str, docs: list[dict[str, Any]], context: KindContext, namespace: str = "", source: str = ""
) -> tuple[list[ImageUse], list[Diagnostic]]:
    """The image uses of one release's documents, and warnings for images the inventory cannot see."""
    uses: list[ImageUse] = []
    findings: list[Diagnostic] = []
    for doc in docs:
        resource = resource_name(doc, namespace)
        plugin = plugin_for(doc)
        found: list[Found | Unresolved] = list(workload_images(doc))
        if plugin is not None:
            found += plugin(doc, context)
        elif is_custom_resource(doc):
            for field, value in image_like_fields(doc.get("spec"), "spec"):
                findings.append(
                    warning(
                        source,
                        None,
                        f"{resource} {field}",
                        f"{release}: {doc.get('kind')} has no image plugin; "
                        f"image-like value {value!r} is not in the inventory",
                        PLUGIN_FIX,
                    )
                )
        for item in found:
            if isinstance(item, Unresolved):
                findings.append(warning(source, None, f"{resource} {item.field}", f"{release}: {item.reason}"))
            else:
                uses.append(ImageUse(release, resource, item.field, item.note, item.image, source))
    return uses, findings


def rendered_uses(
    folder: Path, context: KindContext, namespaces: Mapping[str, str] | None = None, shown_root: Path | None = None
) -> tuple[list[ImageUse], list[Diagnostic]]:
    """The image uses of every `<release>.yaml` of a rendered environment folder."""
    uses: list[ImageUse] = []
    findings: list[Diagnostic] = []
    for path in sorted(folder.glob("*.yaml")):
        source = str(path.relative_to(shown_root)) if shown_root and path.is_relative_to(shown_root) else str(path)
        release = path.stem
        found, notes = release_uses(release, read_documents(path), context, (namespaces or {}).get(release, ""), source)
        uses += found
        findings += notes
    return uses, findings
