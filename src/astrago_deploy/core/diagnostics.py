"""One type for "a problem at file:line", and the one line users see for it.

Every check that points at a place in a file (the override check, the secret scan, yamllint,
charts.verify, validation of rendered manifests, the upgrade report's unreadable overrides)
returns `Diagnostic`s; `format_diagnostic` renders each as `FILE:LINE: KEY: message (fix: ...)`,
so every check reads the same and an editor or CI annotation can jump to the place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from astrago_deploy.core.errors import YamlError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """A problem found at a place: `file` as users see it (relative to the repository where it
    lies inside it), `line` 1-based or None for the whole file, `key` the value path, resource
    or rule it is about ("" when none), and `fix` what to do, when there is one thing to do."""

    file: str
    line: int | None
    key: str
    severity: Severity
    message: str
    fix: str = ""
    column: int | None = None  # 1-based, when the check knows it (a YAML parser does)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "column": self.column,
        }


def error(file: str, line: int | None, key: str, message: str, fix: str = "") -> Diagnostic:
    return Diagnostic(file, line, key, "error", message, fix)


def warning(file: str, line: int | None, key: str, message: str, fix: str = "") -> Diagnostic:
    return Diagnostic(file, line, key, "warning", message, fix)


def yaml_error(file: str, exc: YamlError, fix: str | None = None) -> Diagnostic:
    """A file that is not valid YAML, at the parser's line and column (`fix` replaces the error's own)."""
    message = f"not valid YAML: {exc.reason}"
    return Diagnostic(file, exc.line, "", "error", message, exc.fix if fix is None else fix, exc.column)


def shown_path(path: Path | str, root: Path) -> str:
    """`path` relative to `root` when it lies inside it, else as given."""
    path = Path(path)
    return str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) else str(path)


def format_diagnostic(diagnostic: Diagnostic) -> str:
    """`FILE:LINE[:COLUMN]: [warning: ]KEY: message (fix: ...)`; empty parts are left out."""
    where = diagnostic.file + (f":{diagnostic.line}" if diagnostic.line else "")
    where += f":{diagnostic.column}" if diagnostic.line and diagnostic.column else ""
    parts = [where] if where else []
    if diagnostic.severity == "warning":
        parts.append("warning")
    if diagnostic.key:
        parts.append(diagnostic.key)
    text = ": ".join([*parts, diagnostic.message])
    return f"{text} (fix: {diagnostic.fix})" if diagnostic.fix else text


def errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.is_error]
