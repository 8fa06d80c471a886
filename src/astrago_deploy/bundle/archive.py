"""A bundle as one tar (or parts of one, for size-limited media), and extracting it safely.

The tar is written deterministically (sorted names, owner 0, mtime 0, modes 0644/0755), to a
partial file renamed once complete. `--split SIZE` cuts it into `NAME.part-000`, `-001`, ...
and writes `NAME.sha256` (the whole tar's digest and each part's), so the site joins and
checks with `cat NAME.part-* > NAME && sha256sum -c NAME.sha256`.

Extraction checks every member before it writes anything: an absolute name, a `..`
component, a link, a device or fifo, a name twice, or more than one top folder is refused by
name, and a truncated tar is refused as such. Only then are the members extracted
(with Python's `data` filter too) into a staging folder renamed into place: a refused or cut
archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from astrago_deploy.bundle.sums import CHUNK, bundle_files, safe_relative
from astrago_deploy.core import atomic
from astrago_deploy.core.errors import InputError, IntegrityError

_SIZE = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[KMGT]i?B?|B)?$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
PART_SUFFIX = ".part-"


def parse_size(text: str) -> int:
    """`4G`, `700M`, `4.7GB`, `64MiB`, `1000` (bytes) as a number of bytes."""
    match = _SIZE.match(text.strip())
    if not match:
        raise InputError(f"invalid size {text!r} (use e.g. 4G, 700M, 64MiB or a number of bytes)")
    unit = (match["unit"] or "").upper()
    binary = "I" in unit
    letter = unit[:1] if unit not in ("", "B") else unit
    base = 1024 ** "BKMGT".index(letter) if binary and letter else _UNITS[letter]
    size = int(float(match["number"]) * base)
    if size < 1024 * 1024:
        raise InputError(f"size {text!r} is below 1 MiB: parts that small are surely a mistake")
    return size


def write_tar(root: Path, out: Path, top: str) -> str:
    """Write every file below `root` into `out` under the folder `top`; the tar's sha256."""
    partial = out.with_name(f".{out.name}.partial")
    hasher = hashlib.sha256()

    class _Hashing(io.RawIOBase):
        def __init__(self, target: io.BufferedWriter) -> None:
            self.target = target

        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            hasher.update(data)
            return self.target.write(data)

    names = sorted([*bundle_files(root), *(["SHA256SUMS"] if (root / "SHA256SUMS").is_file() else [])])
    with partial.open("wb") as raw, tarfile.open(fileobj=_Hashing(raw), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory in _directories(names):
            tar.addfile(_info(f"{top}/{directory}", tarfile.DIRTYPE, 0, 0o755))
        for rel in names:
            path = root / rel
            info = _info(
                f"{top}/{rel}", tarfile.REGTYPE, path.stat().st_size, 0o755 if os.access(path, os.X_OK) else 0o644
            )
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    partial.replace(out)
    return hasher.hexdigest()


def _directories(names: list[str]) -> list[str]:
    found: set[str] = set()
    for name in names:
        parts = name.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(found)


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def split(tar: Path, size: int) -> list[Path]:
    """Cut `tar` into parts of at most `size` bytes beside it, write `TAR.sha256`, remove `tar`."""
    parts: list[Path] = []
    lines: list[str] = []
    whole = hashlib.sha256()
    with tar.open("rb") as source:
        index = 0
        while True:
            part = tar.with_name(f"{tar.name}{PART_SUFFIX}{index:03d}")
            hasher = hashlib.sha256()
            written = 0
            partial = part.with_name(f".{part.name}.partial")
            with partial.open("wb") as out:
                while written < size and (chunk := source.read(min(CHUNK, size - written))):
                    out.write(chunk)
                    hasher.update(chunk)
                    whole.update(chunk)
                    written += len(chunk)
            if not written:
                partial.unlink()
                break
            partial.replace(part)
            parts.append(part)
            lines.append(f"{hasher.hexdigest()}  {part.name}\n")
            index += 1
    atomic.write_text(tar.with_name(f"{tar.name}.sha256"), f"{whole.hexdigest()}  {tar.name}\n" + "".join(lines))
    tar.unlink()
    return parts


def join_instructions(tar: Path) -> str:
    return (
        f"cat {tar.name}{PART_SUFFIX}* > {tar.name} && sha256sum -c {tar.name}.sha256 "
        f"(or `inv bundle.verify {tar.name}{PART_SUFFIX}000`, which reads the parts as they are)"
    )


class _Parts(io.RawIOBase):
    """The parts of a split tar read as one stream, in order."""

    def __init__(self, parts: list[Path]) -> None:
        self.parts = parts
        self.handle: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self.handle is None:
                if not self.parts:
                    return 0
                self.handle = self.parts.pop(0).open("rb")
            count = self.handle.readinto(buffer)
            if count:
                return count
            self.handle.close()
            self.handle = None


def parts_of(path: Path) -> list[Path]:
    """The parts a split tar has beside `path` (`NAME.part-000` or `NAME` itself), in order; a gap is refused."""
    name = path.name
    if PART_SUFFIX in name:
        name = name[: name.rindex(PART_SUFFIX)]
    parts = sorted(path.parent.glob(f"{glob_escape(name)}{PART_SUFFIX}[0-9][0-9][0-9]"))
    if not parts:
        return [path]
    for index, part in enumerate(parts):
        if part.name != f"{name}{PART_SUFFIX}{index:03d}":
            raise InputError(f"{path.parent}: part {name}{PART_SUFFIX}{index:03d} is missing")
    return parts


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _members(stream: io.RawIOBase, where: str) -> Iterator[tarfile.TarInfo]:
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, CHUNK), mode="r|") as tar:
            yield from tar
    except (tarfile.ReadError, EOFError) as exc:
        raise IntegrityError(f"{where}: truncated or not a tar ({exc})") from exc


