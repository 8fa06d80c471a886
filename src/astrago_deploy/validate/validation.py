"""Offline validation of rendered manifests against Kubernetes and CRD schemas.

This module owns:

* the target Kubernetes version: `cluster.kubernetesVersion` in the environment values
  (environments/base/values.yaml, overridable by a stage or customer layer), checked against
  the versions kubernetes-validate ships schemas for;
* the schema index of custom resources: the `openAPIV3Schema` of every served version of every
  CustomResourceDefinition in the vendored and custom charts (their `crds/` folders, CRD
  templates as far as they parse without helm) and in the render itself;
* schema validation of documents: built-in kinds against kubernetes-validate's strict schemas,
  custom resources against their CRD (unknown fields are errors, as in `kubectl --validate=strict`),
  custom resources without a known CRD as warnings;
* the offline-images check: with `offline.registry` set, every image comes from that registry.

Nothing here needs a cluster or the network; schemas are loaded once per process.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # ships no type information
from kubernetes_validate import utils as kv_utils
from kubernetes_validate.version import __version__ as KV_VERSION
from referencing import Registry, Resource

from astrago_deploy.core import yaml
from astrago_deploy.core.diagnostics import Diagnostic, Severity
from astrago_deploy.core.errors import AstragoError, ConfigError, FileAccessError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.model import environments
from astrago_deploy.render.generated import NORMALIZED
from astrago_deploy.render.manifests import crd_files, images, is_digest, load_documents, read_documents, resource_id

Gvk = tuple[str, str, str]  # (group, version, kind); group "" for the core API
CrdIndex = dict[Gvk, dict[str, Any]]

VERSION_KEY = "cluster.kubernetesVersion"
# Valid base64 that stands in for Secret data the renderer normalized or wrote as a digest
# (neither is base64 itself; data that was not base64 keeps a marker that fails the check).
SECRET_PLACEHOLDER = base64.b64encode(b"normalized").decode()
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
_DIRECTIVE_LINE = re.compile(r"^\s*\{\{.*\}\}\s*$")
_MESSAGE_LIMIT = 300
_CRD_SUFFIXES = (".yaml", ".yml", ".json")


def _layer_files(layout: RepoLayout, env: str | None) -> list[Path]:
    if env is None:
        return [layout.environments_dir / "base" / "values.yaml"]
    return [layer / "values.yaml" for layer in environments.get(layout, env).layer_dirs(layout)]


def supported_kubernetes_versions() -> list[str]:
    """MAJOR.MINOR versions kubernetes-validate ships schemas for, oldest first."""
    return list(_schema_releases())


@functools.cache
def _schema_releases() -> dict[str, str]:
    """MAJOR.MINOR -> the full version naming kubernetes-validate's schema folders."""
    return {kv_utils.major_minor(full): full for full in kv_utils.all_versions()}


def check_kubernetes_version(value: object, where: str = VERSION_KEY) -> str:
    """`value` as a MAJOR.MINOR string that kubernetes-validate has schemas for, or ConfigError."""
    supported = ", ".join(supported_kubernetes_versions())
    if isinstance(value, bool) or not isinstance(value, str):
        hint = " (quote it: unquoted 1.30 reads as the number 1.3)" if isinstance(value, (int, float)) else ""
        raise ConfigError(f'{where}: Kubernetes version must be a string such as "1.31", got {value!r}{hint}')
    match = _VERSION.match(value.strip())
    if not match:
        raise ConfigError(f'{where}: Kubernetes version {value!r} is not MAJOR.MINOR (such as "1.31")')
    version = f"{int(match.group(1))}.{int(match.group(2))}"
    if version not in _schema_releases():
        raise ConfigError(
            f"{where}: Kubernetes version {version} has no schemas in kubernetes-validate {KV_VERSION}; "
            f"supported: {supported}"
        )
    return version


