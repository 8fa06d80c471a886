"""Typed registry failures, each naming the registry and repository it met.

Messages never carry credentials or tokens: only `host/repository`, what was asked, and why.
"""

from __future__ import annotations

from astrago_deploy.core.errors import FetchError, IntegrityError


class RegistryError(FetchError):
    """A registry request failed; `where` is `host/repository` (or `host` alone)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")


class NotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist in the registry."""


class AccessDeniedError(RegistryError):
    """The registry refused the request even after (re-)authenticating once."""


class DigestMismatchError(IntegrityError):
    """Content served for a digest does not hash to it (or not to the size it was pinned at)."""

    def __init__(self, where: str, what: str, expected: str, actual: str) -> None:
        self.where = where
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{where}: {what} digest mismatch (expected {expected}, got {actual})")
