"""Safe extraction of chart archives (`.tgz`).

An archive from the network is untrusted: entries with absolute paths or `..`, links that
leave the chart, hard links, device files, FIFOs and sparse files are refused, as are archives
with absurd sizes or file counts and any that do not sit in one top-level folder. A chart
archive is a gzip-compressed tar, as Helm requires; anything else is refused in one line. The
extended headers tar keeps in memory (pax, GNU long names) are bounded in size and number
before `tarfile` reads them, so a 200 MB pax header costs nothing. Modes are normalized (0755
for executables and folders, 0644 otherwise) so the extracted tree, and its content digest, are
the same on every machine whatever the umask.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrago_deploy.core.errors import ArchiveError, file_error

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
# A pax header or GNU long name holds a path, a link target and a few attributes: kilobytes.
MAX_HEADER_BYTES = 64 * 1024
# Before one member: a pax header and GNU long name and long link at most, as real tools write.
MAX_HEADERS_IN_A_ROW = 8
# Linux's NAME_MAX and PATH_MAX: a longer entry could not be written anyway.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
GZIP_MAGIC = b"\x1f\x8b"
_EXTENDED_HEADERS = {
    tarfile.XHDTYPE: "pax",
    tarfile.XGLTYPE: "pax global",
    tarfile.SOLARIS_XHDTYPE: "pax",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link",
}


@dataclass(frozen=True)
class ExtractLimits:
    members: int = MAX_MEMBERS
    total_bytes: int = MAX_TOTAL_BYTES
    file_bytes: int = MAX_FILE_BYTES
    header_bytes: int = MAX_HEADER_BYTES


class _Refused(Exception):
    """An archive refused while tarfile reads its headers; the caller adds the label."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's member header, checked before tarfile reads what follows it: an extended
    header (pax, GNU long name) above the size limit, or one more in a run of them than any
    tool writes, is refused unread, and so are sparse files, whose maps tarfile reads whole.

    These override tarfile's private `_proc_*` steps (stable since Python 3.2); the archive
    tests fail if a Python release renames them."""

    def _proc_member(self, archive: Any) -> Any:
        bounded: _BoundedTarFile = archive
        kind = _EXTENDED_HEADERS.get(self.type)
        if kind is None:
            bounded.headers_in_a_row = 0
        else:
            # tarfile reads the member after an extended header by recursion: a long run of
            # them would end in RecursionError rather than a refusal.
            bounded.headers_in_a_row += 1
            if bounded.headers_in_a_row > MAX_HEADERS_IN_A_ROW:
                raise _Refused(f"more than {MAX_HEADERS_IN_A_ROW} extended headers in a row, refused")
            if self.size > bounded.limits.header_bytes:
                raise _Refused(
                    f"a {kind} header of {self.size} bytes, refused (at most {bounded.limits.header_bytes}; "
                    "Helm never writes such archives)"
                )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused(f"refused sparse file {self.name}")
        return super()._proc_member(archive)  # type: ignore[misc]  # private, not in typeshed

    # The pax spellings of a sparse file, refused before tarfile reads their maps.
    def _proc_gnusparse_00(self, *_args: Any) -> None:
        raise _Refused("refused sparse file (pax GNU.sparse)")

    def _proc_gnusparse_01(self, *_args: Any) -> None:
        raise _Refused("refused sparse file (pax GNU.sparse)")

    def _proc_gnusparse_10(self, *_args: Any) -> None:
        raise _Refused("refused sparse file (pax GNU.sparse)")


class _BoundedTarFile(tarfile.TarFile):
    """A tar read from the decompressed stream `fileobj` with `_BoundedTarInfo` headers."""

    def __init__(self, fileobj: gzip.GzipFile, limits: ExtractLimits) -> None:
        # Set before tarfile's constructor reads the first header, which already checks them.
        self.limits = limits
        self.headers_in_a_row = 0
        super().__init__(fileobj=fileobj, mode="r", tarinfo=_BoundedTarInfo)


def _check_name(name: str, label: str) -> list[str]:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise ArchiveError(f"{label}: refused entry {name!r} (absolute or malformed path)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{label}: refused entry {name!r} ('..' in path)")
    if not parts:
        raise ArchiveError(f"{label}: refused entry {name!r} (empty path)")
    if len(name.encode()) > MAX_PATH_BYTES or any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        raise ArchiveError(f"{label}: refused entry {name[:60]!r}... (a path longer than a file system allows)")
    return parts


def extract_chart(payload: bytes | Path, dest: Path, label: str, limits: ExtractLimits = ExtractLimits()) -> str:
    """Extract the archive (bytes, or a file read as it is extracted) into `dest`; returns the
    name of its single top-level folder.

    `dest` must be an empty, fresh directory (a staging folder): on error the caller throws it
    away, so nothing half-extracted is ever in place.
    """
    raw = payload.open("rb") if isinstance(payload, Path) else io.BytesIO(payload)
    with raw:
        if raw.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            raise ArchiveError(
                f"{label}: not a gzip-compressed chart archive (Helm charts are .tgz files; check the URL or file)"
            )
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            return _extract(stream, dest, label, limits)


def _extract(stream: gzip.GzipFile, dest: Path, label: str, limits: ExtractLimits) -> str:
    try:
        archive = _BoundedTarFile(stream, limits)
    except _Refused as exc:
        raise ArchiveError(f"{label}: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # gzip.BadGzipFile is an OSError: the content, not the disk (nothing is written yet).
        raise ArchiveError(f"{label}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from exc
    top: str | None = None
    count = 0
    total = 0
    links: list[tuple[list[str], str]] = []
    with archive:
        try:
            for member in archive:
                count += 1
                if count > limits.members:
                    raise ArchiveError(f"{label}: more than {limits.members} entries, refused")
                if member.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                    continue
                parts = _check_name(member.name, label)
                if top is None:
                    top = parts[0]
                elif parts[0] != top:
                    raise ArchiveError(f"{label}: entries in more than one top-level folder ({top!r}, {parts[0]!r})")
                inner = parts[1:]
                target = dest.joinpath(*inner) if inner else dest
                _check_folders(dest, inner, member.name, label)
                if member.isdir():
                    if target.exists() and not target.is_dir():
                        raise ArchiveError(f"{label}: duplicate entry {member.name} (a file and a folder)")
                    _make_dir(target)
                elif member.isreg():
                    if not inner:
                        raise ArchiveError(f"{label}: refused entry {member.name!r} (file at top level)")
                    if member.size > limits.file_bytes:
                        raise ArchiveError(f"{label}: {member.name} is {member.size} bytes, refused")
                    total += member.size
                    if total > limits.total_bytes:
                        raise ArchiveError(f"{label}: more than {limits.total_bytes} bytes unpacked, refused")
                    handle = archive.extractfile(member)
                    if handle is None:
                        raise ArchiveError(f"{label}: cannot read {member.name}")
                    data = handle.read()
                    if len(data) != member.size:
                        raise ArchiveError(f"{label}: {member.name} is truncated")
                    _make_dir(target.parent)
                    if target.exists() or target.is_symlink():
                        raise ArchiveError(f"{label}: duplicate entry {member.name}")
                    _write_file(target, data, 0o755 if member.mode & 0o111 else 0o644)
                elif member.issym():
                    if not inner:
                        raise ArchiveError(f"{label}: refused link {member.name!r} at top level")
                    links.append((inner, member.linkname))
                elif member.islnk():
                    raise ArchiveError(f"{label}: refused hard link {member.name} -> {member.linkname}")
                else:
                    raise ArchiveError(f"{label}: refused special file {member.name} (device, FIFO or socket)")
        except _Refused as exc:
            raise ArchiveError(f"{label}: {exc}") from exc
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            # Reading an in-memory archive fails only on its content (gzip.BadGzipFile is an
            # OSError); writing the tree is wrapped by _make_dir/_write_file, which name the path.
            raise ArchiveError(f"{label}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from exc
    if top is None:
        raise ArchiveError(f"{label}: the archive is empty")
    for inner, linkname in links:
        _make_link(dest, inner, linkname, label)
    # Each target was checked on its own; a chain of links (`a -> b/..` with `b -> ..`) can
    # still lead out, so check where every link really resolves once all of them exist.
    root = os.path.realpath(dest)
    for inner, linkname in links:
        resolved = os.path.realpath(dest.joinpath(*inner))
        if resolved != root and not resolved.startswith(root + os.sep):
            raise ArchiveError(f"{label}: refused link {'/'.join(inner)} -> {linkname} (points outside the chart)")
    # Folders made implicitly (archives rarely list them) got the umask's mode: normalize them too.
    for folder, _dirs, _files in os.walk(dest):
        _make_dir(Path(folder))
    return top


def _check_folders(dest: Path, inner: list[str], name: str, label: str) -> None:
    """Refuse an entry below something the archive made a file (the write would fail on a
    temporary path that means nothing to the user). No links exist yet: they come last."""
    for depth in range(1, len(inner)):
        folder = dest.joinpath(*inner[:depth])
        if folder.exists() and not folder.is_dir():
            raise ArchiveError(f"{label}: refused entry {name!r} (inside {'/'.join(inner[:depth])}, which is a file)")


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    except OSError as exc:
        raise file_error(exc, path) from exc


def _write_file(path: Path, data: bytes, mode: int) -> None:
    try:
        path.write_bytes(data)
        path.chmod(mode)
    except OSError as exc:
        raise file_error(exc, path) from exc


def _make_link(dest: Path, inner: list[str], linkname: str, label: str) -> None:
    if linkname.startswith("/") or "\x00" in linkname:
        raise ArchiveError(f"{label}: refused link {'/'.join(inner)} -> {linkname} (absolute target)")
    resolved = posixpath.normpath(posixpath.join(*inner[:-1], linkname) if len(inner) > 1 else linkname)
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise ArchiveError(f"{label}: refused link {'/'.join(inner)} -> {linkname} (points outside the chart)")
    # Never create a folder or a link through another link: that could write outside `dest`.
    for depth in range(1, len(inner)):
        if dest.joinpath(*inner[:depth]).is_symlink():
            raise ArchiveError(f"{label}: refused link {'/'.join(inner)} (inside the link {'/'.join(inner[:depth])})")
    target = dest.joinpath(*inner)
    _make_dir(target.parent)
    if target.exists() or target.is_symlink():
        raise ArchiveError(f"{label}: duplicate entry {'/'.join(inner)}")
    try:
        os.symlink(linkname, target)
    except OSError as exc:
        raise file_error(exc, target) from exc
