"""Reading the text files people write (values, patches, tiers, the lock) with errors that name them.

A file we read must be UTF-8; one that is not, or that cannot be read at all (permission, a
folder where the file belongs), is a `FileAccessError` naming the path, never a traceback.
A missing file still raises `FileNotFoundError`: whether that is fine is the caller's call.
"""

from __future__ import annotations

from pathlib import Path

from astrago_deploy.core.errors import FileAccessError, file_error


def decode_text(data: bytes, where: object, keep_line_endings: bool = False) -> str:
    """`data` as UTF-8, with universal newlines (as `Path.read_text` gives them) unless
    `keep_line_endings` (the round-trip YAML editor keeps a CRLF file CRLF)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        raise FileAccessError(where, reason, line) from exc
    if keep_line_endings:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_bytes(path: Path) -> bytes:
    """The bytes of `path`; read failures other than a missing file become `FileAccessError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise file_error(exc, path) from exc


def read_text(path: Path) -> str:
    """The UTF-8 text of `path` (universal newlines); read failures become `FileAccessError`."""
    return decode_text(read_bytes(path), path)
