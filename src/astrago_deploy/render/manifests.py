"""Reading rendered Kubernetes manifests: documents, identities, the images they pull, and
Secret values scrubbed (generated ones normalized by the renderer, any redacted from a diff)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

_POD_CONTAINER_KEYS = ("containers", "initContainers", "ephemeralContainers")
_SECRET_SECTIONS = ("data", "stringData")


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty mapping document of a multi-document YAML stream."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if isinstance(doc, dict)]


def scrub_secret(doc: dict[str, Any], placeholder: str) -> tuple[dict[str, Any], list[str]]:
    """A Secret with every `data`/`stringData` value replaced by `placeholder` (a copy; the
    document is not changed), and the `section.key`s replaced. Other kinds come back as they are."""
    if doc.get("kind") != "Secret":
        return doc, []
    scrubbed = dict(doc)
    replaced = []
    for section in _SECRET_SECTIONS:
        values = doc.get(section)
        if isinstance(values, dict):
            scrubbed[section] = dict.fromkeys(values, placeholder)
            replaced += [f"{section}.{key}" for key in values]
    return scrubbed, replaced


def resource_id(doc: dict[str, Any], default_namespace: str = "") -> str:
    """`Kind/namespace/name` (namespace empty for cluster-scoped or unset)."""
    meta = doc.get("metadata") or {}
    namespace = meta.get("namespace") or default_namespace
    return f"{doc.get('kind', '?')}/{namespace}/{meta.get('name', '?')}"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def images(doc: dict[str, Any]) -> set[str]:
    """Images a document makes a cluster pull.

    Container specs anywhere in the document (workloads, CronJobs, templates in custom
    resources), container env values named `*_IMAGE` (operators that start pods themselves),
    and NVIDIA's ClusterPolicy, whose components name `repository`/`image`/`version`.
    """
    found: set[str] = set()
    for node in _walk(doc):
        for key in _POD_CONTAINER_KEYS:
            containers = node.get(key)
            if isinstance(containers, list):
                for container in containers:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        found.add(container["image"])
                        for env in container.get("env") or []:
                            value = env.get("value") if isinstance(env, dict) else None
                            if str(env.get("name", "")).endswith("_IMAGE") and isinstance(value, str) and value:
                                found.add(value)
    if doc.get("kind") == "ClusterPolicy":
        for component in (doc.get("spec") or {}).values():
            if isinstance(component, dict):
                found |= _component_images(component)
    return found


def _component_images(component: dict[str, Any]) -> set[str]:
    found = set()
    for node in _walk(component):
        repository, image = node.get("repository"), node.get("image")
        if isinstance(repository, str) and repository and isinstance(image, str) and image:
            version = node.get("version")
            found.add(f"{repository}/{image}:{version}" if version else f"{repository}/{image}")
    return found
