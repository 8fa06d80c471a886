"""Helm repository indexes (`index.yaml`) and chart version ordering.

Versions are kept as upstream spells them (`v25.3.4`, `4.11.0`); ordering is semver with a
leading `v` ignored, for index entries and OCI tags alike (`newest_first`, `newest`).
Pre-releases are considered only when asked for. Each repository index
is fetched at most once per `IndexCache`.

An index is untrusted input: a chart name or version becomes a folder name
(`charts/external/NAME-VERSION`) and a branch name, so an entry is kept only when its name is
a valid chart name and its version a plain version string, both of bounded length (the one
rule, `model.chart_names`, which the lock applies too); any other entry, or one that is not a mapping
with a list of URL strings, is left out as if the index did not list it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import semver

from astrago_deploy.core import yaml
from astrago_deploy.core.errors import FetchError
from astrago_deploy.core.http import Fetcher, redact_url, resolve_reference
from astrago_deploy.model.chart_names import chart_name_problem, chart_version_problem

MAX_INDEX_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


def parse_version(version: str) -> semver.Version | None:
    """The semver of an upstream version string (leading `v` ignored), or None."""
    text = version.strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    try:
        return semver.Version.parse(text, optional_minor_and_patch=True)
    except (ValueError, TypeError):
        return None


def newest_first(items: Iterable[T], spelled: Callable[[T], str], prereleases: bool = False) -> list[T]:
    """The items whose version (`spelled(item)`) parses as semver, newest first; pre-releases
    only when asked for. Equal versions (`v1.0.0`, `1.0.0`) keep the order they came in."""
    parsed = [(v, item) for item in items if (v := parse_version(spelled(item))) is not None]
    kept = [(v, item) for v, item in parsed if prereleases or not v.prerelease]
    return [item for _, item in sorted(kept, key=lambda pair: pair[0], reverse=True)]


def newest(
    items: Iterable[T], spelled: Callable[[T], str], prereleases: bool = False, major: int | None = None
) -> T | None:
    """The newest item by semver (see `newest_first`), within one major version if given."""
    for item in newest_first(items, spelled, prereleases):
        version = parse_version(spelled(item))
        if major is None or (version is not None and version.major == major):
            return item
    return None


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
        return newest_first(self.entries.get(chart, []), _spelled, prereleases)

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
        return newest(self.entries.get(chart, []), _spelled, prereleases, major)

    def archive_url(self, entry: ChartVersion) -> str:
        if not entry.urls:
            raise FetchError(f"{entry.name} {entry.version}: the index lists no download URL")
        return resolve_reference(self.url, entry.urls[0])


def _spelled(entry: ChartVersion) -> str:
    return entry.version


def parse_index(url: str, payload: bytes) -> RepoIndex:
    try:
        doc = yaml.load(payload, f"{redact_url(url)}/index.yaml")
    except yaml.YamlError as exc:
        # A bad index is a failed fetch (a proxy's error page, a truncated body), not our config.
        fix = "the repository served a broken index: check its URL, or retry later"
        raise FetchError(str(exc.with_fix(fix))) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
        raise FetchError(f"{redact_url(url)}/index.yaml has no 'entries' mapping")
    entries: dict[str, list[ChartVersion]] = {}
    for name, versions in doc["entries"].items():
        if not isinstance(name, str) or chart_name_problem(name) or not isinstance(versions, list):
            continue
        entries[name] = [entry for item in versions if (entry := _entry(name, item)) is not None]
    return RepoIndex(url, entries)


def _entry(name: str, item: object) -> ChartVersion | None:
    """One index entry of chart `name`, or None when it is malformed or names an unusable version."""
    if not isinstance(item, dict):
        return None
    version = item.get("version")
    # A YAML number (`version: 1.10`) is not how upstream spells a version: refuse it, as the lock does.
    if not isinstance(version, str) or chart_version_problem(version):
        return None
    urls = item.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        return None
    digest = str(item.get("digest") or "")
    annotations = item.get("annotations")
    return ChartVersion(
        name=name,
        version=version,
        urls=tuple(urls),
        digest=f"sha256:{digest}" if digest and not digest.startswith("sha256:") else digest,
        app_version=str(item.get("appVersion") or ""),
        annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        raw=item,
    )


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
