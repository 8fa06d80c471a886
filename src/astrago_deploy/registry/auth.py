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
