"""What of the caller's environment reaches helm, helmfile, kubectl and the post-renderer.

Fake tools (shell scripts that write their environment to a file, pinned by their own digest in
a scratch project) show what PinnedTools passes; a real `inv render` with the real tools, a
post-render wrapper and a kubectl wrapper that dump theirs shows the whole chain does the same.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from astrago_deploy.core.errors import ConfigError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.environment import ALLOWED, ALLOWED_PREFIXES, tool_environ
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import PROJECT

INV = PROJECT / ".venv" / "bin" / "inv"
# Must never reach a tool.
CANARIES = {
    "GITHUB_TOKEN": "canary-github-token",
    "ASTRAGO_REPO_X_PASSWORD": "canary-repo-password",
    "ASTRAGO_REPO_X_USERNAME": "canary-repo-user",
    "HELM_DRIVER": "canary-driver",
    "HELM_KUBECONTEXT": "canary-context",
    "HELM_REPOSITORY_CONFIG": "/canary/repositories.yaml",
    "HELMFILE_ENVIRONMENT": "canary-env",
    "SOME_SHELL_VARIABLE": "canary-shell",
}
# Allowed through.
PASSED = {
    "KUBECONFIG": "/somewhere/kubeconfig",
    "HTTPS_PROXY": "http://proxy.example.invalid:3128",
    "no_proxy": "localhost,127.0.0.1",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
}


def read_env(dump: Path) -> dict[str, str]:
    """A dump written by `env -0`: NUL-separated NAME=VALUE entries."""
    entries = [entry for entry in dump.read_bytes().decode().split("\0") if entry]
    return dict(entry.split("=", 1) for entry in entries)


def assert_clean(env: dict[str, str], who: str) -> None:
    leaked = sorted(set(CANARIES) & set(env))
    assert not leaked, f"{who} received {leaked}"
    assert not any(value in env.values() for value in CANARIES.values()), who


def dumping_script(path: Path, dump: Path, then: str = "") -> None:
    path.write_text(f'#!/bin/sh\nenv -0 > "{dump}"\n{then}')
    path.chmod(0o755)


@pytest.fixture
def fake_tools(tmp_path: Path) -> tuple[RepoLayout, Path]:
    """A scratch project whose pinned helm, helmfile and kubectl are scripts dumping their environment."""
    root, dumps = tmp_path / "repo", tmp_path / "dumps"
    (root / ".tools" / "bin").mkdir(parents=True)
    dumps.mkdir()
    real = yaml.safe_load((PROJECT / "toolchain.yaml").read_text())
    tools = {}
    for name in ("helm", "helmfile", "kubectl"):
        script = root / ".tools" / "bin" / name
        dumping_script(script, dumps / name)
        digest = hashlib.sha256(script.read_bytes()).hexdigest()
        tools[name] = {**real["tools"][name], "sha256": digest}
    (root / "toolchain.yaml").write_text(yaml.safe_dump({**real, "tools": tools}))
    return RepoLayout.at(root), dumps


def test_only_the_allowlist_reaches_helm_helmfile_and_kubectl(fake_tools: tuple[RepoLayout, Path]) -> None:
    layout, dumps = fake_tools
    environ = {"PATH": "/usr/bin:/bin", "HOME": "/home/someone", **CANARIES, **PASSED}
    tools = PinnedTools(layout, environ=environ)
    for name in ("helm", "helmfile", "kubectl"):
        tools.run(name, ["version"])
        env = read_env(dumps / name)
        assert_clean(env, name)
        for key, value in PASSED.items():
            assert env[key] == value, (name, key)
        # The suite's own isolated state, not the user's.
        assert env["HELM_CONFIG_HOME"] == str(layout.tool_state / "helm" / "config")
        assert env["PATH"] == os.pathsep.join([str(layout.tools_bin), "/usr/bin:/bin"])
        assert env["HOME"] == "/home/someone"


def test_extra_env_of_one_command_reaches_that_command_only(fake_tools: tuple[RepoLayout, Path]) -> None:
    layout, dumps = fake_tools
    tools = PinnedTools(layout, environ={"PATH": "/usr/bin:/bin"})
    tools.run("helm", ["registry", "login"], extra_env={"SECRET_FOR_HELM": "s3cret"})
    tools.run("kubectl", ["version"])
    assert read_env(dumps / "helm")["SECRET_FOR_HELM"] == "s3cret"
    assert "SECRET_FOR_HELM" not in read_env(dumps / "kubectl")


def test_without_path_the_system_default_follows_the_pinned_dir(fake_tools: tuple[RepoLayout, Path]) -> None:
    layout, dumps = fake_tools
    PinnedTools(layout, environ={}).run("helm", ["version"])
    # An empty entry would put the working directory on the tools' PATH.
    assert read_env(dumps / "helm")["PATH"] == os.pathsep.join([str(layout.tools_bin), os.defpath])


def test_a_site_can_pass_more_names_but_never_the_suites_credentials(fake_tools: tuple[RepoLayout, Path]) -> None:
    layout, dumps = fake_tools
    environ = {"PATH": "/usr/bin:/bin", "AWS_PROFILE": "deployer", "ASTRAGO_TOOL_ENV": "AWS_PROFILE", **CANARIES}
    PinnedTools(layout, environ=environ).run("kubectl", ["version"])
    env = read_env(dumps / "kubectl")
    assert env["AWS_PROFILE"] == "deployer"
    assert_clean(env, "kubectl")
    for refused in ("GITHUB_TOKEN", "ASTRAGO_REPO_X_PASSWORD"):
        with pytest.raises(ConfigError, match=f"ASTRAGO_TOOL_ENV names {refused}: the suite's credentials never"):
            tool_environ({**environ, "ASTRAGO_TOOL_ENV": f"AWS_PROFILE, {refused}"})


def test_inv_render_keeps_canaries_from_helmfile_helm_the_post_renderer_and_kubectl(
    synced_project: RepoLayout, tmp_path: Path
) -> None:
    """The real chain: inv -> helmfile -> helm -> scripts/post-render -> kubectl kustomize."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    post_render = synced_project.root / "scripts" / "post-render"
    post_render.rename(post_render.with_name("post-render.real"))
    # One dump per release (helm runs them in parallel); then the real post-renderer.
    dumping_script(post_render, dumps / 'post-render-$$', f'exec "{post_render}.real" "$@"\n')
    # The post-renderer runs ASTRAGO_TOOLS_BIN/kubectl: a wrapper dumping, then the real one.
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    dumping_script(wrappers / "kubectl", dumps / 'kubectl-$$', f'exec "{synced_project.tools_bin / "kubectl"}" "$@"\n')
    env = {**os.environ, **CANARIES, "ASTRAGO_ROOT": str(synced_project.root), "ASTRAGO_TOOLS_BIN": str(wrappers)}
    proc = subprocess.run([str(INV), "-r", str(PROJECT), "render", "--env", "dev"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    post_renders = sorted(dumps.glob("post-render-*"))
    kubectls = sorted(dumps.glob("kubectl-*"))
    assert len(post_renders) >= 7 and kubectls  # every release; kubectl for the patched ones
    for dump in [*post_renders, *kubectls]:
        assert_clean(read_env(dump), dump.name)
    assert "harbor" in (synced_project.rendered_dir / "dev" / "harbor.yaml").read_text()


def test_the_render_key_covers_the_variables_helmfile_may_read(synced_project: RepoLayout) -> None:
    values = synced_project.root / "helmfile" / "values" / "csi-driver-nfs.yaml.gotmpl"
    values.write_text(values.read_text().replace(
        "storageclass.kubernetes.io/is-default-class", 'astrago.io/proxy: {{ env "HTTPS_PROXY" | quote }}\n    '
        "storageclass.kubernetes.io/is-default-class"))
    dev = environments.get(synced_project, "dev")
    rendered = synced_project.rendered_dir / "dev" / "csi-driver-nfs.yaml"

    def render(**environ: str) -> bool:
        tools = PinnedTools(synced_project, environ={"PATH": os.environ["PATH"], **environ})
        return Renderer(synced_project, tools, synced_project.rendered_dir).render([dev])[0].cached

    assert render(HTTPS_PROXY="http://a.invalid:3128") is False
    assert "astrago.io/proxy: http://a.invalid:3128" in rendered.read_text()
    assert render(HTTPS_PROXY="http://a.invalid:3128") is True
    # A dropped variable cannot change the render, nor one that only affects logging or timeouts.
    assert render(HTTPS_PROXY="http://a.invalid:3128", GITHUB_TOKEN="x", HELM_DRIVER="y", ASTRAGO_DEBUG="1") is True
    assert render(HTTPS_PROXY="http://b.invalid:3128") is False
    assert "astrago.io/proxy: http://b.invalid:3128" in rendered.read_text()


def test_the_readme_lists_exactly_the_allowlist() -> None:
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("#### What reaches helm, helmfile and kubectl", 1)[1].split("The suite then sets", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z_]*\*?)`", section)) - {"ASTRAGO_TOOL_ENV", "LC_*"}
    proxies = {name.lower() for name in ALLOWED if name.endswith("_PROXY")}  # "(either case)"
    assert listed | proxies | {"ASTRAGO_TOOL_ENV"} == ALLOWED
    assert ALLOWED_PREFIXES == ("LC_",) and "`LC_*`" in section
