"""Image and artifact references, and whether a registry is spoken to over plain HTTP.

A reference is `host[:port]/path[:tag][@digest]`. The first component is always the registry
(no docker.io defaults: every reference this suite handles names its registry); the path may
hold dots and slashes, so `127.0.0.1:5000/nvcr.io/nvidia/driver:v1` is the repository
`nvcr.io/nvidia/driver` of the registry `127.0.0.1:5000`, the way a Harbor proxy cache lays out
upstream hosts. IPv6 registries keep their brackets: `[fd00::5]:8443/team/app`.

Plain HTTP is decided by address, never by a name's prefix: an IP literal that is loopback
(`127.0.0.0/8`, `::1`) or exactly `localhost`, plus the hosts a caller lists
(`ASTRAGO_OCI_PLAIN_HTTP`). `localhost.corp.example` and `127.evil.example` are remote names
and get HTTPS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from astrago_deploy.core.errors import InputError

PLAIN_HTTP_VARIABLE = "ASTRAGO_OCI_PLAIN_HTTP"

# The OCI distribution spec's grammar for repository names, tags and digests.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?$")


def split_host_port(registry: str) -> tuple[str, int | None]:
    """(`host`, port) of `host[:port]` or `[v6]:port`; the host without brackets."""
    match = _HOST.match(registry)
    if not match:
        raise InputError(f"invalid registry host {registry!r} (use host[:port], IPv6 in brackets)")
    host = match["v6"] or match["name"]
    if match["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InputError(f"invalid IPv6 registry address {registry!r}") from exc
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise InputError(f"invalid port in registry host {registry!r}")
    return host, port


def is_loopback(registry: str) -> bool:
    """True for `localhost` exactly and for loopback IP literals (with or without a port)."""
    host, _port = split_host_port(registry)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_hosts(environ: Mapping[str, str]) -> frozenset[str]:
    """The hosts named in `ASTRAGO_OCI_PLAIN_HTTP` (comma-separated `host` or `host:port`)."""
    return frozenset(h.strip().lower() for h in environ.get(PLAIN_HTTP_VARIABLE, "").split(",") if h.strip())


def uses_plain_http(registry: str, listed: Iterable[str] = ()) -> bool:
    """Whether `registry` is spoken to over HTTP: loopback, or listed by host or host:port."""
    if is_loopback(registry):
        return True
    host, _port = split_host_port(registry)
    names = {n.lower() for n in listed}
    return registry.lower() in names or host.lower() in names


@dataclass(frozen=True)
class Reference:
    """`registry/repository` with an optional tag and digest (the digest wins when both are set)."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> Reference:
        raw = text.strip().removeprefix("oci://")
        registry, slash, rest = raw.partition("/")
        if not slash or not rest:
            raise InputError(f"invalid reference {text!r}: expected host[:port]/path[:tag][@digest]")
        split_host_port(registry)
        rest, _at, digest = rest.partition("@")
        path, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:
            path, tag = rest, ""
        return cls(registry, path, tag, digest).checked(text)

    def checked(self, shown: str = "") -> Reference:
        shown = shown or str(self)
        if not REPOSITORY.match(self.repository):
            raise InputError(f"invalid repository {self.repository!r} in {shown!r} (lower-case a-z0-9 . _ - /)")
        if self.tag and not TAG.match(self.tag):
            raise InputError(f"invalid tag {self.tag!r} in {shown!r}")
        if self.digest and not DIGEST.match(self.digest):
            raise InputError(f"invalid digest {self.digest!r} in {shown!r} (sha256:<64 hex> or sha512:<128 hex>)")
        return self

    @property
    def name(self) -> str:
        """`registry/repository`, the place error messages name."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What the manifest endpoint is asked for: the digest if pinned, else the tag."""
        if self.digest:
            return self.digest
        if self.tag:
            return self.tag
        raise InputError(f"{self.name}: a tag or digest is needed")

    def at(self, target: str) -> Reference:
        """The same repository at a digest (`sha256:...`) or a tag."""
        if DIGEST.match(target):
            return replace(self, tag="", digest=target)
        return replace(self, tag=target, digest="").checked()

    def in_repository(self, repository: str, registry: str | None = None) -> Reference:
        return replace(self, repository=repository, registry=registry or self.registry).checked()

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
