"""The one gateway for external processes.

Every helm, helmfile, kubectl, git and pip call is a `Command`: an argv list (never a shell
string), an explicit working directory and environment, the return codes that count as
success, and the exception type raised otherwise. The error keeps stdout and stderr.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from astrago_deploy.core.errors import CommandError


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Command:
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    error: type[CommandError] = CommandError
    ok_codes: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    stdin: str | None = None
    timeout: float | None = None

    def run(self) -> CommandResult:
        """Run the command; raise `self.error` on a return code outside `ok_codes`."""
        argv = [str(a) for a in self.argv]
        try:
            proc = subprocess.run(
                argv,
                cwd=self.cwd,
                env=dict(self.env),
                input=self.stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise self.error(argv, 127, "", f"executable not found: {exc.filename}") from exc
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise self.error(argv, -1, out, f"timed out after {self.timeout}s\n{err}") from exc
        if proc.returncode not in self.ok_codes:
            raise self.error(argv, proc.returncode, proc.stdout, proc.stderr)
        return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)
