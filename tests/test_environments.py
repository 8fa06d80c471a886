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
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT, git, snapshot

INV = PROJECT / ".venv" / "bin" / "inv"


def inv(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASTRAGO_ROOT": str(root)}
    return subprocess.run([str(INV), "-r", str(PROJECT), *args], env=env, capture_output=True, text=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_discovery_layers_customers_over_prod(project: RepoLayout) -> None:
    envs = {e.name: e for e in environments.discover(project)}
    assert list(envs)[:3] == ["dev", "stage", "prod"]
    assert envs["dev"].layers == ("base", "dev")
    assert envs["sample-site"].layers == ("base", "prod", "customers/sample-site")
    assert envs["sample-site"].customer


def test_env_init_then_list_shows_the_customer_and_the_values_read_back(project: RepoLayout) -> None:
    proc = inv(project.root, "env.init", "acme", "--ip", "10.1.2.3", "--nfs-server", "10.1.2.4", "--nfs-path", "/acme")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"created {project.customers_dir / 'acme' / 'values.yaml'}"
    path = project.customers_dir / "acme" / "values.yaml"
    # Compared with literal values, read back by the Kubernetes-compatible reader: not with the writer's output.
    assert yaml.read_mapping(path) == {
        "cluster": {"kubeContext": "acme", "externalIP": "10.1.2.3"},
        "nfs": {"server": "10.1.2.4", "path": "/acme"},
        "offline": {"registry": ""},
    }
    text = path.read_text()
    assert text.startswith("# Customer environment acme: layered over environments/base and environments/prod.\n")
    assert "  # The kube context `inv deploy --env acme` must find as the current context.\n  kubeContext: acme\n" in text
    # Only the values file lands, readable like every folder a person commits: the staging
    # folder's marker and mkdtemp's 0700 stay behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["values.yaml"]
    assert path.parent.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    assert list(project.customers_dir.glob(".*")) == []
    listing = inv(project.root, "env.list")
    assert listing.returncode == 0
    assert "acme             customer base -> prod -> customers/acme" in listing.stdout.splitlines()


def test_env_init_yes_reads_back_as_the_string_yes(project: RepoLayout) -> None:
    proc = inv(project.root, "env.init", "yes", "--ip", "10.1.2.3", "--nfs-server", "null", "--nfs-path", "/acme")
    assert proc.returncode == 0, proc.stderr
    settings = yaml.read_mapping(project.customers_dir / "yes" / "values.yaml")
    assert settings["cluster"]["kubeContext"] == "yes"
    assert settings["nfs"]["server"] == "null"


@pytest.mark.parametrize("name", ["on", "no", "off", "true", "null", "y", "n", "1e3", "0x1f", "123"])
def test_env_init_names_yaml_would_misread_stay_strings(project: RepoLayout, name: str) -> None:
    path = environments.init_customer(project, name, "10.1.2.3", "off", "/acme")
    settings = yaml.read_mapping(path)
    assert settings["cluster"]["kubeContext"] == name
    assert settings["nfs"]["server"] == "off"


@pytest.mark.parametrize("context", ["@prod", "prod:admin@cluster", "arn:aws:eks:eu-west-1:1234:cluster/gpu", "-x", ":x", "1.10"])
def test_env_init_writes_any_allowed_kube_context_validly(project: RepoLayout, context: str) -> None:
    path = environments.init_customer(project, "acme", "10.1.2.3", "10.1.2.4", "/acme", kube_context=context)
    assert yaml.read_mapping(path)["cluster"]["kubeContext"] == context


def test_helmfile_reads_the_kube_context_of_a_customer_named_yes_as_the_string(synced_project: RepoLayout) -> None:
    environments.init_customer(synced_project, "yes", "10.1.2.3", "10.1.2.4", "/acme")
    built = PinnedTools(synced_project).run("helmfile", ["-f", str(synced_project.helmfile), "-e", "yes", "build"])
    doc = next(d for d in yaml.load_all(built) if d and "helmDefaults" in d)
    assert doc["helmDefaults"]["kubeContext"] == "yes"


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
        (
            ["acme", "--ip", "10.1.2.3", "--registry", "10.1.2.3:30002/x\nnfs: {server: evil.example, path: /stolen}"],
            "invalid --registry '10.1.2.3:30002/x\\nnfs: {server: evil.example, path: /stolen}': use host[:port][/path]",
        ),
        (["acme\n", "--ip", "10.1.2.3"], "invalid environment name 'acme\\n'"),
        (["acme", "--ip", "10.1.2.3", "--nfs-server", "nfs\n"], "invalid --nfs-server 'nfs\\n'"),
        (["acme", "--ip", "10.1.2.3", "--nfs-path", "/acme\nnfs: x"], "invalid --nfs-path '/acme\\nnfs: x'"),
        (["acme", "--ip", "10.1.2.3", "--kube-context", "prod\nnfs: x"], "invalid --kube-context 'prod\\nnfs: x'"),
        (["acme", "--ip", "10.1.2.3", "--kube-context", "a b"], "invalid --kube-context 'a b'"),
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
    settings = yaml.read_mapping(path)
    assert settings["cluster"]["externalIP"] == "fd00::10"
    assert settings["nfs"]["server"] == "nfs.beta.example"
    assert settings["offline"]["registry"] == "harbor.beta.example:30002"
    with pytest.raises(InputError, match="already exists"):
        environments.init_customer(project, "beta-2", "10.0.0.1", "nfs", "/x")


def test_every_value_layer_once_in_precedence_order(project: RepoLayout) -> None:
    layers = [p.relative_to(project.environments_dir).as_posix() for p in environments.all_layer_dirs(project)]
    customers = [f"customers/{e.name}" for e in environments.discover(project) if e.customer]
    assert customers and layers == ["base", "dev", "stage", "prod", *customers]


@pytest.mark.parametrize(
    "registry", ["[fd00::5]:30002", "[fd00::5]", "10.1.2.3:30002/proxy", "harbor.beta.example", "h.example/a__b/c-d.e"]
)
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
        ("harbor.local:0", "use host[:port][/path]"),
        ("harbor.local/Upper", "use host[:port][/path]"),
        ("harbor.local/", "use host[:port][/path]"),
        ("harbor.local/a b", "use host[:port][/path]"),
        ("harbor.local?x=1", "not an IP address or DNS host name"),
        ("10.1.2.3:30002/x\nnfs: {server: evil.example}", "use host[:port][/path]"),
    ],
)
def test_env_init_refuses_a_bad_registry(project: RepoLayout, registry: str, message: str) -> None:
    with pytest.raises(InputError, match=f"invalid --registry {re.escape(repr(registry))}: {re.escape(message)}"):
        environments.init_customer(project, "gamma", "10.0.0.9", "10.0.0.8", "/x", registry=registry)
    assert not (project.customers_dir / "gamma").exists()


def test_env_init_names_the_bad_registry_host() -> None:
    with pytest.raises(InputError, match="invalid --registry 'bad host!': not an IP address or DNS host name"):
        environments.validate_registry("bad host!:30002")
