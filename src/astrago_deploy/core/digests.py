"""Content digests: of a file, of a tree (a vendored chart's, the render key's inputs).

A tree digest is deterministic over relative paths, entry types, the executable bit and
bytes; independent of the checkout path, timestamps, owners and umask, so every machine
computes the same value.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def hash_file(path: Path, algorithm: str = "sha256") -> tuple[str, int]:
    """(hex digest, size) of a file, read in 1 MiB blocks (hashlib releases the GIL for them,
    so threads hash files in parallel)."""
    digest = hashlib.new(algorithm)
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> str:
    return hash_file(path)[0]


def _mode(path: Path) -> str:
    return "755" if path.stat().st_mode & 0o111 else "644"


def path_digest(path: Path) -> str:
    """`tree_digest` of a folder, the mode and `sha256:<hex>` of a file, `absent` for nothing."""
    if path.is_dir() and not path.is_symlink():
        return tree_digest(path)
    if path.is_file():
        return f"{_mode(path)} sha256:{sha256_file(path)}"
    return "absent"


def tree_digest(root: Path) -> str:
    """`sha256:<hex>` over every entry below `root`, in sorted relative-path order."""
    if not root.is_dir():
        raise FileNotFoundError(root)
    entries: list[tuple[str, Path]] = []
    for folder, dirnames, filenames in os.walk(root):
        base = Path(folder)
        for name in [*dirnames, *filenames]:
            path = base / name
            entries.append((path.relative_to(root).as_posix(), path))
    total = hashlib.sha256()
    for rel, path in sorted(entries):
        if path.is_symlink():
            line = f"l {rel} {os.readlink(path)}\n"
        elif path.is_dir():
            line = f"d {rel}\n"
        else:
            line = f"f {_mode(path)} {rel} {sha256_file(path)}\n"
        total.update(line.encode("utf-8", "surrogateescape"))
    return f"sha256:{total.hexdigest()}"
