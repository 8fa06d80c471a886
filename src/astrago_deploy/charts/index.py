"""Helm repository indexes (`index.yaml`) and chart version ordering.

Versions are kept as upstream spells them (`v25.3.4`, `4.11.0`); ordering is semver with a
leading `v` ignored. Pre-releases are considered only when asked for. Each repository index
is fetched at most once per `IndexCache`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import semver

from astrago_deploy.core import yaml
from astrago_deploy.core.errors import FetchError
from astrago_deploy.core.http import Fetcher, redact_url, resolve_reference

MAX_INDEX_BYTES = 64 * 1024 * 1024


def parse_version(version: str) -> semver.Version | None:
    """The semver of an upstream version string (leading `v` ignored), or None."""
    text = version.strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    try:
        return semver.Version.parse(text, optional_minor_and_patch=True)
    except (ValueError, TypeError):
        return None


def version_key(version: str) -> semver.Version:
    """A sort key: the semver of `version`, or 0.0.0 when it is not semver."""
    return parse_version(version) or semver.Version(0)


def bump_kind(old: str, new: str) -> str:
    """major | minor | patch | prerelease | none | downgrade | unknown."""
    a, b = parse_version(old), parse_version(new)
    if a is None or b is None:
        return "unknown"
    if b == a:
        return "none"
    if b < a:
        return "downgrade"
    if b.major != a.major:
        return "major"
    if b.minor != a.minor:
        return "minor"
    if b.patch != a.patch:
        return "patch"
    return "prerelease"


@dataclass(frozen=True)
class ChartVersion:
    name: str
    version: str
    urls: tuple[str, ...]
    digest: str  # sha256:<hex>, or "" when the index gives none
    app_version: str
    annotations: dict[str, str]
    raw: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def semver(self) -> semver.Version | None:
        return parse_version(self.version)

    @property
    def prerelease(self) -> bool:
        parsed = self.semver
        return bool(parsed and parsed.prerelease)


@dataclass(frozen=True)
class RepoIndex:
    url: str
    entries: dict[str, list[ChartVersion]]

    def versions(self, chart: str, prereleases: bool = False) -> list[ChartVersion]:
        """Versions of `chart` that parse as semver, newest first."""
        found = [v for v in self.entries.get(chart, []) if v.semver is not None]
        if not prereleases:
            found = [v for v in found if not v.prerelease]
        return sorted(found, key=lambda v: v.semver or semver.Version(0), reverse=True)

    def find(self, chart: str, version: str) -> ChartVersion:
        if chart not in self.entries:
            raise FetchError(f"chart {chart!r} is not in the repository index {redact_url(self.url)}")
        for entry in self.entries[chart]:
            if entry.version == version:
                return entry
        wanted = parse_version(version)
        close = [e.version for e in self.entries[chart] if wanted is not None and e.semver == wanted]
        hint = f" (the index spells it {close[0]!r})" if close else ""
        raise FetchError(f"{chart} {version} is not in the repository index {redact_url(self.url)}{hint}")

    def newest(self, chart: str, prereleases: bool = False, major: int | None = None) -> ChartVersion | None:
        for entry in self.versions(chart, prereleases):
            if major is None or (entry.semver is not None and entry.semver.major == major):
                return entry
        return None

    def archive_url(self, entry: ChartVersion) -> str:
        if not entry.urls:
            raise FetchError(f"{entry.name} {entry.version}: the index lists no download URL")
        return resolve_reference(self.url, entry.urls[0])


def parse_index(url: str, payload: bytes) -> RepoIndex:
    try:
        doc = yaml.load(payload, f"{redact_url(url)}/index.yaml")
    except yaml.YamlError as exc:
        # A bad index is a failed fetch (a proxy's error page, a truncated body), not our config.
        raise FetchError(str(exc)) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
        raise FetchError(f"{redact_url(url)}/index.yaml has no 'entries' mapping")
    entries: dict[str, list[ChartVersion]] = {}
    for name, versions in doc["entries"].items():
        parsed = []
        for item in versions or []:
            if not isinstance(item, dict) or "version" not in item:
                continue
            digest = str(item.get("digest") or "")
            parsed.append(
                ChartVersion(
                    name=str(name),
                    version=str(item["version"]),
                    urls=tuple(str(u) for u in item.get("urls") or []),
                    digest=f"sha256:{digest}" if digest and not digest.startswith("sha256:") else digest,
                    app_version=str(item.get("appVersion") or ""),
                    annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
                    raw=item,
                )
            )
        entries[str(name)] = parsed
    return RepoIndex(url, entries)


class IndexCache:
    """Fetches each repository index once (thread-safe), through the fetcher's mirror."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._indexes: dict[str, RepoIndex] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0

    def get(self, repository: str) -> RepoIndex:
        key = repository.rstrip("/")
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._indexes:
                payload = self.fetcher.get(f"{key}/index.yaml", MAX_INDEX_BYTES)
                self.fetches += 1
                self._indexes[key] = parse_index(key, payload)
            return self._indexes[key]
