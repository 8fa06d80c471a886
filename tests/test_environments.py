"""Environments: discovery (agreeing with the helmfile), env.init validation and refusal."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from astrago_deploy.core import yaml
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments

from .conftest import PROJECT, git, snapshot

INV = PROJECT / ".venv" / "bin" / "inv"


def inv(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASTRAGO_ROOT": str(root)}
    return subprocess.run([str(INV), "-r", str(PROJECT), *args], env=env, capture_output=True, text=True)


def test_discovery_layers_customers_over_prod(project: RepoLayout) -> None:
    envs = {e.name: e for e in environments.discover(project)}
    assert list(envs)[:3] == ["dev", "stage", "prod"]
    assert envs["dev"].layers == ("base", "dev")
    assert envs["sample-site"].layers == ("base", "prod", "customers/sample-site")
    assert envs["sample-site"].customer


def test_env_init_then_list_shows_the_customer_and_the_file_is_exact(project: RepoLayout) -> None:
    proc = inv(project.root, "env.init", "acme", "--ip", "10.1.2.3", "--nfs-server", "10.1.2.4", "--nfs-path", "/acme")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"created {project.customers_dir / 'acme' / 'values.yaml'}"
    text = (project.customers_dir / "acme" / "values.yaml").read_text()
    assert text == environments.customer_values("acme", "10.1.2.3", "10.1.2.4", "/acme", "acme", "")
    assert "externalIP: 10.1.2.3" in text and "server: 10.1.2.4" in text and "path: /acme" in text
    listing = inv(project.root, "env.list")
    assert listing.returncode == 0
    assert "acme             customer base -> prod -> customers/acme" in listing.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["acme", "--ip", "999.1.2.3"], "invalid --ip '999.1.2.3': not an IPv4 or IPv6 address"),
        (["Acme_1", "--ip", "10.1.2.3"], "invalid environment name 'Acme_1'"),
        (["prod", "--ip", "10.1.2.3"], "invalid environment name 'prod': it is reserved"),
        (["acme", "--ip", "10.1.2.3", "--nfs-server", "bad host!"], "invalid --nfs-server 'bad host!'"),
        (["acme", "--ip", "10.1.2.3", "--nfs-server", "300.1.1.1"], "invalid --nfs-server '300.1.1.1'"),
        (["acme", "--ip", "10.1.2.3", "--nfs-path", "relative/path"], "invalid --nfs-path 'relative/path'"),
        (["acme", "--ip", "10.1.2.3", "--nfs-path", "/a/../etc"], "invalid --nfs-path '/a/../etc'"),
        (["sample-site", "--ip", "10.1.2.3"], "environment 'sample-site' already exists"),
    ],
)
def test_env_init_refuses_bad_input_and_writes_nothing(project: RepoLayout, args: list[str], message: str) -> None:
    name, *rest = args
    defaults = {"--nfs-server": "10.1.2.4", "--nfs-path": "/acme"}
    for flag, value in defaults.items():
        if flag not in rest:
            rest += [flag, value]
    before = snapshot(project.root)
    proc = inv(project.root, "env.init", name, *rest)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert snapshot(project.root) == before
    assert git(project.root, "status", "--porcelain") == ""


def test_env_init_accepts_ipv6_and_dns_names(project: RepoLayout) -> None:
    path = environments.init_customer(project, "beta-2", "fd00::10", "nfs.beta.example", "/exports/astrago",
                                      registry="harbor.beta.example:30002")
    text = path.read_text()
    assert "externalIP: fd00::10" in text
    assert "registry: harbor.beta.example:30002" in text
    with pytest.raises(InputError, match="already exists"):
        environments.init_customer(project, "beta-2", "10.0.0.1", "nfs", "/x")


def test_every_value_layer_once_in_precedence_order(project: RepoLayout) -> None:
    layers = [p.relative_to(project.environments_dir).as_posix() for p in environments.all_layer_dirs(project)]
    customers = [f"customers/{e.name}" for e in environments.discover(project) if e.customer]
    assert customers and layers == ["base", "dev", "stage", "prod", *customers]


@pytest.mark.parametrize("registry", ["[fd00::5]:30002", "[fd00::5]", "10.1.2.3:30002/proxy", "harbor.beta.example"])
def test_env_init_accepts_registry_host_port_forms(project: RepoLayout, registry: str) -> None:
    path = environments.init_customer(project, "gamma", "10.0.0.9", "10.0.0.8", "/x", registry=registry)
    # A bracketed IPv6 literal is YAML flow syntax: the file must quote it and read it back as written.
    assert yaml.read_mapping(path)["offline"]["registry"] == registry


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("fd00::5:30002", "write an IPv6 address in brackets"),
        ("harbor.local:http", "use host[:port][/path]"),
        ("harbor.local:70000", "use host[:port][/path]"),
        ("user@harbor.local", "use host[:port][/path]"),
        ("[not-an-ip]:30002", "use host[:port][/path]"),
    ],
)
def test_env_init_refuses_a_bad_registry(project: RepoLayout, registry: str, message: str) -> None:
    with pytest.raises(InputError, match=f"invalid --registry '{re.escape(registry)}': {re.escape(message)}"):
        environments.init_customer(project, "gamma", "10.0.0.9", "10.0.0.8", "/x", registry=registry)
    assert not (project.customers_dir / "gamma").exists()


def test_env_init_names_the_bad_registry_host() -> None:
    with pytest.raises(InputError, match="invalid --registry 'bad host!': not an IP address or DNS host name"):
        environments.validate_registry("bad host!:30002")
