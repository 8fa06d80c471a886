"""The content digest of a vendored chart tree.

Deterministic over relative paths, entry types, the executable bit and bytes; independent of
the checkout path, timestamps, owners and umask, so every machine computes the same value.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
            mode = "755" if path.stat().st_mode & 0o111 else "644"
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            line = f"f {mode} {rel} {content}\n"
        total.update(line.encode("utf-8", "surrogateescape"))
    return f"sha256:{total.hexdigest()}"
