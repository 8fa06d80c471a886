"""Tasks: list and create deployment environments."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors


@task(name="list")
@user_errors
def list_(ctx: Context) -> None:
    """Show every environment and its value layers (lowest precedence first)."""
    from astrago_deploy.model import environments

    layout = layout_of(ctx)
    for env in environments.discover(layout):
        kind = "customer" if env.customer else "stage"
        layers = " -> ".join(
            layer if (layout.environments_dir / layer).is_dir() else f"{layer} (missing)" for layer in env.layers
        )
        say(f"{env.name:16} {kind:8} {layers}")


@task(
    help={
        "name": "Customer environment name (DNS label)",
        "ip": "External IP address of the site",
        "nfs_server": "NFS server (IP or host name)",
        "nfs_path": "Absolute NFS export path",
        "kube_context": "Kube context deploys must run against (default: NAME)",
        "registry": "Site registry host[:port][/path] for offline installs (sets offline.registry)",
    }
)
@user_errors
def init(
    ctx: Context,
    name: str,
    ip: str,
    nfs_server: str,
    nfs_path: str,
    kube_context: str | None = None,
    registry: str | None = None,
) -> None:
    """Create environments/customers/NAME/values.yaml; refuses bad input or an existing name."""
    from astrago_deploy.model import environments

    path = environments.init_customer(layout_of(ctx), name, ip, nfs_server, nfs_path, kube_context, registry)
    say(f"created {path}")


ns = Collection("env", list_, init)
