"""Reading rendered Kubernetes manifests: documents, identities, the images they pull, and
Secret values shown as digests (`sha256:<hex>`), so a render, a diff or a report shows that a
value changed without showing the value."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from astrago_deploy.core import yaml

_POD_CONTAINER_KEYS = ("containers", "initContainers", "ephemeralContainers")
_SECRET_SECTIONS = ("data", "stringData")
_CRD_SUFFIXES = (".yaml", ".yml", ".json")
DIGEST_PREFIX = "sha256:"
NOT_BASE64_PREFIX = "not base64, "
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def load_documents(text: str, source: str | Path = "<string>") -> list[dict[str, Any]]:
    """Every non-empty mapping document of a multi-document YAML stream (YamlError names `source`)."""
    return [doc for doc in yaml.load_all(text, source) if isinstance(doc, dict)]


def read_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty mapping document of the file at `path`."""
    return [doc for doc in yaml.read_all(path) if isinstance(doc, dict)]


def crd_files(root: Path) -> list[Path]:
    """The files helm installs as CRDs: those below the `crds/` folder of each chart under `root`.

    A subchart may itself be named `crds` (kube-prometheus-stack's is): its `templates/` are
    Go templates, not CRD files, so the folder counts only where it sits next to a Chart.yaml.
    """
    found: list[Path] = []
    for chart_yaml in sorted(root.rglob("Chart.yaml")):
        folder = chart_yaml.parent / "crds"
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _CRD_SUFFIXES)
    return found


def value_digest(value: str, base64_encoded: bool) -> str:
    """`sha256:<hex>` of a Secret value: of the decoded bytes for `data` (so a value reads the
    same in `data` and `stringData`), of the UTF-8 text for `stringData`. `data` that is not
    base64 keeps a marker saying so, and validation reports it."""
    if not base64_encoded:
        return f"{DIGEST_PREFIX}{hashlib.sha256(value.encode()).hexdigest()}"
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"{NOT_BASE64_PREFIX}{DIGEST_PREFIX}{hashlib.sha256(value.encode()).hexdigest()}"
    return f"{DIGEST_PREFIX}{hashlib.sha256(raw).hexdigest()}"


def is_digest(value: object) -> bool:
    """Whether `value` is a digest `value_digest` wrote for valid Secret data."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def digest_secret(doc: dict[str, Any], keep: Collection[str] = ()) -> dict[str, Any]:
    """A Secret with every `data`/`stringData` value replaced by its digest (a copy; the
    document is not changed): a change shows, the value does not. Values in `keep` (markers
    such as the renderer's normalized one) and digests already made stay as they are. Other
    kinds come back as they are."""
    if doc.get("kind") != "Secret":
        return doc
    digested = dict(doc)
    for section in _SECRET_SECTIONS:
        values = doc.get(section)
        if isinstance(values, dict):
            digested[section] = {
                key: value if _is_marker(value, keep) else value_digest(str(value), section == "data")
                for key, value in values.items()
            }
    return digested


def _is_marker(value: object, keep: Collection[str]) -> bool:
    return value in keep or (isinstance(value, str) and value.startswith((DIGEST_PREFIX, NOT_BASE64_PREFIX)))


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
