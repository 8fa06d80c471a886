"""Benchmark: push and pull of a large image layer (1 GiB by default) through our registry client
and through skopeo, against the loopback distribution registry: MiB/s and peak memory (prints
figures, asserts nothing).

Each transfer runs in a child process so its peak resident memory is its own (`wait4`).
`BENCH_REGISTRY_MIB` sets the layer size. The layer is an uncompressed tar media type holding
random bytes, so neither client has a reason to recompress it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT

from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import OCI_MANIFEST, Manifest
from astrago_deploy.registry.reference import Reference
from tests.registry_support import REGISTRY_BINARY, RegistryProcess, write_random

MiB = 1024 * 1024
LAYER = "application/vnd.oci.image.layer.v1.tar"


def _push(ref_text: str, layer: str, layer_digest: str) -> None:
    """Child: push the layer, a config and the manifest, then tag it."""
    ref = Reference.parse(ref_text)
    client = RegistryClient()
    client.push_blob(ref, Path(layer), layer_digest)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_path = Path(layer).with_name("config.json")
    config_path.write_text(config)
    config_digest = client.push_blob(ref, config_path).digest
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": Path(layer).stat().st_size}],
        }
    ).encode()
    client.put_manifest(ref, Manifest.of(manifest, OCI_MANIFEST))


def _pull(ref_text: str, dest: str) -> None:
    """Child: the manifest, then every blob streamed to `dest`."""
    ref = Reference.parse(ref_text)
    client = RegistryClient()
    manifest = client.get_manifest(ref)
    for blob in manifest.blobs:
        client.pull_blob(ref, blob.digest, Path(dest) / blob.digest.removeprefix("sha256:"), size=blob.size)


def _high_water_mib(pid: int, argv: list[str]) -> float:
    try:
        # Until its exec the child is a copy of this process: only count the program itself.
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] != [a.encode() for a in argv]:
            return 0.0
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def _measure(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one child process.

    The peak is the child's own VmHWM, sampled while it runs: `wait4`'s ru_maxrss would also
    count this (forking) Python process's memory from before the child's exec.
    """
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _high_water_mib(child.pid, argv))
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        error = child.stderr.read().decode() if child.stderr else ""
        raise SystemExit(f"benchmark: {' '.join(argv[:3])} failed: {error}")
    return elapsed, peak


def main() -> None:
    if not REGISTRY_BINARY.is_file():
        raise SystemExit("benchmark: the test registry is missing; run scripts/install-test-registry")
    size_mib = int(os.environ.get("BENCH_REGISTRY_MIB", "1024"))
    skopeo = shutil.which("skopeo")
    python = sys.executable
    me = str(Path(__file__).resolve())
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        work = Path(tmp)
        registry = RegistryProcess(work / "registry")
        # skopeo pushes to a registry of its own: into the first one it would mount the layer
        # it has just pulled from there (its blob-info cache remembers where blobs live).
        other = RegistryProcess(work / "other")
        try:
            layer = work / "src" / "layer"
            layer.parent.mkdir()
            digest = write_random(layer, size_mib * MiB)
            host = registry.host
            sha256sum = shutil.which("sha256sum")
            if sha256sum:
                rows.append(("sha256sum (read + hash, for scale)", *_measure([sha256sum, str(layer)])))
            rows.append(("ours: push", *_measure([python, me, "push", f"{host}/bench/ours:v1", str(layer), digest])))
            (work / "ours-pull").mkdir()
            rows.append(
                ("ours: pull", *_measure([python, me, "pull", f"{host}/bench/ours:v1", str(work / "ours-pull")]))
            )
            if skopeo:
                policy = ["--insecure-policy"]
                pull = [skopeo, *policy, "copy", "--src-tls-verify=false", "--src-no-creds"]
                into = f"dir:{work / 'skopeo-pull'}"
                rows.append(
                    ("skopeo: pull (docker:// -> dir:)", *_measure([*pull, f"docker://{host}/bench/ours:v1", into]))
                )
                push = [skopeo, *policy, "copy", "--dest-tls-verify=false", "--dest-no-creds"]
                onto = f"docker://{other.host}/bench/skopeo:v1"
                rows.append(("skopeo: push (dir: -> docker://)", *_measure([*push, into, onto])))
            pulled = work / "ours-pull" / digest.removeprefix("sha256:")
            if pulled.stat().st_size != size_mib * MiB:
                raise SystemExit("benchmark: the pulled layer has the wrong size")
        finally:
            registry.stop()
            other.stop()
    print(f"registry transfer of one {size_mib} MiB layer over loopback (distribution 2.8, {ROOT.name})")
    for name, seconds, rss in rows:
        memory = f", peak RSS {rss:.0f} MiB"
        print(f"  {name:40s} {seconds:6.2f} s  {size_mib / seconds:7.1f} MiB/s{memory}")
    if not skopeo:
        print("  skopeo: not installed (apt-get install skopeo), no comparison")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "push":
        _push(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "pull":
        _pull(*sys.argv[2:4])
    else:
        main()
