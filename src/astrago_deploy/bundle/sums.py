"""`SHA256SUMS` of a bundle: every file's digest, in the format `sha256sum -c` checks.

One line per file, `HEX  PATH` (two spaces: what `sha256sum` writes), sorted by path, every
file of the bundle but `SHA256SUMS` itself. A name `sha256sum` would have to escape (a newline
or a backslash) is refused when the sums are written, so the file reads the same to both. The
check is ours as well as `sha256sum -c`'s: it also names files that are there but not listed
(an extra file is as suspect as a changed one) and refuses a listed path that leaves the bundle.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from astrago_deploy.core import atomic
from astrago_deploy.core.digests import hash_file
from astrago_deploy.core.errors import InputError

SUMS_FILE = "SHA256SUMS"
CHUNK = 1024 * 1024
_LINE = re.compile(r"^(?P<hex>[0-9a-f]{64}) [ *](?P<path>.+)$")


def bundle_files(root: Path) -> list[str]:
    """Every regular file and link below `root` as a relative POSIX path, sorted, but SHA256SUMS."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != SUMS_FILE:
                found.append(rel)
    return sorted(found)


def safe_relative(path: str) -> bool:
    """A path that stays inside the bundle: relative, no `..`, no empty or `.` component."""
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and all(part not in ("", ".", "..") for part in path.split("/"))


def _digests(root: Path, paths: list[str], workers: int | None) -> dict[str, tuple[str, int]]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(paths, pool.map(lambda rel: hash_file(root / rel), paths), strict=True))


def write(root: Path, workers: int | None = None) -> dict[str, tuple[str, int]]:
    """Write `root/SHA256SUMS` over every file below `root` (atomically); path -> (hex, size)."""
    paths = bundle_files(root)
    for rel in paths:
        if "\n" in rel or "\\" in rel or "\r" in rel:
            raise InputError(f"{rel!r}: a bundle file name may not hold a newline or a backslash")
        if (root / rel).is_symlink():
            raise InputError(f"{rel}: a bundle holds no links")
    digests = _digests(root, paths, workers)
    atomic.write_text(root / SUMS_FILE, "".join(f"{digests[rel][0]}  {rel}\n" for rel in paths))
    return digests


@dataclass
class SumsReport:
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    listed: dict[str, str] = field(default_factory=dict)  # path -> hex digest, as SHA256SUMS lists them


def check(root: Path, workers: int | None = None) -> SumsReport:
    """Check `root` against its SHA256SUMS: each listed file present with its digest, nothing
    unlisted, no listed path leaving the bundle. Problems name the file."""
    report = SumsReport()
    try:
        text = (root / SUMS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        report.problems.append(f"{SUMS_FILE}: missing")
        return report
    except UnicodeDecodeError:
        report.problems.append(f"{SUMS_FILE}: not UTF-8 text")
        return report
    listed = report.listed
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if not match:
            report.problems.append(f"{SUMS_FILE}:{number}: not a `HEX  PATH` line")
            continue
        rel = match["path"]
        if not safe_relative(rel):
            report.problems.append(f"{SUMS_FILE}:{number}: {rel!r} leaves the bundle")
            continue
        if rel in listed:
            report.problems.append(f"{SUMS_FILE}:{number}: {rel} listed twice")
        listed[rel] = match["hex"]
    present = set(bundle_files(root))
    for rel in sorted(present - set(listed)):
        report.problems.append(f"{rel}: extra (not in {SUMS_FILE})")
    checkable = []
    for rel in sorted(listed):
        path = root / rel
        if rel not in present:
            report.problems.append(f"{rel}: missing")
        elif path.is_symlink() or not path.is_file():
            report.problems.append(f"{rel}: not a regular file")
        else:
            checkable.append(rel)
    for rel, (hexdigest, size) in _digests(root, checkable, workers).items():
        report.files += 1
        report.bytes += size
        if hexdigest != listed[rel]:
            report.problems.append(f"{rel}: sha256 {hexdigest}, {SUMS_FILE} says {listed[rel]}")
    return report
