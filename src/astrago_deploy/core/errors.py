"""The exception tree of the task suite.

Every failure a user can cause or meet is an `AstragoError`; its message is one line (or a
short block) that says what was wrong and, where possible, what to do. The CLI layer turns
these into `invoke.Exit` messages; a traceback appears only with `--debug`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class AstragoError(Exception):
    """Base class: a failure with a message meant for the user."""


class ConfigError(AstragoError):
    """A committed configuration file (lock, manifest, helmfile, values) is invalid."""


class YamlError(ConfigError):
    """A file (or fetched document) is not valid YAML: one line `FILE:LINE:COLUMN: not valid YAML:
    PROBLEM (WHAT TO DO)`, whatever the parser's own message looked like."""

    DEFAULT_FIX = "correct the YAML at that place"

    def __init__(
        self, path: str | Path, line: int | None, column: int | None, reason: str, fix: str = DEFAULT_FIX
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason
        self.fix = fix
        where = str(path)
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: not valid YAML: {reason} ({fix})")

    def with_fix(self, fix: str) -> YamlError:
        """The same error with another "what to do"."""
        return YamlError(self.path, self.line, self.column, self.reason, fix)


class InputError(AstragoError):
    """A command-line argument or option is invalid; nothing was written."""


class ImageReferenceError(AstragoError):
    """An image reference does not parse (`invalid image reference 'X': WHY`); where it was found
    (release, resource, field) is added by the inventory that met it."""


class IntegrityError(AstragoError):
    """A file's content does not match the digest it is pinned to."""


class FetchError(AstragoError):
    """A download or repository look-up failed."""


class ArchiveError(AstragoError):
    """An archive is malformed or unsafe to extract."""


class ToolNotInstalledError(AstragoError):
    """A pinned tool is missing or does not match its pin."""


class FileAccessError(AstragoError):
    """A file or folder could not be read or written: permission, disk full, a folder where a
    file belongs, or text that is not UTF-8. The message names the path (and line, if known)."""

    def __init__(self, path: object, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{reason}")


def file_error(exc: OSError, path: object = None) -> FileAccessError:
    """The typed error for an OSError met reading or writing `path` (or the file it names)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename2 is not None:
        reason = f"{reason} (-> {exc.filename2})"
    return FileAccessError(path if path is not None else exc.filename, reason)


def _tail(text: str, lines: int = 20) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept)


class CommandError(AstragoError):
    """An external command failed; keeps argv, exit code, stdout and stderr.

    `problem` replaces "failed (exit N)" when the command did not simply exit non-zero (it timed
    out, was interrupted, could not start, printed non-UTF-8 output); `output` is what the tail
    in the message is taken from when it is not stderr-or-stdout (both streams of a streamed or
    timed-out command); `log` is the file holding a streamed command's whole output.
    """

    tool = "command"

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stdout: str,
        stderr: str,
        *,
        problem: str | None = None,
        output: str | None = None,
        log: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.problem = problem
        self.output = output
        self.log = log
        super().__init__(self._message())

    def headline(self) -> str:
        return f"{self.tool} {self.problem or f'failed (exit {self.returncode})'}"

    def _detail(self) -> str:
        if self.output is not None:
            return _tail(self.output)
        return _tail(self.stderr) or _tail(self.stdout)

    def _message(self) -> str:
        text = f"{self.headline()}: {' '.join(self.argv)}"
        detail = self._detail()
        if detail:
            text = f"{text}\n{detail}"
        if self.log is not None:
            text = f"{text}\nfull output: {self.log}"
        return text


class HelmError(CommandError):
    tool = "helm"


class HelmfileError(CommandError):
    tool = "helmfile"

    def _detail(self) -> str:
        if self.output is not None:
            return _tail(_without_helmfile_wrapping(self.output))
        # helmfile wraps helm's failure in ARGS/ERROR/EXIT STATUS/STDERR/COMBINED OUTPUT
        # sections; helm's own stderr says what went wrong.
        stderr = self.stderr
        if "STDERR:" in stderr:
            stderr = stderr.split("STDERR:", 1)[1]
        stderr = stderr.split("COMBINED OUTPUT:", 1)[0]
        return _tail(stderr) or _tail(self.stdout)


# The sections helmfile wraps around a failed helm call; STDERR (helm's own words) is kept.
_HELMFILE_SECTIONS = ("PATH:", "ARGS:", "ERROR:", "EXIT STATUS", "COMBINED OUTPUT:")


def _without_helmfile_wrapping(output: str) -> str:
    """A streamed helmfile output (its own lines and helm's, in order) without the sections that
    repeat helm's argument list and output, so the tail shows what went wrong."""
    kept: list[str] = []
    skipping = False
    for line in output.splitlines():
        if line and not line.startswith(" "):
            heading = line.strip()
            if heading in _HELMFILE_SECTIONS or heading == "STDERR:":
                skipping = heading != "STDERR:"
                continue
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


class KubectlError(CommandError):
    tool = "kubectl"


class GitError(CommandError):
    tool = "git"


class RefMovedError(GitError):
    """A compare-and-swap on a git ref was refused: the ref is not where we expected it.

    `expected` and `found` are object ids ("" for absent); `mover` says who moved it last, as
    far as the reflog knows. Nothing was changed by the refused update.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stdout: str,
        stderr: str,
        ref: str,
        expected: str,
        found: str,
        mover: str = "",
    ) -> None:
        self.ref = ref
        self.expected = expected
        self.found = found
        self.mover = mover
        super().__init__(argv, returncode, stdout, stderr)

    def _message(self) -> str:
        def shown(value: str) -> str:
            # An object id is shortened; "" is an absent ref; anything else is said as it is.
            if all(c in "0123456789abcdef" for c in value) and len(value) in (40, 64):
                return value[:12]
            return value or "absent"

        text = f"{self.ref} moved: expected {shown(self.expected)}, found {shown(self.found)}"
        if self.mover:
            text += f" ({self.mover})"
        return f"{text}; nothing was changed"


class PipError(CommandError):
    tool = "pip"
