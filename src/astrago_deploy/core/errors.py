"""The exception tree of the task suite.

Every failure a user can cause or meet is an `AstragoError`; its message is one line (or a
short block) that says what was wrong and, where possible, what to do. The CLI layer turns
these into `invoke.Exit` messages; a traceback appears only with `--debug`.
"""

from __future__ import annotations

from collections.abc import Sequence


class AstragoError(Exception):
    """Base class: a failure with a message meant for the user."""


class ConfigError(AstragoError):
    """A committed configuration file (lock, manifest, helmfile, values) is invalid."""


class InputError(AstragoError):
    """A command-line argument or option is invalid; nothing was written."""


class IntegrityError(AstragoError):
    """A file's content does not match the digest it is pinned to."""


class FetchError(AstragoError):
    """A download or repository look-up failed."""


class ArchiveError(AstragoError):
    """An archive is malformed or unsafe to extract."""


class ToolNotInstalledError(AstragoError):
    """A pinned tool is missing or does not match its pin."""


def _tail(text: str, lines: int = 20) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept)


class CommandError(AstragoError):
    """An external command failed; keeps argv, exit code, stdout and stderr."""

    tool = "command"

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(self._message())

    def _message(self) -> str:
        shown = " ".join(self.argv)
        detail = _tail(self.stderr) or _tail(self.stdout)
        text = f"{self.tool} failed (exit {self.returncode}): {shown}"
        return f"{text}\n{detail}" if detail else text


class HelmError(CommandError):
    tool = "helm"


class HelmfileError(CommandError):
    tool = "helmfile"

    def _message(self) -> str:
        # helmfile wraps helm's failure in ARGS/ERROR/EXIT STATUS/STDERR/COMBINED OUTPUT
        # sections; helm's own stderr says what went wrong.
        stderr = self.stderr
        if "STDERR:" in stderr:
            stderr = stderr.split("STDERR:", 1)[1]
        stderr = stderr.split("COMBINED OUTPUT:", 1)[0]
        shown = " ".join(self.argv)
        detail = _tail(stderr) or _tail(self.stdout)
        text = f"{self.tool} failed (exit {self.returncode}): {shown}"
        return f"{text}\n{detail}" if detail else text


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
