"""The releases the helmfile declares, as helmfile itself reads them.

`helmfile -e ENV list --output json` (offline, well under a second) is the one answer to which
releases exist, with their namespace, chart, labels and whether they are installed: no regex
guesses at the tier files' YAML. Answers are cached per process, keyed by the content of every
file they depend on, so an edited tier file is seen and an unchanged one costs nothing.

A text scan of the tier files adds only what helmfile cannot say: the file and line a release is
written on (for diagnostics), and the chart as written when the lock lacks the name it indexes.
Used by checks that must run offline and fast (charts.verify, the override check, scaffolding,
upgrades, deploy selectors); the post-renderer never comes here.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from astrago_deploy.core import files
from astrago_deploy.core.errors import ConfigError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.toolchain.pinned import PinnedTools

# The tier files under helmfile/releases/, in deployment order.
TIERS = ("infrastructure", "monitoring", "security", "applications")

_CHART_REF = re.compile(r'index\s+\.Charts\s+"(?P<name>[^"]+)"')
_EXTERNAL = "../charts/external/"
_CUSTOM = "../charts/custom/"
# A sequence item's first line (`- name: x`, `  - chart: y`) and a key line of the item's mapping.
_ITEM = re.compile(r"^(?P<indent>\s*)-(?P<gap>\s+)(?P<rest>\S.*)$")
_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?:\s+(?P<value>.*))?$")
_LIST_TIMEOUT = 120


@dataclass(frozen=True)
class ReleaseRef:
    name: str
    tier_file: Path
    line: int
    namespace: str
    chart_expr: str  # the chart as helmfile resolved it (as written, when helmfile could not resolve it)
    lock_name: str | None = None  # the versions.lock entry the release goes through, if any
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    installed: bool = True

    @property
    def locked_chart(self) -> str | None:
        """The lock entry this release uses, if it goes through the lock."""
        if self.lock_name is not None:
            return self.lock_name
        match = _CHART_REF.search(self.chart_expr)
        return match["name"] if match else None

    @property
    def custom_chart(self) -> str | None:
        value = self.chart_expr
        return value.removeprefix(_CUSTOM).rstrip("/") if value.startswith(_CUSTOM) else None

    @property
    def tier(self) -> str:
        return self.labels.get("tier", "")

    def chart_dir(self, layout: RepoLayout, lock: VersionsLock | None = None) -> Path | None:
        """The chart folder this release renders, or None if it cannot be resolved."""
        if self.custom_chart:
            return layout.custom_dir / self.custom_chart
        name = self.locked_chart
        if name:
            lock = lock or VersionsLock.load(layout.lock_file)
            if lock.has(name):
                chart = lock.get(name)
                return layout.chart_dir(chart.name, chart.version)
        return None


@dataclass(frozen=True)
class _Written:
    """Where a release is written in a tier file, and its chart as written."""

    tier_file: Path
    line: int
    chart: str


_cache: dict[str, list[ReleaseRef]] = {}
_cache_lock = threading.Lock()


def releases(layout: RepoLayout, env: str, tools: PinnedTools | None = None) -> list[ReleaseRef]:
    """Every release helmfile declares for `env` (installed or not), in helmfile's order."""
    key = _inputs_key(layout, env)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    tools = tools or PinnedTools(layout)
    out = tools.run(
        "helmfile",
        ["--file", str(layout.helmfile), "--environment", env, "list", "--output", "json"],
        cwd=layout.helmfile_dir,
        timeout=_LIST_TIMEOUT,
    )
    found = _from_listing(layout, env, out)
    with _cache_lock:
        _cache[key] = found
    return found


def declared_releases(layout: RepoLayout, tools: PinnedTools | None = None) -> list[ReleaseRef]:
    """Every release any environment declares, each once (as the first environment declaring it
    has it), in helmfile's order."""
    seen: dict[str, ReleaseRef] = {}
    for env in environments.discover(layout):
        for ref in releases(layout, env.name, tools):
            seen.setdefault(ref.name, ref)
    return list(seen.values())


