"""`inv bundle.load --containerd-config DIR`: containerd `hosts.toml` files that send every pull
of an upstream registry to the site registry.

containerd reads `<config_path>/<host[:port]>/hosts.toml` (config_path is usually
`/etc/containerd/certs.d`). For each upstream host a bundle's images come from, the file names
the site registry as the host to pull and resolve from. The site keeps an image's path with the
upstream host dropped (`images.reference.site_reference`), so `nvcr.io/nvidia/x` is asked for as
`/v2/nvidia/x/...`, which is the path containerd sends anyway; a site registry with a path
(`HOST/prefix`) is given as `/v2/prefix` with `override_path`. Docker Hub's server is
`registry-1.docker.io`, as containerd spells it. A site registry loaded with `--insecure` over
HTTPS gets `skip_verify`, so the nodes take its certificate as the load did.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from astrago_deploy.core import atomic
from astrago_deploy.core.errors import InputError
from astrago_deploy.registry.reference import split_host_port

HOSTS_FILE = "hosts.toml"
_SERVERS = {"docker.io": "https://registry-1.docker.io"}


def hosts_toml(upstream: str, registry: str, plain_http: bool, skip_verify: bool = False) -> str:
    """The hosts.toml of `upstream` pointing at the site `registry` (`host[:port][/path]`);
    `skip_verify` for an HTTPS site registry whose certificate is not checked."""
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
    if skip_verify and not plain_http:
        lines.append("  skip_verify = true")
    return "\n".join(lines) + "\n"


def write_hosts(
    folder: Path, upstreams: Iterable[str], registry: str, plain_http: bool, skip_verify: bool = False
) -> list[Path]:
    """One `folder/<upstream>/hosts.toml` per upstream host (written atomically); their paths.
    `plain_http`: the site registry speaks plain HTTP (what the load's client found)."""
    written = []
    for upstream in sorted(set(upstreams)):
        if not upstream or "/" in upstream or upstream.startswith("."):
            raise InputError(f"invalid registry host {upstream!r} for a containerd hosts folder")
        target = folder / upstream / HOSTS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(target, hosts_toml(upstream, registry, plain_http, skip_verify))
        written.append(target)
    return written
