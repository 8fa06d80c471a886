"""Deployment environments and their value layers.

The stage environments are `dev`, `stage` and `prod`; every folder under
`environments/customers/<name>/` is a customer environment, picked up by the helmfile without
an edit. Values layer `base` -> the stage -> the customer, later layers winning; a customer
site is a production site, so its stage layer is `prod`. This module mirrors the helmfile's
discovery rule and its merge of the layers' values (tests keep both in agreement with
helmfile's own answer) and creates customer environments.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.errors import AstragoError, ConfigError, InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.yaml import CommentedMap, EditedFile

STAGES = ("dev", "stage", "prod")
CUSTOMER_STAGE = "prod"
RESERVED = frozenset({*STAGES, "base", "customers", "default"})
T = TypeVar("T")
# Matched with fullmatch (never `$`, which also accepts a trailing newline).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
)
_NFS_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
_KUBE_CONTEXT = re.compile(r"[A-Za-z0-9@:._/-]{1,253}")
# host[:port][/path] as an image reference spells its registry part (distribution's grammar).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = re.compile(
    rf"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^/:@\[\]]+))(?::(?P<port>[0-9]{{1,5}}))?(?:/{_PATH_COMPONENT})*"
)


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
    if not _DNS_LABEL.fullmatch(name):
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
    # fullmatch: `$` would also accept a trailing newline.
    if re.fullmatch(r"[0-9.]+", value) or not _HOSTNAME.fullmatch(value):
        raise InputError(f"invalid {option} {value!r}: not an IP address or DNS host name")
    return value


def validate_registry(value: str) -> str:
    """`host[:port][/path]`: the host a DNS name or an address (an IPv6 one in brackets), the port
    1-65535, the path image repository components (lowercase, digits, `.`, `_`, `-`)."""
    usage = f"invalid --registry {value!r}: use host[:port][/path], e.g. harbor.site:30002 or harbor.site/proxy"
    match = _REGISTRY.fullmatch(value)
    if match is None:
        if value.split("/", 1)[0].count(":") > 1 and not value.startswith("["):
            raise InputError(f"invalid --registry {value!r}: write an IPv6 address in brackets, e.g. [fd00::5]:30002")
        raise InputError(usage)
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise InputError(usage)
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError as exc:
            raise InputError(usage) from exc
    else:
        validate_host(match["host"], "--registry")
    return value


def validate_nfs_path(value: str) -> str:
    parts = PurePosixPath(value).parts
    if not _NFS_PATH.fullmatch(value) or ".." in parts or "//" in value:
        raise InputError(
            f"invalid --nfs-path {value!r}: use an absolute export path such as /export/astrago "
            "(letters, digits, . _ - @ + /; no '..')"
        )
    return value


def validate_kube_context(value: str) -> str:
    if not _KUBE_CONTEXT.fullmatch(value):
        raise InputError(
            f"invalid --kube-context {value!r}: use letters, digits and @ : . _ / - (at most 253 characters)"
        )
    return value


def customer_settings(ip: str, nfs_server: str, nfs_path: str, kube_context: str, registry: str) -> dict[str, Any]:
    """The settings a new customer's values file holds, as any YAML reader must read them back."""
    return {
        "cluster": {"kubeContext": kube_context, "externalIP": ip},
        "nfs": {"server": nfs_server, "path": nfs_path},
        "offline": {"registry": registry},
    }


def customer_values(name: str, settings: dict[str, Any]) -> str:
    """The text of a new customer's values file: `settings` written by the YAML library (which
    quotes what a reader would take for something else), with comments, since people edit it."""
    doc = CommentedMap()
    for section, entries in settings.items():
        doc[section] = CommentedMap(entries)
    doc.yaml_set_start_comment(
        f"Customer environment {name}: layered over environments/base and environments/prod.\n"
        'Only what differs for this site belongs here. Secrets never do: see README "Secrets".'
    )
    notes = {
        ("cluster", "kubeContext"): f"The kube context `inv deploy --env {name}` must find as the current context.",
        ("cluster", "externalIP"): "The address users and the ingress reach the cluster on.",
        ("offline", "registry"): (
            "Site registry (host[:port][/path]) that every image is pulled from; empty pulls from upstream."
        ),
    }
    for (section, key), note in notes.items():
        doc[section].yaml_set_comment_before_after_key(key, before=note, indent=2)
    return EditedFile(doc).text()


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
    context = validate_kube_context(name if kube_context is None else kube_context)
    if registry:
        validate_registry(registry)
    target = layout.customers_dir / name
    if target.exists():
        raise InputError(f"environment {name!r} already exists at {target}; nothing was written")
    settings = customer_settings(ip, nfs_server, nfs_path, context, registry or "")
    with atomic.staged_tree(layout.customers_dir, name) as staged:
        atomic.write_text(staged / "values.yaml", customer_values(name, settings))
        # What helmfile will read must be what was asked for, value by value and type by type.
        if yaml.read(staged / "values.yaml") != settings:
            raise AstragoError(f"environment {name!r}: values.yaml would not read back as given; nothing written")
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


def value_files(layout: RepoLayout, env: Environment) -> list[Path]:
    """Every value file of the environment's layers that exists: `values.yaml`, `releases/*.yaml`."""
    found: list[Path] = []
    for folder in env.layer_dirs(layout):
        found += [path for path in [folder / "values.yaml"] if path.is_file()]
        found += sorted(path for path in (folder / "releases").glob("*.yaml") if path.is_file())
    return found


def check_value_files(layout: RepoLayout, env: Environment) -> None:
    """Parse every value file of `env`: one that is not YAML is a one-line YamlError at its line
    and column, before helmfile would print the parser's dump of the whole file."""
    for path in value_files(layout, env):
        yaml.read_all(path)


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


def group_equal(per_env: dict[str, T]) -> list[tuple[list[str], T]]:
    """Environments with equal values together, groups and names in the environments' order
    (the upgrade report and the promotion body show what several environments share once)."""
    groups: list[tuple[list[str], T]] = []
    for env, value in per_env.items():
        for names, shared in groups:
            if shared == value:
                names.append(env)
                break
        else:
            groups.append(([env], value))
    return groups
