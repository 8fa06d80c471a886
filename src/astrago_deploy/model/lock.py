"""`charts/versions.lock`: the one place where upstream chart versions live.

Read with a round-trip YAML loader and written back surgically: comments, key order and
quoting survive, and an edit touches only the lines it must. Writes are atomic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.errors import ConfigError, YamlError
from astrago_deploy.core.yaml import CommentedMap, EditedFile
from astrago_deploy.model.chart_names import chart_name_problem, chart_version_problem, shortened

FIELDS = ("repository", "version", "url", "digest", "manifest", "tree")
_SHA = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class LockedChart:
    name: str
    repository: str
    version: str
    url: str = ""
    digest: str = ""  # sha256:<hex> of the chart archive
    manifest: str = ""  # sha256:<hex> of the OCI manifest (oci:// repositories only)
    tree: str = ""  # sha256:<hex> content digest of the extracted tree

    @property
    def is_oci(self) -> bool:
        return self.repository.startswith("oci://")

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def complete(self) -> bool:
        pinned = bool(self.manifest) if self.is_oci else bool(self.url)
        return pinned and bool(self.digest) and bool(self.tree)


class LockEntryError(ConfigError):
    """An entry of the lock is invalid: `line` (1-based, None when unknown) and `reason` say where
    and what, so a check can show them as a diagnostic."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


class VersionsLock:
    """The parsed lock; edits keep the original document's comments and layout."""

    def __init__(self, path: Path, edited: EditedFile, text: str = "") -> None:
        self.path = path
        self._file = edited
        self._doc = edited.doc
        self._lines = text.splitlines()

    @classmethod
    def load(cls, path: Path) -> VersionsLock:
        try:
            text = yaml.read_text(path)
        except FileNotFoundError:
            doc = CommentedMap()
            doc["charts"] = CommentedMap()
            return cls(path, EditedFile(doc))
        try:
            edited = yaml.parse_for_edit(text, path, expected="a mapping with a 'charts:' mapping")
        except YamlError as exc:
            raise exc.with_fix("repair the lock there by hand; it is YAML") from exc
        doc = edited.doc
        if not isinstance(doc.get("charts"), (dict, type(None))):
            raise ConfigError(f"{path}: expected a mapping with a 'charts:' mapping")
        if doc.get("charts") is None:
            doc["charts"] = CommentedMap()
        lock = cls(path, edited, text)
        for name in lock._charts:
            if not isinstance(name, str):
                # `123:` would be the number 123, which no chart name lookup finds.
                raise LockEntryError(
                    path,
                    lock.line_of(name),
                    f"charts.{name}: a chart key must be the chart's name as a string; quote it ('{name}':)",
                )
        lock.charts()  # validate every entry now, with file context
        return lock

    @property
    def _charts(self) -> CommentedMap:
        charts: CommentedMap = self._doc["charts"]
        return charts

    def names(self) -> list[str]:
        return [str(name) for name in self._charts]

    def charts(self) -> list[LockedChart]:
        return [self.get(name) for name in self.names()]

    def has(self, name: str) -> bool:
        return name in self._charts

    def line_of(self, name: object) -> int | None:
        """The 1-based line of chart `name`'s entry, for messages that point at it."""
        try:
            return int(self._charts.lc.key(name)[0]) + 1
        except (KeyError, TypeError, AttributeError):  # a chart added in memory has no line
            return None

    def _written(self, entry: Any, key: str) -> tuple[int | None, str]:
        """The line of `entry[key]` and the value as the file spells it (for messages)."""
        try:
            line, column = entry.lc.value(key)
        except (KeyError, TypeError, AttributeError):
            return None, str(entry[key])
        written = self._lines[line][column:].split(" #", 1)[0].strip() if line < len(self._lines) else ""
        return line + 1, written or str(entry[key])

    def get(self, name: str) -> LockedChart:
        entry = self._charts.get(name)
        if entry is None:
            raise ConfigError(f"chart {name!r} is not in {self.path}")
        line = self.line_of(name)
        if not isinstance(entry, dict):
            raise LockEntryError(self.path, line, f"charts.{name} must be a mapping")
        unknown = sorted(set(map(str, entry)) - set(FIELDS))
        if unknown:
            raise LockEntryError(self.path, line, f"charts.{name} has unknown keys: {', '.join(unknown)}")
        if problem := chart_name_problem(name):
            raise LockEntryError(self.path, line, f"chart name {shortened(name)} is not a valid chart name: {problem}")
        values: dict[str, str] = {}
        for key in FIELDS:
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                # `version: 1.10` is the number 1.1: refuse it rather than lock another version.
                at, written = self._written(entry, key)
                raise LockEntryError(
                    self.path,
                    at,
                    f"charts.{name}.{key} is {_kind(value)}, not a string: quote it as upstream spells it "
                    f'({key}: "{written}")',
                )
            values[key] = value or ""
        for key in ("repository", "version"):
            if not values[key]:
                raise LockEntryError(self.path, line, f"charts.{name}.{key} is missing")
        if problem := chart_version_problem(values["version"]):
            # It becomes part of a folder name: `1.0.0/../../x` would lead out of charts/external.
            raise LockEntryError(
                self.path,
                self._written(entry, "version")[0],
                f"charts.{name}.version {shortened(values['version'])} is not a chart version: {problem}",
            )
        for key in ("digest", "manifest", "tree"):
            if values[key] and not _SHA.fullmatch(values[key]):
                at = self._written(entry, key)[0]
                raise LockEntryError(self.path, at, f"charts.{name}.{key} must look like sha256:<64 hex digits>")
        if not re.match(r"(https?|oci)://", values["repository"]):
            raise LockEntryError(
                self.path,
                self._written(entry, "repository")[0],
                f"charts.{name}.repository must be an http(s):// or oci:// URL "
                "(a local mirror is given by CHARTS_MIRROR, not by the lock)",
            )
        return LockedChart(name=name, **values)

    def set(self, chart: LockedChart) -> None:
        """Add or update an entry; only changed fields are rewritten, new charts go last."""
        entry = self._charts.get(chart.name)
        if entry is None:
            entry = CommentedMap()
            self._charts[chart.name] = entry
        last_before = list(entry)[-1] if entry else None
        trailing = entry.ca.items.pop(last_before, None) if last_before is not None else None
        for key in FIELDS:
            value = getattr(chart, key)
            if value:
                if entry.get(key) != value:
                    entry[key] = value
            elif key in entry:
                del entry[key]
        # A comment after an entry's last line belongs to what follows (the next chart's
        # comment block): keep it after the entry's new last line.
        if trailing is not None and entry:
            entry.ca.items[list(entry)[-1]] = trailing

    def render(self) -> str:
        return self._file.text()

    def save(self) -> bool:
        """Write atomically if the text changed; returns whether it did."""
        text = self.render()
        try:
            if self.path.read_bytes() == text.encode("utf-8"):
                return False
        except FileNotFoundError:
            pass
        atomic.write_text(self.path, text)
        return True


def as_dict(chart: LockedChart) -> dict[str, Any]:
    return {key: getattr(chart, key) for key in ("name", *FIELDS) if getattr(chart, key)}
