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
from astrago_deploy.core.errors import ConfigError
from astrago_deploy.core.yaml import CommentedMap, EditedFile

FIELDS = ("repository", "version", "url", "digest", "manifest", "tree")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
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


class VersionsLock:
    """The parsed lock; edits keep the original document's comments and layout."""

    def __init__(self, path: Path, edited: EditedFile) -> None:
        self.path = path
        self._file = edited
        self._doc = edited.doc

    @classmethod
    def load(cls, path: Path) -> VersionsLock:
        try:
            edited = yaml.load_for_edit(path, expected="a mapping with a 'charts:' mapping")
        except FileNotFoundError:
            doc = CommentedMap()
            doc["charts"] = CommentedMap()
            return cls(path, EditedFile(doc))
        doc = edited.doc
        if not isinstance(doc.get("charts"), (dict, type(None))):
            raise ConfigError(f"{path}: expected a mapping with a 'charts:' mapping")
        if doc.get("charts") is None:
            doc["charts"] = CommentedMap()
        lock = cls(path, edited)
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

    def line_of(self, name: str) -> int | None:
        """The 1-based line of chart `name`'s entry, for messages that point at it."""
        try:
            return int(self._charts.lc.key(name)[0]) + 1
        except (KeyError, TypeError, AttributeError):  # a chart added in memory has no line
            return None

    def get(self, name: str) -> LockedChart:
        entry = self._charts.get(name)
        if entry is None:
            raise ConfigError(f"chart {name!r} is not in {self.path}")
        if not isinstance(entry, dict):
            raise ConfigError(f"{self.path}: charts.{name} must be a mapping")
        unknown = sorted(set(map(str, entry)) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{self.path}: charts.{name} has unknown keys: {', '.join(unknown)}")
        values = {key: str(entry.get(key) or "") for key in FIELDS}
        if not _NAME.match(name):
            raise ConfigError(f"{self.path}: chart name {name!r} is not a valid chart name")
        for key in ("repository", "version"):
            if not values[key]:
                raise ConfigError(f"{self.path}: charts.{name}.{key} is missing")
        for key in ("digest", "manifest", "tree"):
            if values[key] and not _SHA.match(values[key]):
                raise ConfigError(f"{self.path}: charts.{name}.{key} must look like sha256:<64 hex digits>")
        if not re.match(r"^(https?|oci|file)://", values["repository"]):
            raise ConfigError(f"{self.path}: charts.{name}.repository must be an http(s):// or oci:// URL")
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
