"""The override check: every value key we set must exist in what it configures.

In Helm a misspelt key or a wrong nesting level silently does nothing (the Astrago
deployment once lost all its gpu-operator settings by wrapping them under `gpu-operator:`
for a release whose chart *is* gpu-operator). This check reads every
`environments/<layer>/releases/<release>.yaml` and compares each key path with the chart's
defaults (`values.yaml`, subchart defaults, `values.schema.json`); and every layer's
`values.yaml` with the environment settings declared in `environments/base/values.yaml`.
Problems name the file, the line and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from astrago_deploy.charts.values import ChartValues
from astrago_deploy.core import diagnostics, yaml
from astrago_deploy.core.diagnostics import Diagnostic, shown_path
from astrago_deploy.core.errors import ConfigError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.yaml import CommentedMap
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.model.releases import ReleaseRef, declared_releases

ANY = object()  # a subtree whose keys are free-form


def _problem(shown: str, line: int, key: str, message: str, fix: str = "") -> Diagnostic:
    return Diagnostic(shown, line, key, "error", message, fix)


def _safe_yaml(path: Path) -> Any:
    try:
        return yaml.read(path)
    except FileNotFoundError:
        return None


def _schema_child(schema: dict[str, Any] | None, key: str) -> tuple[bool, dict[str, Any] | None]:
    """(is the key allowed by the schema, the child schema) for an object schema."""
    if not isinstance(schema, dict):
        return False, None
    props = schema.get("properties") or {}
    if key in props:
        return True, props[key] if isinstance(props[key], dict) else None
    for pattern, child in (schema.get("patternProperties") or {}).items():
        if _pattern_matches(pattern, key):
            return True, child if isinstance(child, dict) else None
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return True, additional
    if additional is True or (additional is None and not props and schema.get("type") in (None, "object")):
        return True, None
    return False, None


def _pattern_matches(pattern: object, key: str) -> bool:
    """A schema's pattern (ECMA-262; most are Python-readable too) matches `key`. One Python
    cannot read allows nothing here: the key is then reported, never a traceback."""
    try:
        return isinstance(pattern, str) and re.search(pattern, key) is not None
    except re.error:
        return False


class _Unreadable(Exception):
    def __init__(self, problem: Diagnostic) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _load_with_lines(path: Path, shown: str) -> CommentedMap | None:
    """Round-trip load (line numbers); invalid YAML and duplicate keys are problems too."""
    try:
        doc = yaml.load_for_edit(path).doc
    except yaml.YamlError as exc:
        raise _Unreadable(diagnostics.yaml_error(shown, exc)) from exc
    except ConfigError as exc:  # not a mapping: helm would refuse these values too
        raise _Unreadable(_problem(shown, 1, "", str(exc).removeprefix(f"{path}: "))) from exc
    return doc or None


def _line(node: CommentedMap, key: Any) -> int:
    try:
        return int(node.lc.key(key)[0]) + 1
    except (KeyError, TypeError, AttributeError):
        return int(node.lc.line) + 1


def check_chart_overrides(
    path: Path, release: ReleaseRef, chart: ChartValues, root: Path | None = None
) -> list[Diagnostic]:
    shown = shown_path(path, root) if root else str(path)
    doc = _load_with_lines(path, shown)
    if doc is None:
        return []
    problems: list[Diagnostic] = []

    def walk(node: CommentedMap, defaults: Any, schema: dict[str, Any] | None, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            line = _line(node, key)
            if not prefix and key == "global":
                continue
            if not prefix and key in chart.subcharts:
                sub = chart.subcharts[key]
                if isinstance(value, CommentedMap):
                    walk(value, sub.defaults, sub.schema, f"{dotted}.")
                continue
            known = isinstance(defaults, dict) and key in defaults
            allowed_by_schema, child_schema = _schema_child(schema, str(key))
            if not known and not allowed_by_schema:
                message = f"not a value of chart {chart.name} (release {release.name})"
                fix = ""
                if not prefix and key in (release.name, chart.name):
                    message += f"; values of release {release.name} are already at chart {chart.name}'s top level"
                    fix = f"remove the '{key}:' wrapper"
                problems.append(_problem(shown, line, dotted, message, fix))
                continue
            default = defaults.get(key) if isinstance(defaults, dict) else None
            if isinstance(value, CommentedMap):
                if known and default is not None and not isinstance(default, dict):
                    problems.append(
                        _problem(
                            shown,
                            line,
                            dotted,
                            f"chart {chart.name} has a {type(default).__name__} here, not a mapping (wrong nesting?)",
                        )
                    )
                    continue
                # An empty default mapping ({}), a null default or a schema-only key is free-form
                # unless the schema says more.
                free_form = (not known or default is None or default == {}) and child_schema is None
                if not free_form:
                    walk(value, default if isinstance(default, dict) else {}, child_schema, f"{dotted}.")

    walk(doc, chart.defaults, chart.schema, "")
    return problems


def _settings_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out[f"{prefix}{key}"] = value
            if isinstance(value, dict):
                out.update(_settings_keys(value, f"{prefix}{key}."))
    return out


def check_settings(path: Path, base: dict[str, Any], release_names: set[str], root: Path) -> list[Diagnostic]:
    """A layer's values.yaml may only set settings that environments/base/values.yaml declares."""
    shown = shown_path(path, root)
    doc = _load_with_lines(path, shown)
    if doc is None:
        return []
    declared = _settings_keys(base)
    problems: list[Diagnostic] = []

    def walk(node: CommentedMap, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            line = _line(node, key)
            if prefix == "releases." and key not in release_names:
                problems.append(_problem(shown, line, dotted, f"there is no release {key!r}"))
                continue
            if dotted not in declared and not (prefix == "releases." and key in release_names):
                if prefix.startswith("releases."):
                    if str(key) != "enabled":
                        problems.append(_problem(shown, line, dotted, "release toggles take only 'enabled'"))
                    continue
                fix = ""
                if not prefix and key in release_names:
                    target = shown_path(path.parent / "releases" / f"{key}.yaml", root)
                    fix = f"chart values of release {key} go in {target}"
                message = "not an environment setting (declared in environments/base/values.yaml)"
                problems.append(_problem(shown, line, dotted, message, fix))
                continue
            if isinstance(value, CommentedMap):
                base_value = declared.get(dotted)
                if base_value is not None and not isinstance(base_value, dict):
                    problems.append(_problem(shown, line, dotted, "a mapping where the base declares a value"))
                    continue
                if base_value == {}:
                    continue
                walk(value, f"{dotted}.")

    walk(doc, "")
    return problems


def check_overrides(layout: RepoLayout) -> list[Diagnostic]:
    releases = {r.name: r for r in declared_releases(layout)}
    lock = VersionsLock.load(layout.lock_file)
    charts: dict[str, ChartValues | None] = {}
    problems: list[Diagnostic] = []
    base_file = layout.environments_dir / "base" / "values.yaml"
    base = _safe_yaml(base_file) or {}
    for layer in environments.all_layer_dirs(layout):
        settings = layer / "values.yaml"
        try:
            if settings.is_file() and settings != base_file:
                problems += check_settings(settings, base, set(releases), layout.root)
        except _Unreadable as exc:
            problems.append(exc.problem)
        for path in sorted((layer / "releases").glob("*.y*ml")):
            name = path.name.rsplit(".", 1)[0]
            shown = shown_path(path, layout.root)
            release = releases.get(name)
            if release is None:
                problems.append(_problem(shown, 1, name, f"there is no release {name!r}; this file does nothing"))
                continue
            if name not in charts:
                chart_dir = release.chart_dir(layout, lock)
                charts[name] = ChartValues.load(chart_dir) if chart_dir and chart_dir.is_dir() else None
            chart = charts[name]
            if chart is None:
                problems.append(_problem(shown, 1, name, "its chart is not vendored", "run `inv charts.sync`"))
                continue
            try:
                problems += check_chart_overrides(path, release, chart, layout.root)
            except _Unreadable as exc:
                problems.append(exc.problem)
    return problems
