"""The releases the helmfile declares, read from the tier files without rendering them.

Each release's name, tier file, namespace and chart reference (a locked upstream chart via
`{{ index .Charts "NAME" }}`, or a `../charts/custom/NAME` path). Used by checks that must
run offline and fast (charts.verify, the override check, scaffolding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.core import files
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import VersionsLock

# The tier files under helmfile/releases/, in deployment order.
TIERS = ("infrastructure", "monitoring", "security", "applications")

_RELEASE_NAME = re.compile(r"^-\s+name:\s*(?P<name>[A-Za-z0-9._-]+)\s*$")
_FIELD = re.compile(r"^\s+(?P<key>chart|namespace):\s*(?P<value>.+?)\s*$")
_CHART_REF = re.compile(r'index\s+\.Charts\s+"(?P<name>[^"]+)"')


@dataclass(frozen=True)
class ReleaseRef:
    name: str
    tier_file: Path
    line: int
    namespace: str
    chart_expr: str

    @property
    def locked_chart(self) -> str | None:
        """The lock entry this release uses, if it goes through the lock."""
        match = _CHART_REF.search(self.chart_expr)
        return match["name"] if match else None

    @property
    def custom_chart(self) -> str | None:
        value = self.chart_expr
        return value.removeprefix("../charts/custom/").rstrip("/") if value.startswith("../charts/custom/") else None

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


def _parse_tier_file(tier_file: Path) -> list[ReleaseRef]:
    blocks: list[tuple[int, dict[str, str]]] = []
    for number, line in enumerate(files.read_text(tier_file).splitlines(), start=1):
        if m := _RELEASE_NAME.match(line):
            blocks.append((number, {"name": m["name"]}))
        elif blocks and (m := _FIELD.match(line)):
            blocks[-1][1].setdefault(m["key"], m["value"])
    return [
        ReleaseRef(fields["name"], tier_file, number, fields.get("namespace", ""), fields.get("chart", ""))
        for number, fields in blocks
    ]


def declared_releases(layout: RepoLayout) -> list[ReleaseRef]:
    """Every release of every tier file, in file order."""
    return [
        ref for tier_file in sorted(layout.releases_dir.glob("*.yaml.gotmpl")) for ref in _parse_tier_file(tier_file)
    ]