def kubernetes_version(layout: RepoLayout, env: str | None = None) -> str:
    """The Kubernetes version rendered manifests are validated against.

    `cluster.kubernetesVersion` of environments/base/values.yaml; with `env`, the last of the
    environment's layers (base -> stage -> customer) that sets it.
    """
    value: object = None
    origin: Path | None = None
    for path in _layer_files(layout, env):
        cluster = yaml.read_mapping(path, missing_ok=True).get("cluster")
        if isinstance(cluster, dict) and "kubernetesVersion" in cluster:
            value, origin = cluster["kubernetesVersion"], path
    if origin is None:
        base = layout.environments_dir / "base" / "values.yaml"
        raise ConfigError(f'{VERSION_KEY} is not set; set it in {base} (for example "1.31")')
    where = origin.relative_to(layout.root) if origin.is_relative_to(layout.root) else origin
    return check_kubernetes_version(value, f"{where}: {VERSION_KEY}")


# --- built-in kinds: kubernetes-validate's schemas --------------------------------------


def _schema_root() -> Any:
    return importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"


def _schema_dir(version: str, strict: bool) -> str:
    version = check_kubernetes_version(version, "Kubernetes version")
    return f"v{_schema_releases()[version]}-local" + ("-strict" if strict else "")


@functools.cache
def _definitions(schema_dir: str) -> Registry[Any]:
    text = (_schema_root() / schema_dir / "_definitions.json").read_text(encoding="utf-8")
    return Resource.from_contents(json.loads(text)) @ Registry()


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# Kubernetes' `byte` fields ([]byte, base64 in JSON) are the only format the API server enforces
# the way a schema can; other formats (int32, date-time, int-or-string) are annotations here.
_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checks("byte")(_is_base64)


@functools.cache
def _builtin_validator(schema_dir: str, group: str, version: str, kind: str) -> Any:
    """A validator for a built-in kind, or None when kubernetes-validate has no schema for it."""
    api = f"{group.split('.', 1)[0]}-{version}" if group else version
    path = _schema_root() / schema_dir / f"{kind.lower()}-{api}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    # The file name drops the group's domain: make sure this is the kind asked for, not a
    # custom resource whose group merely starts the same (apps.example.com vs apps).
    gvks = schema.get("x-kubernetes-group-version-kind") or []
    if {"group": group, "version": version, "kind": kind} not in gvks:
        return None
    registry = Resource.from_contents(schema) @ _definitions(schema_dir)
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=_FORMATS)


# --- custom resources: CRD schemas -------------------------------------------------------


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def crd_schemas_of(docs: Iterable[Mapping[str, Any]]) -> CrdIndex:
    """`(group, version, kind) -> openAPIV3Schema` of every served version of the CRDs in `docs`."""
    index: CrdIndex = {}
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition" or not isinstance(doc.get("spec"), dict):
            continue
        spec = doc["spec"]
        group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
        if not isinstance(group, str) or not isinstance(kind, str):
            continue
        # apiextensions.k8s.io/v1beta1 kept one schema for all versions under spec.validation.
        shared = (spec.get("validation") or {}).get("openAPIV3Schema")
        versions = spec.get("versions") or ([{"name": spec["version"]}] if spec.get("version") else [])
        for entry in versions:
            if not isinstance(entry, dict) or not entry.get("served", True) or not entry.get("name"):
                continue
            schema = (entry.get("schema") or {}).get("openAPIV3Schema") or shared
            if isinstance(schema, dict):
                index[(group, str(entry["name"]), kind)] = schema
    return index


def _chart_files(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _CRD_SUFFIXES)


def _crd_folder_documents(path: Path) -> list[dict[str, Any]]:
    # helm installs every file of `crds/` as is: one it cannot read is an error (a YamlError
    # naming the file and line), not a CRD to leave out of the schema index.
    return read_documents(path)


