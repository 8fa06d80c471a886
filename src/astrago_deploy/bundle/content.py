"""What a bundle carries besides images: the repository, the charts, the tools, the wheels.

- `repo.bundle`: a git bundle of the content commit (as `HEAD`, and as the stage branch it is
  the tip of, if any) and every promotion tag it contains; `git clone repo.bundle` checks it out.
- `charts/`: a `CHARTS_MIRROR` root, `<host>/<path>/` as upstream serves them: every locked
  archive (checked against the lock's digest) and, per repository, an `index.yaml` holding only
  the locked versions' entries as upstream wrote them.
- `tools/`: the pinned helm, helmfile and kubectl binaries, each checked against its sha256 in
  `toolchain.yaml` (the `directory` source `inv tools.install` reads at the site).
- `wheels/`: every Python dependency of the task suite for the site's Python and platform, and
  `requirements.txt` pinning each by version and sha256 (`pip install --require-hashes`).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrago_deploy.charts.index import IndexCache
from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.command import Command, Timeouts
from astrago_deploy.core.digests import sha256_file
from astrago_deploy.core.errors import InputError, IntegrityError, PipError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.model.promotion import PromotionPath
from astrago_deploy.toolchain.pinned import ToolPin

REPO_BUNDLE = "repo.bundle"
CHARTS_DIR = "charts"
TOOLS_DIR = "tools"
WHEELS_DIR = "wheels"
REQUIREMENTS = "requirements.txt"
_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-.*\.whl$")


# --- the repository -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoRecord:
    commit: str
    branch: str  # the stage branch whose tip the commit is ("" when none)
    tags: list[str]


def write_repo_bundle(repo: GitRepo, commit: str, path: PromotionPath, remote: bool, dest: Path) -> RepoRecord:
    """`dest/repo.bundle`: `commit` as HEAD and as the stage branch it is the tip of (origin's
    where there is an origin), and every promotion tag `commit` contains. Written from a scratch
    bare repository that borrows this one's objects (git alternates), so the branch is named
    in the bundle without a ref created here; checked with `git bundle verify`, then renamed
    into place. A clone of it checks the branch out, and `inv deploy` at the site finds HEAD at
    the branch's tip."""
    branch = ""
    for stage in reversed(path.stages):
        if repo.ref_value(f"refs/remotes/origin/{stage.branch}" if remote else stage.ref) == commit:
            branch = stage.branch
            break
    tags = sorted(
        tag for stage in path.stages for tag in repo.run("tag", "--list", f"{stage.name}/*", "--merged", commit).split()
    )
    objects = Path(repo.run("rev-parse", "--path-format=absolute", "--git-path", "objects").strip())
    partial = dest / f".{REPO_BUNDLE}.partial"
    with tempfile.TemporaryDirectory(prefix="repo-bundle-") as scratch_dir:
        scratch_root = Path(scratch_dir) / "scratch.git"
        repo.run("init", "--quiet", "--bare", str(scratch_root))
        (scratch_root / "objects" / "info" / "alternates").write_text(f"{objects}\n", encoding="utf-8")
        scratch = GitRepo(scratch_root)
        try:
            refs = []
            if branch:
                scratch.run("update-ref", f"refs/heads/{branch}", commit)
                scratch.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
                refs.append(f"refs/heads/{branch}")
            else:
                scratch.run("update-ref", "--no-deref", "HEAD", commit)
            for tag in tags:
                scratch.run("update-ref", f"refs/tags/{tag}", repo.ref_value(f"refs/tags/{tag}"))
            refs += [f"refs/tags/{tag}" for tag in tags]
            scratch.run("bundle", "create", "--quiet", str(partial), "HEAD", *refs)
            scratch.run("bundle", "verify", "--quiet", str(partial))
        finally:
            scratch.close()
    partial.replace(dest / REPO_BUNDLE)
    return RepoRecord(commit, branch, tags)


# --- charts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartRecord:
    name: str
    version: str
    repository: str
    url: str
    digest: str
    tree: str
    path: str  # of the archive, relative to the bundle

    def as_json(self) -> dict[str, str]:
        return dict(self.__dict__)


