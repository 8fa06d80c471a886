"""`inv bundle.load --containerd-config DIR`: containerd `hosts.toml` files that send every pull
of an upstream registry to the site registry.

containerd reads `<config_path>/<host[:port]>/hosts.toml` (config_path is usually
`/etc/containerd/certs.d`). For each upstream host a bundle's images come from, the file names
the site registry as the host to pull and resolve from. The site keeps an image's path with the
upstream host dropped (`images.reference.site_reference`), so `nvcr.io/nvidia/x` is asked for as
`/v2/nvidia/x/...`, which is the path containerd sends anyway; a site registry with a path
(`HOST/prefix`) is given as `/v2/prefix` with `override_path`. Docker Hub's server is
`registry-1.docker.io`, as containerd spells it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from astrago_deploy.core import atomic
from astrago_deploy.core.errors import InputError
from astrago_deploy.registry.reference import split_host_port, uses_plain_http

HOSTS_FILE = "hosts.toml"
_SERVERS = {"docker.io": "https://registry-1.docker.io"}


def hosts_toml(upstream: str, registry: str, plain_http: bool) -> str:
    """The hosts.toml of `upstream` pointing at the site `registry` (`host[:port][/path]`)."""
    host, _, prefix = registry.strip().rstrip("/").partition("/")
    split_host_port(host)
    scheme = "http" if plain_http else "https"
    lines = [f'server = "{_SERVERS.get(upstream, f"https://{upstream}")}"', ""]
    if prefix:
        lines += [
            f'[host."{scheme}://{host}/v2/{prefix}"]',
            '  capabilities = ["pull", "resolve"]',
            "  override_path = true",
        ]
    else:
        lines += [f'[host."{scheme}://{host}"]', '  capabilities = ["pull", "resolve"]']
    return "\n".join(lines) + "\n"


def write_hosts(folder: Path, upstreams: Iterable[str], registry: str, plain_hosts: frozenset[str]) -> list[Path]:
    """One `folder/<upstream>/hosts.toml` per upstream host (written atomically); their paths."""
    site_host = registry.strip().partition("/")[0]
    plain = uses_plain_http(site_host, plain_hosts)
    written = []
    for upstream in sorted(set(upstreams)):
        if not upstream or "/" in upstream or upstream.startswith("."):
            raise InputError(f"invalid registry host {upstream!r} for a containerd hosts folder")
        target = folder / upstream / HOSTS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(target, hosts_toml(upstream, registry, plain))
        written.append(target)
    return written