def _template_crds(path: Path) -> list[dict[str, Any]]:
    """CRDs in a chart template, when the template is plain YAML inside `{{ if }}` guards."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if "CustomResourceDefinition" not in text:
        return []
    kept = "".join(line for line in text.splitlines(keepends=True) if not _DIRECTIVE_LINE.match(line))
    if "{{" in kept:
        return []
    try:
        return load_documents(kept, path)
    except yaml.YamlError:
        # A template that is not YAML without helm is no failure: the render holds what helm
        # makes of it, and the render's CRDs take precedence over these.
        return []


def crd_schemas(layout: RepoLayout, documents: Iterable[Mapping[str, Any]] = ()) -> CrdIndex:
    """The CRD schema index of the vendored and custom charts, plus the CRDs in `documents`.

    Precedence (later wins): CRDs in chart templates, CRDs in charts' `crds/` folders, CRDs in
    `documents` (a render, which is what a cluster would actually get).
    """
    from_templates: list[dict[str, Any]] = []
    from_folders: list[dict[str, Any]] = []
    for root in (layout.external_dir, layout.custom_dir):
        in_crd_folders = set(crd_files(root)) if root.is_dir() else set()
        for path in _chart_files(root):
            parts = path.relative_to(root).parts
            if path in in_crd_folders:
                from_folders += _crd_folder_documents(path)
            elif "templates" in parts[:-1]:
                from_templates += _template_crds(path)
    index = crd_schemas_of(from_templates)
    index.update(crd_schemas_of(from_folders))
    index.update(crd_schemas_of(documents))
    return index


def _usable_pattern(pattern: object) -> bool:
    if not isinstance(pattern, str):
        return False
    try:
        re.compile(pattern)
    except re.error:  # RE2 syntax Python cannot read: not checkable here
        return False
    return True


_COPIED = (
    "enum",
    "minimum",
    "maximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
)


def crd_to_jsonschema(node: Any, strict: bool = True) -> dict[str, Any]:
    """A CRD structural (OpenAPI v3) schema as JSON Schema 2020-12.

    `nullable` allows null, `x-kubernetes-int-or-string` allows integers and strings, OpenAPI's
    boolean `exclusiveMinimum`/`exclusiveMaximum` become numbers, formats and CEL rules are not
    checked. With `strict`, an object level rejects fields it does not list in `properties` (the
    API server would silently prune them) unless it sets `additionalProperties` or
    `x-kubernetes-preserve-unknown-fields`; branches of allOf/anyOf/oneOf/not only constrain
    values, so they are never strict.
    """
    if not isinstance(node, dict):
        return {}
    out: dict[str, Any] = {key: node[key] for key in _COPIED if key in node}
    if _usable_pattern(node.get("pattern")):
        out["pattern"] = node["pattern"]
    for bound in ("Minimum", "Maximum"):
        exclusive, plain = node.get(f"exclusive{bound}"), node.get(bound.lower())
        if exclusive is True and isinstance(plain, (int, float)):
            out.pop(bound.lower(), None)
            out[f"exclusive{bound}"] = plain
        elif isinstance(exclusive, (int, float)) and not isinstance(exclusive, bool):
            out[f"exclusive{bound}"] = exclusive
    types: list[str] = []
    if node.get("x-kubernetes-int-or-string"):
        types = ["integer", "string"]
    elif isinstance(node.get("type"), str):
        types = [node["type"]]
    if types:
        out["type"] = [*types, "null"] if node.get("nullable") else types
    properties = node.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {key: crd_to_jsonschema(value, strict) for key, value in properties.items()}
    additional = node.get("additionalProperties")
    if isinstance(additional, bool):
        out["additionalProperties"] = additional
    elif isinstance(additional, dict):
        out["additionalProperties"] = crd_to_jsonschema(additional, strict)
    if isinstance(node.get("items"), dict):
        out["items"] = crd_to_jsonschema(node["items"], strict)
    for junctor in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(junctor), list):
            out[junctor] = [crd_to_jsonschema(branch, strict=False) for branch in node[junctor]]
    if isinstance(node.get("not"), dict):
        out["not"] = crd_to_jsonschema(node["not"], strict=False)
    is_object = node.get("type") == "object" or isinstance(properties, dict)
    if node.get("x-kubernetes-embedded-resource"):
        embedded = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
        out["properties"] = {**embedded, **out.get("properties", {})}
    if (
        strict
        and is_object
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _as_admitted(instance: Any, node: Any) -> Any:
    """`instance` as the API server validates it: nulls pruned, then defaults applied.

    Nulls of known fields whose schema is not `nullable` are dropped; missing fields of an
    object that has a `default` get it (recursively, as apiextensions' structural defaulting).
    """
    if not isinstance(node, dict):
        return instance
    if isinstance(instance, dict):
        declared = node.get("properties")
        properties: dict[str, Any] = declared if isinstance(declared, dict) else {}
        additional = node.get("additionalProperties")
        admitted = {}
        for key, value in instance.items():
            child = properties.get(key, additional if isinstance(additional, dict) else None)
            if value is None and isinstance(child, dict) and not child.get("nullable"):
                continue
            admitted[key] = value
        for key, child in properties.items():
            if key not in admitted and isinstance(child, dict) and "default" in child:
                admitted[key] = copy.deepcopy(child["default"])
        return {
            key: _as_admitted(value, properties.get(key, additional if isinstance(additional, dict) else None))
            for key, value in admitted.items()
        }
    if isinstance(instance, list):
        return [_as_admitted(item, node.get("items")) for item in instance]
    return instance


@dataclass(frozen=True)
class _CrdValidator:
    raw: dict[str, Any]
    validator: Any

    @classmethod
    def build(cls, schema: dict[str, Any], strict: bool) -> _CrdValidator:
        root = crd_to_jsonschema(schema, strict)
        properties = dict(root.get("properties") or {})
        # Object metadata is the API server's (ObjectMeta), and status is written by controllers.
        properties.update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}})
        properties["metadata"] = {"type": "object"}
        properties["status"] = {}
        root.update({"type": "object", "properties": properties})
        if strict:
            root["additionalProperties"] = False
        return cls(schema, jsonschema.Draft202012Validator(root))

    def iter_errors(self, doc: dict[str, Any]) -> Iterator[Any]:
        return iter(self.validator.iter_errors(_as_admitted(doc, self.raw)))


# --- validating documents ----------------------------------------------------------------


def _path(parts: Iterable[object]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _shorten(message: str) -> str:
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."


def _messages(error: Any) -> list[str]:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties") or {}
        patterns = list((error.schema.get("patternProperties") or {}).keys())
        instance = error.instance if isinstance(error.instance, dict) else {}
        unknown = [
            key
            for key in instance
            if key not in known and not any(_usable_pattern(p) and re.search(p, str(key)) for p in patterns)
        ]
        if unknown:
            return [f"{_path([*where, key])}: unknown field" for key in unknown]
    if error.validator == "format" and error.validator_value == "byte":
        return [f"{_path(where)}: not valid base64"]
    if error.validator == "type":
        # kubernetes-validate's schemas allow null everywhere: name only the real type.
        wanted = [
            t
            for t in ([error.validator_value] if isinstance(error.validator_value, str) else error.validator_value)
            if t != "null"
        ]
        got = _shorten(repr(error.instance))
        return [f"{_path(where)}: {got} is not of type {' or '.join(wanted)}"]
    return [f"{_path(where)}: {_shorten(error.message)}"]


def _for_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as the API server would decode it: normalized and digested Secret data made base64."""
    if doc.get("kind") == "Secret" and isinstance(doc.get("data"), dict):
        data = {
            key: SECRET_PLACEHOLDER if value == NORMALIZED or is_digest(value) else value
            for key, value in doc["data"].items()
        }
        return {**doc, "data": data}
    return doc


def _validate_one(
    doc: dict[str, Any],
    schema_dir: str,
    crds: Mapping[Gvk, dict[str, Any]],
    crd_validators: dict[Gvk, _CrdValidator],
    strict: bool,
) -> tuple[Severity, list[str]]:
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    missing = [key for key, value in (("apiVersion", api_version), ("kind", kind)) if not value]
    if missing:
        return "error", [f"document has no {' or '.join(missing)}"]
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return "error", ["apiVersion and kind must be strings"]
    problems = []
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        problems.append("metadata: missing or not a mapping")
    elif not meta.get("name") and not meta.get("generateName"):
        problems.append("metadata.name: missing")
    group, version = _split_api_version(api_version)
    builtin = _builtin_validator(schema_dir, group, version, kind)
    if builtin is not None:
        raised = builtin.iter_errors(_for_schema(doc))
    elif (group, version, kind) in crds:
        gvk = (group, version, kind)
        if gvk not in crd_validators:
            crd_validators[gvk] = _CrdValidator.build(crds[gvk], strict)
        raised = crd_validators[gvk].iter_errors(doc)
    else:
        if problems:
            return "error", problems
        served = sorted(f"{v}" for g, v, k in crds if g == group and k == kind)
        hint = f" (the known CRD serves {', '.join(served)})" if served else ""
        return "warning", [f"no schema for {group or 'core'}/{version}/{kind}; not validated{hint}"]
    found = sorted(raised, key=lambda e: [str(p) for p in e.absolute_path])
    # int-or-string nodes fail both their type and their anyOf: the type says it better.
    typed = {tuple(e.absolute_path) for e in found if e.validator == "type"}
    for error in found:
        if error.validator not in {"anyOf", "oneOf"} or tuple(error.absolute_path) not in typed:
            problems += _messages(error)
    return "error", problems


def validate_documents(
    docs: Iterable[dict[str, Any]],
    k8s_version: str,
    crds: Mapping[Gvk, dict[str, Any]],
    strict: bool = True,
    source: str = "",
) -> list[Diagnostic]:
    """Findings for `docs` against Kubernetes `k8s_version` and the CRD schemas `crds`.

    Built-in kinds: kubernetes-validate's schemas (strict: unknown fields are errors). Custom
    resources with a CRD in `crds`: that schema (see `crd_to_jsonschema`). Custom resources
    without one: a warning. `source` labels the findings (the file the documents came from).
    """
    schema_dir = _schema_dir(k8s_version, strict)
    crd_validators: dict[Gvk, _CrdValidator] = {}
    findings = []
    for doc in docs:
        ident = resource_id(doc)
        severity, messages = _validate_one(doc, schema_dir, crds, crd_validators, strict)
        findings += [Diagnostic(source, None, ident, severity, message) for message in messages]
    return findings


def offline_image_findings(docs: Iterable[dict[str, Any]], registry: str, source: str = "") -> list[Diagnostic]:
    """An error for every image in `docs` not pulled from `registry` (host[:port][/path])."""
    prefix = registry.rstrip("/") + "/"
    release = Path(source).stem if source else ""
    named = f" (release {release})" if release else ""
    findings = []
    for doc in docs:
        for image in sorted(images(doc)):
            if not image.startswith(prefix):
                message = f"image {image} is not pulled from the offline registry {registry}{named}"
                findings.append(Diagnostic(source, None, resource_id(doc), "error", message))
    return findings


def _rendered_files(layout: RepoLayout, env: str) -> list[Path]:
    folder = layout.rendered_dir / env
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def validate_rendered(layout: RepoLayout, envs: list[str]) -> list[Diagnostic]:
    """Findings for every file of rendered/<env>/ of each environment (every one when none named).

    Each environment is validated against its own Kubernetes version; where its settings name
    an `offline.registry`, every image must come from it. Raises AstragoError when an
    environment is unknown or has not been rendered.
    """
    selected = environments.select(layout, envs or None)
    missing = [env.name for env in selected if not _rendered_files(layout, env.name)]
    if missing:
        flags = " ".join(f"--env {name}" for name in missing)
        raise AstragoError(
            f"not rendered: {', '.join(missing)} (no {layout.rendered_dir}/<env>/*.yaml); run `inv render {flags}`"
        )
    with charts_lock(layout).shared("validate"):  # no sync swaps a chart's CRDs while they are read
        chart_crds = crd_schemas(layout)
    findings: list[Diagnostic] = []
    for env in selected:
        version = kubernetes_version(layout, env.name)
        offline = environments.settings(layout, env).get("offline")
        registry = str((offline.get("registry") if isinstance(offline, dict) else None) or "")
        loaded: dict[str, list[dict[str, Any]]] = {}
        for path in _rendered_files(layout, env.name):
            source = str(path.relative_to(layout.root)) if path.is_relative_to(layout.root) else str(path)
            try:
                loaded[source] = load_documents(yaml.read_text(path), source)
            except yaml.YamlError as exc:
                findings.append(Diagnostic(source, exc.line, "", "error", f"not valid YAML: {_shorten(exc.reason)}"))
            except FileAccessError as exc:
                findings.append(Diagnostic(source, exc.line, "", "error", exc.reason))
        crds = {**chart_crds, **crd_schemas_of(doc for docs in loaded.values() for doc in docs)}
        for source, docs in loaded.items():
            findings += validate_documents(docs, version, crds, source=source)
            if registry:
                findings += offline_image_findings(docs, registry, source)
    return findings
