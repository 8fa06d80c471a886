"""Vendoring upstream charts into `charts/external/` under `charts/versions.lock`.

`sync` makes the vendored trees match the lock, `add` locks and vendors a new chart, `verify`
checks offline that trees, lock and releases agree, `outdated` compares the lock with the
repository indexes. Every change is staged in a temporary folder inside `charts/external/`
(same filesystem), verified (archive digest, Chart.yaml, tree digest), and only then renamed
into place; the lock is written last and atomically. The charts lock (`core.locks`) keeps
concurrent runs apart: sync and add hold it exclusive, verify and every reader shared.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from astrago_deploy.charts.archive import extract_chart
from astrago_deploy.charts.index import (
    ChartVersion,
    IndexCache,
    bump_kind,
    newest,
    parse_version,
)
from astrago_deploy.charts.oci import OciChart, OciClient
from astrago_deploy.core import atomic, diagnostics, yaml
from astrago_deploy.core.console import Progress
from astrago_deploy.core.diagnostics import Diagnostic, shown_path
from astrago_deploy.core.digests import tree_digest
from astrago_deploy.core.errors import (
    ArchiveError,
    AstragoError,
    ConfigError,
    FetchError,
    FileAccessError,
    HelmfileError,
    InputError,
    IntegrityError,
    YamlError,
)
from astrago_deploy.core.http import Fetcher, redact_url
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import prune_leftovers
from astrago_deploy.core.locks import ReadersWriterLock, charts_lock
from astrago_deploy.core.parallel import run_jobs
from astrago_deploy.model.chart_names import chart_name_problem, chart_version_problem, shortened
from astrago_deploy.model.lock import LockedChart, LockEntryError, VersionsLock
from astrago_deploy.model.releases import declared_releases

MAX_PARALLEL_DOWNLOADS = 4


@dataclass(frozen=True)
class StagedChart:
    chart: LockedChart  # the lock entry, completed with url/digest/manifest/tree
    tree: Path  # the extracted tree in a staging folder
    index_entry: ChartVersion | None


@dataclass(frozen=True)
class SyncResult:
    name: str
    version: str
    action: str  # vendored | unchanged | pruned


@dataclass(frozen=True)
class OutdatedRow:
    name: str
    locked: str
    newest: str
    newest_same_major: str
    distance: str
    repository: str

    def as_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


class ChartVendor:
    def __init__(
        self, layout: RepoLayout, fetcher: Fetcher, progress: Progress | None = None, indexes: IndexCache | None = None
    ) -> None:
        self.layout = layout
        self.fetcher = fetcher
        # Callers working on two trees in one run pass one cache, so each index is fetched once.
        self.indexes = indexes or IndexCache(fetcher)
        self.oci = OciClient(fetcher)
        self.progress = progress or Progress()

    @property
    def lock(self) -> ReadersWriterLock:
        """Held exclusive while this vendor changes charts/external, shared while verify reads it."""
        return charts_lock(self.layout)

    # --- staging ------------------------------------------------------------------------
    def is_current(self, chart: LockedChart) -> bool:
        folder = self.layout.chart_dir(chart.name, chart.version)
        return chart.complete and folder.is_dir() and tree_digest(folder) == chart.tree

    def stage(self, chart: LockedChart, staging_root: Path) -> StagedChart:
        """Download, verify and extract one chart into a fresh folder under `staging_root`."""
        label = f"{chart.name} {chart.version}"
        self.progress.step(chart.name, "downloading")
        index_entry: ChartVersion | None = None
        target = Path(tempfile.mkdtemp(prefix=f".{chart.name}.", suffix=".staging", dir=staging_root))
        payload: bytes | Path
        if chart.is_oci:
            ref = OciChart(chart.repository, chart.name)
            manifest = chart.manifest or self.oci.resolve(ref, chart.version)
            payload, digest = self.oci.pull(ref, manifest)
            if chart.digest and digest != chart.digest:
                raise IntegrityError(f"{label}: archive sha256 {digest} does not match the lock's {chart.digest}")
            updated = dataclasses.replace(chart, manifest=manifest, digest=digest, url="")
            source = f"{chart.repository}/{chart.name}"
        else:
            url, expected = chart.url, chart.digest
            if not url or not expected:
                index = self.indexes.get(chart.repository)
                index_entry = index.find(chart.name, chart.version)
                url = url or index.archive_url(index_entry)
                expected = expected or index_entry.digest
            # Streamed to disk and checked while read: raw bytes, so a server that labels the
            # .tgz as gzip-encoded cannot make it fail its digest.
            payload = target / "chart.tgz"
            try:
                actual = self.fetcher.download_to(url, payload, expected or None)
            except IntegrityError as exc:
                raise IntegrityError(f"{label}: archive {exc}") from None
            updated = dataclasses.replace(chart, url=url, digest=actual)
            source = redact_url(url)
        self.progress.step(chart.name, "extracting")
        tree = target / "tree"
        tree.mkdir()
        # Named with where the archive came from: a bad one says which URL served it.
        top = extract_chart(payload, tree, f"{label}: {source}")
        self._check_chart_yaml(tree, chart, top, label)
        digest_now = tree_digest(tree)
        if chart.tree and digest_now != chart.tree:
            raise IntegrityError(f"{label}: extracted content digest {digest_now} differs from the lock's {chart.tree}")
        self.progress.step(chart.name, "verified")
        return StagedChart(dataclasses.replace(updated, tree=digest_now), tree, index_entry)

    @staticmethod
    def _check_chart_yaml(tree: Path, chart: LockedChart, top: str, label: str) -> None:
        try:
            meta = yaml.read(tree / "Chart.yaml")
        except FileNotFoundError as exc:
            raise IntegrityError(f"{label}: the archive has no {top}/Chart.yaml") from exc
        except yaml.YamlError as exc:
            where = f"{top}/Chart.yaml:{exc.line}" if exc.line else f"{top}/Chart.yaml"
            raise IntegrityError(f"{label}: {where} is not valid YAML: {exc.reason}") from exc
        if not isinstance(meta, dict) or str(meta.get("name")) != chart.name:
            found = meta.get("name") if isinstance(meta, dict) else None
            raise IntegrityError(f"{label}: the archive holds chart {found!r}, not {chart.name!r}")
        version = str(meta.get("version"))
        if version != chart.version and parse_version(version) != parse_version(chart.version):
            raise IntegrityError(f"{label}: the archive holds version {version}, not {chart.version}")

    def stage_many(self, charts: Sequence[LockedChart], staging_root: Path) -> list[StagedChart]:
        """Stage charts in parallel (bounded); the first failure fails the whole batch."""
        if not charts:
            return []
        workers = min(MAX_PARALLEL_DOWNLOADS, len(charts))
        jobs = [(chart.name, functools.partial(self.stage, chart, staging_root)) for chart in charts]
        staged, failures = run_jobs(jobs, workers, "vendor")
        if failures:
            lines = [str(exc) if str(exc).startswith(name) else f"{name}: {exc}" for name, exc in failures]
            unchanged = "nothing was changed (charts/external and the lock are as before)"
            message = f"{lines[0]}; {unchanged}" if len(lines) == 1 else "\n".join([*lines, unchanged])
            # One failure keeps its kind (integrity, fetch, archive) for callers that care.
            kind = _message_kind(failures[0][1]) if len(failures) == 1 else AstragoError
            raise kind(message)
        return staged

    def install(self, staged: Sequence[StagedChart]) -> None:
        """Rename staged trees into place (each swap atomic)."""
        for item in staged:
            atomic.replace_dir(item.tree, self.layout.chart_dir(item.chart.name, item.chart.version))

    # --- sync ---------------------------------------------------------------------------
    def sync(self, names: Sequence[str] | None = None) -> list[SyncResult]:
        with self.lock.exclusive("charts.sync"):
            # What a killed sync or upgrade left (staging folders, a tree renamed aside) goes first.
            prune_leftovers(self.layout)
            lock = VersionsLock.load(self.layout.lock_file)
            selected = self._select(lock, names)
            pending = [chart for chart in selected if not self.is_current(chart)]
            results = [SyncResult(c.name, c.version, "unchanged") for c in selected if c not in pending]
            self.progress.begin(len(pending), "vendoring charts")
            try:
                self.layout.external_dir.mkdir(parents=True, exist_ok=True)
                with atomic.staging_dir(self.layout.external_dir, "sync") as staging_root:
                    staged = self.stage_many(pending, staging_root)
                    self.install(staged)
            finally:
                self.progress.end()
            for item in staged:
                lock.set(item.chart)
                results.append(SyncResult(item.chart.name, item.chart.version, "vendored"))
            lock.save()
            for chart in selected:
                results.extend(self._prune_other_versions(lock, chart))
            order = {name: i for i, name in enumerate(lock.names())}
            return sorted(results, key=lambda r: (order.get(r.name, 0), r.action))

    def _select(self, lock: VersionsLock, names: Sequence[str] | None) -> list[LockedChart]:
        if not names:
            return lock.charts()
        unknown = [n for n in names if not lock.has(n)]
        if unknown:
            raise InputError(
                f"not in {self.layout.lock_file.name}: {', '.join(unknown)} "
                "(add with `inv charts.add NAME --repo URL --version V`)"
            )
        return [lock.get(n) for n in names]

    def _prune_other_versions(self, lock: VersionsLock, chart: LockedChart) -> list[SyncResult]:
        """Remove vendored folders of other versions of `chart` that no lock entry uses."""
        keep = {c.dirname for c in lock.charts()}
        pruned = []
        for folder in sorted(self.layout.external_dir.glob(f"{chart.name}-*")):
            rest = folder.name[len(chart.name) + 1 :]
            if folder.is_dir() and folder.name not in keep and parse_version(rest) is not None:
                atomic.remove_dir(folder)
                pruned.append(SyncResult(chart.name, rest, "pruned"))
        return pruned

    # --- add ----------------------------------------------------------------------------
    def add(self, name: str, repository: str, version: str) -> LockedChart:
        """Resolve `name` `version` in `repository`, vendor it and lock it."""
        problem = chart_name_problem(name)
        if problem:
            raise InputError(f"invalid chart name {shortened(name)}: {problem}")
        problem = chart_version_problem(version)
        if problem:
            raise InputError(f"invalid --version {shortened(version)}: {problem}")
        if "@" in urlsplit(repository).netloc:
            # The lock is committed: credentials go in the environment, never in the URL.
            raise InputError(
                f"--repo {redact_url(repository)} must not carry user:password; "
                "set ASTRAGO_REPO_<HOST>_USERNAME and ASTRAGO_REPO_<HOST>_PASSWORD instead"
            )
        if not re.match(r"^(https?|oci)://[^/\s]+", repository):
            raise InputError(f"invalid --repo {repository!r}: use an https:// Helm repository or oci://host/path")
        with self.lock.exclusive("charts.add"):
            lock = VersionsLock.load(self.layout.lock_file)
            if lock.has(name):
                current = lock.get(name)
                raise InputError(
                    f"{name} is already locked at {current.version}; use `inv charts.upgrade {name}` to change it"
                )
            chart = LockedChart(name=name, repository=repository.rstrip("/"), version=version)
            if not chart.is_oci:
                entry = self.indexes.get(chart.repository).find(name, version)
                if not entry.digest:
                    raise IntegrityError(f"{name} {version}: the repository index gives no digest to verify against")
            self.layout.external_dir.mkdir(parents=True, exist_ok=True)
            with atomic.staging_dir(self.layout.external_dir, "add") as staging_root:
                staged = self.stage_many([chart], staging_root)
                self.install(staged)
            lock.set(staged[0].chart)
            lock.save()
            return staged[0].chart

    # --- verify -------------------------------------------------------------------------
    def verify(self) -> list[Diagnostic]:
        """Offline consistency of vendored trees, the lock and the releases."""
        with self.lock.shared("charts.verify"):  # a tree digested mid-swap would be half old, half new
            return self._verify()

    def _verify(self) -> list[Diagnostic]:
        problems: list[Diagnostic] = []
        lock_shown = shown_path(self.layout.lock_file, self.layout.root)
        try:
            lock = VersionsLock.load(self.layout.lock_file)
        except FileAccessError as exc:
            # Only a decoding error has a line; the reason already says what to do about it.
            return [diagnostics.error(lock_shown, exc.line, "", exc.reason)]
        except YamlError as exc:
            return [diagnostics.yaml_error(lock_shown, exc)]
        except LockEntryError as exc:
            fix = "repair the lock file by hand (it is YAML)"
            return [diagnostics.error(lock_shown, exc.line, "", exc.reason, fix)]
        except ConfigError as exc:
            message = str(exc).replace(str(self.layout.lock_file), "").lstrip(": ")
            return [diagnostics.error(lock_shown, None, "", message, "repair the lock file by hand (it is YAML)")]
        expected_dirs = set()
        for chart in lock.charts():
            folder = self.layout.chart_dir(chart.name, chart.version)
            rel = folder.relative_to(self.layout.root)
            expected_dirs.add(folder.name)
            line = lock.line_of(chart.name)
            if not chart.complete:
                problems.append(
                    diagnostics.error(
                        lock_shown,
                        line,
                        chart.name,
                        f"lock entry for {chart.version} is incomplete (no url/digest/tree)",
                        f"run `inv charts.sync --name {chart.name}` to resolve and pin it",
                    )
                )
            if not folder.is_dir():
                problems.append(
                    diagnostics.error(
                        lock_shown, line, chart.name, f"{rel} is missing", f"run `inv charts.sync --name {chart.name}`"
                    )
                )
                continue
            if chart.tree and tree_digest(folder) != chart.tree:
                problems.append(
                    diagnostics.error(
                        lock_shown,
                        line,
                        chart.name,
                        f"{rel} differs from the lock's content digest "
                        "(a hand edit of a vendored chart, or a stale lock)",
                        f"run `inv charts.sync --name {chart.name}` to restore upstream content; customize through "
                        "environments/*/releases values or patches/, never in charts/external",
                    )
                )
        if self.layout.external_dir.is_dir():
            for folder in sorted(self.layout.external_dir.iterdir()):
                if folder.is_dir() and not folder.name.startswith(".") and folder.name not in expected_dirs:
                    problems.append(
                        diagnostics.error(
                            shown_path(folder, self.layout.root),
                            None,
                            "",
                            "a vendored folder that is not in the lock",
                            "delete the folder, or lock the chart with `inv charts.add NAME --repo URL --version V`",
                        )
                    )
        problems.extend(self._release_problems(lock))
        return problems

    def _release_problems(self, lock: VersionsLock) -> list[Diagnostic]:
        problems = []
        try:
            declared = declared_releases(self.layout)
        except HelmfileError as exc:
            # A tier file's `required` guard (a release whose chart left the lock) stops helmfile
            # itself: report what helmfile says, with the other findings, rather than stop verify.
            reason = (exc.stderr.strip().splitlines() or [f"exit {exc.returncode}"])[-1]
            reason = reason.rpartition("error calling required: ")[2]
            shown = shown_path(self.layout.helmfile, self.layout.root)
            fix = (
                "lock the chart with `inv charts.add NAME --repo URL --version V`, or fix the tier file helmfile names"
            )
            return [diagnostics.error(shown, None, "releases", f"helmfile cannot list the releases: {reason}", fix)]
        for release in declared:
            tier = shown_path(release.tier_file, self.layout.root)
            where = (tier, release.line, f"release {release.name}")
            locked, custom, value = release.locked_chart, release.custom_chart, release.chart_expr
            if locked is not None:
                if not lock.has(locked):
                    problems.append(
                        diagnostics.error(
                            *where,
                            f"chart {locked!r} is not in the lock",
                            f"lock it with `inv charts.add {locked} --repo URL --version V`",
                        )
                    )
            elif custom is not None:
                if not (self.layout.custom_dir / custom / "Chart.yaml").is_file():
                    problems.append(diagnostics.error(*where, f"{value} has no Chart.yaml", "fix the chart path"))
            else:
                problems.append(
                    diagnostics.error(
                        *where,
                        f"chart {value} does not go through the lock",
                        'use `{{ index .Charts "NAME" }}` for upstream charts or ../charts/custom/NAME',
                    )
                )
        return problems

    # --- outdated -----------------------------------------------------------------------
    def outdated(self, prereleases: bool = False) -> list[OutdatedRow]:
        lock = VersionsLock.load(self.layout.lock_file)
        rows = []
        for chart in lock.charts():
            locked = parse_version(chart.version)
            if chart.is_oci:
                tags = self.oci.tags(OciChart(chart.repository, chart.name))
                newest_version = newest(tags, str, prereleases) or ""
                same = (newest(tags, str, prereleases, locked.major) if locked else None) or ""
            else:
                index = self.indexes.get(chart.repository)
                top = index.newest(chart.name, prereleases)
                top_same = index.newest(chart.name, prereleases, locked.major) if locked else None
                newest_version = top.version if top else ""
                same = top_same.version if top_same else ""
            rows.append(
                OutdatedRow(
                    chart.name,
                    chart.version,
                    newest_version,
                    same,
                    bump_kind(chart.version, newest_version) if newest_version else "unknown",
                    chart.repository,
                )
            )
        return rows


def _message_kind(exc: AstragoError) -> type[AstragoError]:
    """The nearest kind of `exc` that is built from a message alone (a `FileAccessError` or a
    `CommandError` takes more), so a batch can raise its summary as the same kind of failure."""
    for kind in type(exc).__mro__:
        if kind in (IntegrityError, FetchError, ArchiveError, InputError, ConfigError):
            return kind
    return AstragoError


def default_vendor(
    layout: RepoLayout, mirror: str | None, progress: Progress | None = None, log: Callable[[str], None] | None = None
) -> ChartVendor:
    fetcher = Fetcher.for_mirror(mirror)
    if log and fetcher.mirror:
        log(f"reading upstream charts through the mirror {fetcher.mirror.root}")
    return ChartVendor(layout, fetcher, progress)