def write_charts(lock: VersionsLock, fetcher: Fetcher, dest: Path) -> list[ChartRecord]:
    """Every locked chart's archive under `dest/charts/<host>/<path>` (checked against the lock's
    digest) and each repository's `index.yaml` with only the locked versions."""
    root = dest / CHARTS_DIR
    mirror = Mirror(str(root))
    indexes = IndexCache(fetcher)
    records: list[ChartRecord] = []
    entries: dict[str, dict[str, list[Any]]] = {}
    for chart in lock.charts():
        if chart.is_oci:
            raise InputError(
                f"{chart.name}: charts from OCI repositories ({chart.repository}) are not carried in bundles yet"
            )
        if not (chart.url and chart.digest):
            raise InputError(f"{chart.name}: the lock has no url and digest for it: run `inv charts.sync` first")
        archive = Path(mirror.map(chart.url))
        if not archive.is_relative_to(root):
            raise InputError(f"{chart.name}: archive URL {chart.url} maps outside the bundle")
        fetcher.download_to(chart.url, archive, chart.digest)
        index = indexes.get(chart.repository)
        entry = index.find(chart.name, chart.version)
        entries.setdefault(chart.repository.rstrip("/"), {}).setdefault(chart.name, []).append(entry.raw)
        records.append(
            ChartRecord(chart.name, chart.version, chart.repository, chart.url, chart.digest, chart.tree,
                        archive.relative_to(dest).as_posix())
        )  # fmt: skip
    for repository, charts in entries.items():
        index_path = Path(mirror.map(f"{repository}/index.yaml"))
        index_path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(index_path, yaml.dump({"apiVersion": "v1", "entries": charts}))
    return records


# --- tools ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """A tool or a wheel in the bundle: what it is, its sha256 and where it is."""

    name: str
    version: str
    sha256: str
    path: str

    def as_json(self) -> dict[str, str]:
        return dict(self.__dict__)


def write_tools(pins: dict[str, ToolPin], candidates: list[Path], dest: Path) -> list[FileRecord]:
    """Each pinned tool into `dest/tools/`, from the first of `candidates` (folders holding
    binaries by name) whose copy has the pinned sha256; a tool none of them has is an error."""
    folder = dest / TOOLS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name, pin in sorted(pins.items()):
        source = next(
            (c / name for c in candidates if (c / name).is_file() and sha256_file(c / name) == pin.sha256), None
        )
        if source is None:
            raise IntegrityError(f"no copy of {name} {pin.version} with sha256 {pin.sha256}: run `inv tools.install`")
        target = folder / name
        partial = folder / f".{name}.partial"
        shutil.copyfile(source, partial)  # streamed, not read whole
        partial.chmod(0o755)
        if sha256_file(partial) != pin.sha256:
            partial.unlink()
            raise IntegrityError(f"{source}: changed while it was copied (sha256 no longer {pin.sha256})")
        partial.replace(target)
        records.append(FileRecord(name, pin.version, pin.sha256, target.relative_to(dest).as_posix()))
    return records


# --- wheels ---------------------------------------------------------------------------------------


def requirements_of(pyproject: Path) -> list[str]:
    """The runtime dependencies and the build requirements `pyproject` declares."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{pyproject.name} is missing at the bundled commit: it declares the task suite's wheels"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{pyproject.name}: not valid TOML ({exc})") from None
    project = data.get("project") or {}
    build = data.get("build-system") or {}
    return [str(r) for r in [*(project.get("dependencies") or []), *(build.get("requires") or [])]]


@dataclass(frozen=True)
class SitePython:
    """The Python and platform the wheels are for (default: this machine's)."""

    version: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    platforms: tuple[str, ...] = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")

    @property
    def abi(self) -> str:
        return "cp" + self.version.replace(".", "")


def write_wheels(pyproject: Path, site: SitePython, dest: Path, environ: dict[str, str]) -> list[FileRecord]:
    """Download every dependency of the task suite as wheels for `site` into `dest/wheels/`
    (through pip, so PIP_INDEX_URL and the like apply) and pin each in `requirements.txt`."""
    folder = dest / WHEELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--dest", str(folder), "--python-version", site.version,
            "--implementation", "cp", "--abi", site.abi]  # fmt: skip
    for platform in site.platforms:
        argv += ["--platform", platform]
    argv += requirements_of(pyproject)
    Command(argv, cwd=pyproject.parent, env=environ, error=PipError, timeout=Timeouts.PIP).run()
    records = []
    for wheel in sorted(folder.glob("*.whl")):
        match = _WHEEL.match(wheel.name)
        if not match:
            raise IntegrityError(f"{wheel.name}: not a wheel file name")
        records.append(
            FileRecord(match["name"], match["version"], sha256_file(wheel), wheel.relative_to(dest).as_posix())
        )
    pins = "".join(f"{r.name.replace('_', '-')}=={r.version} --hash=sha256:{r.sha256}\n" for r in records)
    atomic.write_text(folder / REQUIREMENTS, "# Every wheel of this bundle, pinned by version and sha256.\n" + pins)
    return records
