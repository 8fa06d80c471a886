"""Deployment environments and their value layers.

The stage environments are `dev`, `stage` and `prod`; every folder under
`environments/customers/<name>/` is a customer environment, picked up by the helmfile without
an edit. Values layer `base` -> the stage -> the customer, later layers winning; a customer
site is a production site, so its stage layer is `prod`. This module mirrors the helmfile's
discovery rule (a test keeps the two in agreement) and creates customer environments.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.errors import ConfigError, InputError
from astrago_deploy.core.layout import RepoLayout

STAGES = ("dev", "stage", "prod")
CUSTOMER_STAGE = "prod"
RESERVED = frozenset({*STAGES, "base", "customers", "default"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_NFS_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")


@dataclass(frozen=True)
class Environment:
    name: str
    layers: tuple[str, ...]  # relative to environments/, lowest precedence first
    customer: bool

    def layer_dirs(self, layout: RepoLayout) -> list[Path]:
        return [layout.environments_dir / layer for layer in self.layers]


def discover(layout: RepoLayout) -> list[Environment]:
    """Every environment the helmfile defines: the stages, then customers by name."""
    envs = [Environment(stage, ("base", stage), False) for stage in STAGES]
    if layout.customers_dir.is_dir():
        for entry in sorted(layout.customers_dir.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                layers = ("base", CUSTOMER_STAGE, f"customers/{entry.name}")
                envs.append(Environment(entry.name, layers, True))
    return envs


def all_layer_dirs(layout: RepoLayout) -> list[Path]:
    """Every value layer folder any environment reads, each once: base, the stages, the customers."""
    layers = dict.fromkeys(layer for env in discover(layout) for layer in env.layers)
    return [layout.environments_dir / layer for layer in layers]


def get(layout: RepoLayout, name: str) -> Environment:
    envs = {env.name: env for env in discover(layout)}
    if name not in envs:
        raise InputError(f"unknown environment {name!r}; known: {', '.join(envs)}")
    return envs[name]


def select(layout: RepoLayout, names: list[str] | None) -> list[Environment]:
    """The named environments (in the order given), or all when none are named."""
    if not names:
        return discover(layout)
    return [get(layout, name) for name in names]


def validate_name(name: str) -> None:
    if not _DNS_LABEL.match(name):
        raise InputError(
            f"invalid environment name {name!r}: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    if name in RESERVED:
        raise InputError(f"invalid environment name {name!r}: it is reserved ({', '.join(sorted(RESERVED))})")


def validate_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise InputError(f"invalid --ip {value!r}: not an IPv4 or IPv6 address") from exc


def validate_host(value: str, option: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", value) or not _HOSTNAME.match(value):
        raise InputError(f"invalid {option} {value!r}: not an IP address or DNS host name")
    return value


def validate_registry(value: str) -> str:
    """`host[:port][/path]`, the host a name or an address (an IPv6 one in brackets)."""
    usage = f"invalid --registry {value!r}: use host[:port][/path], e.g. harbor.site:30002"
    if value.split("/", 1)[0].count(":") > 1 and not value.startswith("["):
        raise InputError(f"invalid --registry {value!r}: write an IPv6 address in brackets, e.g. [fd00::5]:30002")
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a bad [address]
        raise InputError(usage) from exc
    if port == 0 or parts.query or parts.fragment or "@" in parts.netloc:
        raise InputError(usage)
    validate_host(parts.hostname or "", "--registry")
    return value


def validate_nfs_path(value: str) -> str:
    parts = PurePosixPath(value).parts
    if not _NFS_PATH.match(value) or ".." in parts or "//" in value:
        raise InputError(
            f"invalid --nfs-path {value!r}: use an absolute export path such as /export/astrago "
            "(letters, digits, . _ - @ + /; no '..')"
        )
    return value


def customer_values(name: str, ip: str, nfs_server: str, nfs_path: str, kube_context: str, registry: str) -> str:
    """The text of a new customer's values file (comments included: people edit it)."""
    # Validated values can still read as something else (a context named `yes`, `1e3`).
    kube_context, ip, nfs_server, nfs_path = map(yaml.scalar, (kube_context, ip, nfs_server, nfs_path))
    registry_line = f"  registry: {yaml.scalar(registry)}" if registry else '  registry: ""'
    return f"""# Customer environment {name}: layered over environments/base and environments/prod.
# Only what differs for this site belongs here. Secrets never do: see README "Secrets".
cluster:
  # The kube context `inv deploy --env {name}` must find as the current context.
  kubeContext: {kube_context}
  # The address users and the ingress reach the cluster on.
  externalIP: {ip}
nfs:
  server: {nfs_server}
  path: {nfs_path}
offline:
  # Site registry (host[:port]) that every image is pulled from; empty pulls from upstream.
{registry_line}
"""


def init_customer(
    layout: RepoLayout,
    name: str,
    ip: str,
    nfs_server: str,
    nfs_path: str,
    kube_context: str | None = None,
    registry: str | None = None,
) -> Path:
    """Create `environments/customers/NAME/values.yaml`; validates everything first."""
    validate_name(name)
    ip = validate_ip(ip)
    nfs_server = validate_host(nfs_server, "--nfs-server")
    nfs_path = validate_nfs_path(nfs_path)
    context = kube_context or name
    if not re.fullmatch(r"[A-Za-z0-9@:._/-]{1,253}", context):
        raise InputError(f"invalid --kube-context {context!r}")
    if registry:
        validate_registry(registry)
    target = layout.customers_dir / name
    if target.exists():
        raise InputError(f"environment {name!r} already exists at {target}; nothing was written")
    text = customer_values(name, ip, nfs_server, nfs_path, context, registry or "")
    with atomic.staging_dir(layout.customers_dir, name) as staged:
        atomic.write_text(staged / "values.yaml", text)
        try:
            # rename() of a directory onto an existing non-empty one fails: no overwrite race.
            staged.rename(target)
        except OSError as exc:
            raise InputError(f"environment {name!r} already exists at {target}; nothing was written") from exc
    return target / "values.yaml"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, key by key: mappings merge, anything else replaces (how helmfile
    layers environment values, and how Helm puts a parent's values over a subchart's)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def settings(layout: RepoLayout, env: Environment) -> dict[str, Any]:
    """The environment's settings: every layer's values.yaml merged, later layers winning
    (as helmfile merges its environment values)."""
    merged: dict[str, Any] = {}
    for folder in env.layer_dirs(layout):
        merged = deep_merge(merged, yaml.read_mapping(folder / "values.yaml", missing_ok=True))
    return merged


def setting(layout: RepoLayout, env: Environment, dotted: str) -> Any:
    """One setting by its dotted path (`cluster.kubeContext`), None when unset.

    A scalar where the path needs a mapping (`cluster: prod`) is a ConfigError naming the key,
    not an AttributeError deep in a task.
    """
    node: Any = settings(layout, env)
    walked: list[str] = []
    for part in dotted.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            where = ".".join(walked)
            raise ConfigError(
                f"environment {env.name}: setting {where} must be a mapping (it holds {type(node).__name__}); "
                f"see its values.yaml layers under environments/"
            )
        node = node.get(part)
        walked.append(part)
    return node