def _from_listing(layout: RepoLayout, env: str, out: str) -> list[ReleaseRef]:
    where = f"`helmfile -e {env} list --output json`"
    try:
        listing = json.loads(out or "[]")
    except ValueError as exc:
        raise ConfigError(f"{where} did not print JSON ({exc}): {out[:200]!r}") from exc
    if not isinstance(listing, list) or not all(isinstance(item, dict) for item in listing):
        raise ConfigError(f"{where} printed {type(listing).__name__}, not a list of releases")
    lock_dirs = _lock_dirs(layout)
    written = _written(layout)
    found = []
    for item in listing:
        name = str(item.get("name") or "")
        if not name:
            raise ConfigError(f"{where} listed a release without a name: {item}")
        labels = _labels(str(item.get("labels") or ""))
        chart = str(item.get("chart") or "")
        spot = written.get(name) or _Written(_tier_file(layout, labels.get("tier", "")), 1, "")
        lock_name = lock_dirs.get(chart.rstrip("/"))
        if lock_name is None and spot.chart and not _resolved(chart):
            # helmfile prints `<no value>` for `{{ index .Charts "X" }}` when X is not locked:
            # the chart as written still names what the release meant.
            chart = spot.chart
        found.append(
            ReleaseRef(
                name,
                spot.tier_file,
                spot.line,
                str(item.get("namespace") or ""),
                chart,
                lock_name,
                labels,
                bool(item.get("installed", True)),
            )
        )
    return found


def _resolved(chart: str) -> bool:
    return bool(chart) and chart != "<no value>"


def _labels(text: str) -> dict[str, str]:
    """helmfile's `key:value,key:value` label column."""
    pairs = (item.partition(":") for item in text.split(",") if item)
    return {key: value for key, _, value in pairs}


def _lock_dirs(layout: RepoLayout) -> dict[str, str]:
    """The helmfile's chart path of each locked chart -> its lock name (as helmfile.yaml.gotmpl maps them)."""
    if not layout.lock_file.is_file():
        return {}
    return {f"{_EXTERNAL}{c.name}-{c.version}": c.name for c in VersionsLock.load(layout.lock_file).charts()}


def _tier_file(layout: RepoLayout, tier: str) -> Path:
    candidate = layout.releases_dir / f"{tier}.yaml.gotmpl"
    return candidate if tier and candidate.is_file() else layout.helmfile


def _written(layout: RepoLayout) -> dict[str, _Written]:
    """Release name -> where it is written, from a text scan of the tier files (first one wins)."""
    spots: dict[str, _Written] = {}
    for tier_file in sorted(layout.releases_dir.glob("*.yaml.gotmpl")):
        for name, spot in _scan(tier_file).items():
            spots.setdefault(name, spot)
    return spots


def _scan(tier_file: Path) -> dict[str, _Written]:
    """Each top-level sequence item's `name:` and `chart:`, whatever their order, quoting,
    indentation or trailing comment; the line is the item's first line."""
    found: dict[str, _Written] = {}
    item: dict[str, str] = {}
    item_line, item_indent, key_column = 0, -1, -1

    def flush() -> None:
        if item.get("name"):
            found.setdefault(item["name"], _Written(tier_file, item_line, item.get("chart", "")))

    for number, line in enumerate(files.read_text(tier_file).splitlines(), start=1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#") or stripped.startswith("{{"):
            continue
        indent = len(line) - len(stripped)
        match = _ITEM.match(line)
        if match and (item_indent < 0 or indent == item_indent):
            flush()
            item = {}
            item_line, item_indent = number, indent
            key_column = indent + 1 + len(match["gap"])
            _take(item, match["rest"])
        elif item_indent >= 0 and indent == key_column:
            _take(item, stripped)
    flush()
    return found


def _take(item: dict[str, str], text: str) -> None:
    match = _KEY.match(text)
    if match and match["key"] in ("name", "chart"):
        item.setdefault(match["key"], _scalar(match["value"] or ""))


def _scalar(text: str) -> str:
    """A plain or quoted YAML scalar without its trailing comment (`"x"  # note` -> `x`)."""
    text = text.strip()
    if text[:1] in ('"', "'"):
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    if text.startswith("{{"):
        end = text.find("}}")
        return text[: end + 2] if end >= 0 else text
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def _inputs_key(layout: RepoLayout, env: str) -> str:
    """The content of everything a listing reads: the helmfile folder, the environments, the lock."""
    digest = hashlib.sha256(f"{layout.root.resolve()}\0{env}\0".encode())
    folders = (layout.helmfile_dir, layout.environments_dir)
    paths = sorted(p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file())
    for path in [*paths, layout.lock_file]:
        digest.update(f"{path}\0".encode())
        try:
            digest.update(path.read_bytes())
        except FileNotFoundError:
            digest.update(b"\0missing")
        digest.update(b"\0")
    return digest.hexdigest()
