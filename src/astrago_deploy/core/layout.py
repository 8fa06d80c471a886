"""Where things live in the monorepo.

`RepoLayout` is the single map from concepts (the lock, vendored charts, tool state) to paths,
so no other module spells a repository path itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class RepoLayout:
    root: Path

    @classmethod
    def at(cls, root: Path | str) -> RepoLayout:
        return cls(Path(root).resolve())

    # --- committed content -------------------------------------------------------------
    @property
    def toolchain_manifest(self) -> Path:
        return self.root / "toolchain.yaml"

    @property
    def charts_dir(self) -> Path:
        return self.root / "charts"

    @property
    def external_dir(self) -> Path:
        return self.charts_dir / "external"

    @property
    def custom_dir(self) -> Path:
        return self.charts_dir / "custom"

    @property
    def lock_file(self) -> Path:
        return self.charts_dir / "versions.lock"

    @property
    def helmfile_dir(self) -> Path:
        return self.root / "helmfile"

    @property
    def helmfile(self) -> Path:
        return self.helmfile_dir / "helmfile.yaml.gotmpl"

    @property
    def releases_dir(self) -> Path:
        return self.helmfile_dir / "releases"

    @property
    def environments_dir(self) -> Path:
        return self.root / "environments"

    @property
    def customers_dir(self) -> Path:
        return self.environments_dir / "customers"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    # --- generated, git-ignored ----------------------------------------------------------
    @property
    def tools_dir(self) -> Path:
        return self.root / ".tools"

    @property
    def tools_bin(self) -> Path:
        return self.tools_dir / "bin"

    @property
    def tools_downloads(self) -> Path:
        return self.tools_dir / "downloads"

    @property
    def tool_state(self) -> Path:
        """Helm/helmfile state (config, cache, data, plugins, tmp), isolated from $HOME."""
        return self.tools_dir / "state"

    @property
    def tools_tmp(self) -> Path:
        """The tools' temporary files, one marked folder per running task (`PinnedTools.env`)."""
        return self.tool_state / "tmp"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def charts_lock(self) -> Path:
        """Held exclusive by runs that rewrite `charts/external`, shared by runs that read it."""
        return self.cache_dir / "charts.lock"

    @property
    def logs_dir(self) -> Path:
        """Whole outputs of streamed commands (deploy, destroy), one file per run."""
        return self.cache_dir / "logs"

    def command_log(self, tool: str, started: datetime | None = None) -> Path:
        """`.cache/logs/<UTC timestamp>-<tool>.log`; the milliseconds keep runs apart and the
        names sort by time."""
        when = (started or datetime.now(UTC)).astimezone(UTC)
        return self.logs_dir / f"{when:%Y%m%dT%H%M%S}.{when.microsecond // 1000:03d}Z-{tool}.log"

    @property
    def rendered_dir(self) -> Path:
        return self.root / "rendered"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def chart_dir(self, name: str, version: str) -> Path:
        return self.external_dir / f"{name}-{version}"