def check_members(parts: list[Path]) -> tuple[str, int]:
    """Every member of the tar checked, nothing written: (its one top folder, member count)."""
    where = parts[0].name
    seen: set[str] = set()
    tops: set[str] = set()
    for member in _members(_Parts(list(parts)), where):
        name = member.name.rstrip("/")
        shown = f"{where}: member {member.name!r}"
        if name.startswith("/") or not safe_relative(name):
            raise IntegrityError(
                f"{where}: member {member.name!r} leaves the bundle (absolute or `..`); nothing extracted"
            )
        if member.issym() or member.islnk():
            raise IntegrityError(
                f"{where}: member {member.name!r} is a link (to {member.linkname!r}); nothing extracted"
            )
        if not (member.isfile() or member.isdir()):
            raise IntegrityError(f"{shown} is not a file or folder; nothing extracted")
        if name in seen:
            raise IntegrityError(f"{shown} appears twice; nothing extracted")
        seen.add(name)
        tops.add(name.split("/")[0])
    if len(tops) != 1:
        raise IntegrityError(f"{where}: a bundle tar holds one folder, this one {len(tops)}: {sorted(tops)[:5]}")
    return tops.pop(), len(seen)


def extract(path: Path, dest_parent: Path) -> Path:
    """Extract the bundle tar at `path` (or its parts) into `dest_parent/<its folder>`, after
    every member passed `check_members`; staged and renamed, so a failure leaves nothing."""
    parts = parts_of(path)
    top, _count = check_members(parts)
    dest = dest_parent / top
    if dest.exists():
        raise InputError(f"{dest} exists already: extract elsewhere or remove it")
    dest_parent.mkdir(parents=True, exist_ok=True)
    with atomic.staging_dir(dest_parent, f"{top}.extract") as staging:
        try:
            with tarfile.open(fileobj=io.BufferedReader(_Parts(list(parts)), CHUNK), mode="r|") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            raise IntegrityError(f"{path.name}: extraction failed ({exc}); nothing extracted") from exc
        (staging / top).rename(dest)
    return dest
