"""Registry authentication: challenges, the Docker token protocol and the token cache.

A registry answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` (token
auth) or `Basic realm=...`. For Bearer, the client asks the realm for a token (query
parameters URL-encoded, one `scope` parameter per scope, the registry's credentials as Basic
auth when set) and sends it back as `Authorization: Bearer`. Tokens are cached keyed by
(registry host, scope): a token obtained from one registry is never offered to another, even
for the same repository path. Credentials come from `ASTRAGO_REPO_<HOST>_USERNAME` /
`_PASSWORD`; they and the tokens never appear in a message.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

# auth-param = token "=" ( token / quoted-string ), RFC 7235.
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
# A token without `expires_in` is valid for 60 seconds (Docker token spec).
DEFAULT_TOKEN_SECONDS = 60


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lower-case
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def scopes(self) -> list[str]:
        # Registries join several scopes with spaces in one `scope` parameter.
        return self.params.get("scope", "").split()


def parse_challenge(header: str) -> Challenge | None:
    """The first Bearer challenge in `header`, else the first Basic one, else None."""
    found: dict[str, Challenge] = {}
    for match in re.finditer(r"(?:^|,)\s*(Bearer|Basic)\b", header, flags=re.IGNORECASE):
        scheme = match.group(1).lower()
        if scheme in found:
            continue
        rest = header[match.end() :]
        following = re.search(r",\s*(Bearer|Basic)\b", rest, flags=re.IGNORECASE)
        segment = rest[: following.start()] if following else rest
        params = {
            m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
            for m in _PARAM.finditer(segment)
        }
        found[scheme] = Challenge(scheme, params)
    return found.get("bearer") or found.get("basic")


def credentials_key(registry: str) -> str:
    """`ASTRAGO_REPO_<KEY>_...`: the host[:port] upper-cased, every other character `_`."""
    return re.sub(r"[^A-Z0-9]", "_", registry.upper())


def registry_credentials(registry: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(`user`, `password`) for `registry` (`host[:port]`) from the environment, if both are set."""
    key = credentials_key(registry)
    user = environ.get(f"ASTRAGO_REPO_{key}_USERNAME")
    password = environ.get(f"ASTRAGO_REPO_{key}_PASSWORD")
    return (user, password) if user and password else None


def credentials_hint(registry: str) -> str:
    key = credentials_key(registry)
    return f"ASTRAGO_REPO_{key}_USERNAME/_PASSWORD"


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # time.monotonic()

    @property
    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at


class TokenCache:
    """Bearer tokens keyed by (registry host, scope); thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], Token] = {}
        self._lock = threading.Lock()

    def get(self, registry: str, scope: str) -> Token | None:
        with self._lock:
            token = self._tokens.get((registry.lower(), scope))
        return token if token is not None and token.fresh else None

    def put(self, registry: str, scope: str, value: str, expires_in: float) -> Token:
        # Renew a little early: a token that expires in flight costs a 401 and a re-auth.
        lifetime = max(1.0, expires_in - min(10.0, expires_in / 10))
        token = Token(value, time.monotonic() + lifetime)
        with self._lock:
            self._tokens[(registry.lower(), scope)] = token
        return token

    def drop(self, registry: str, scope: str) -> None:
        with self._lock:
            self._tokens.pop((registry.lower(), scope), None)
