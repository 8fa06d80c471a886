"""Benchmark: the air-gap bundle's image work on loopback registries, ours and skopeo's side by
side in one run: create (registry -> OCI layout), verify (the layout's bytes) and load (layout ->
an empty registry), MB/s of unique bytes and the ratio (prints figures, asserts nothing).

The images are synthetic: 8 of them share one base layer (a quarter of the total) and each has a
layer of its own (1/16 to 1/8 of the total), random bytes written to disk a MiB at a time as
gzip streams (stored blocks), so neither tool has a reason to recompress them.
`BENCH_BUNDLE_MIB` sets the total (about 1 GiB by default; at least 128).

- create: `ImageLayout.pull` of every image (workers=6, as `bundle.create`) into an empty layout
  vs `skopeo copy docker://... oci:DIR:TAG` of each into one shared layout (which, like ours,
  stores a blob once); both layouts must end up holding the same blobs.
- verify: `oci_layout.verify` and `sums.check` vs `sha256sum -c` of the same files, one process
  and one per core, and `openssl dgst -sha256` (which uses the CPU's SHA instructions, as
  hashlib does) for the machine's sha256 speed.
- load: `load()` (workers=4, as `bundle.load`; it verifies the layout before pushing) into an
  empty registry vs `skopeo copy oci:DIR:TAG docker://...` of each into another empty one.

Every file is in the page cache by the time it is read (it was just written), so the figures are
hashing and transfer speed, not the disk's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, timed

from astrago_deploy.bundle import oci_layout, sums
from astrago_deploy.bundle.load import MOUNTED, UPLOADED, LoadReport, load
from astrago_deploy.bundle.oci_layout import ImageEntry, ImageLayout
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import OCI_MANIFEST, Manifest
from astrago_deploy.registry.reference import Reference
from tests.registry_support import REGISTRY_BINARY, RegistryProcess

MiB = 1024 * 1024
MB = 1e6
IMAGES = 8
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
CREATE_WORKERS = 6  # bundle.create's default
LOAD_WORKERS = 4  # bundle.load's default


def _sizes(total_mib: int) -> tuple[int, list[int]]:
    """(base layer, each image's own layer) in MiB: a quarter shared, the rest 1/16 .. 1/8 each."""
    base = total_mib // 4
    step = max(1, total_mib // 128)
    return base, [total_mib // 16 + i * step for i in range(IMAGES)]


def write_layer(path: Path, size: int) -> tuple[str, str]:
    """A gzip stream of `size` random bytes (whole MiB) at `path`, written a MiB at a time, in
    stored (level 0) blocks: cheap to make, and gzip to skopeo, which would compress (and so
    change) a layer it finds uncompressed. (digest, diff_id)."""
    blob, raw = hashlib.sha256(), hashlib.sha256()
    deflate = zlib.compressobj(0, zlib.DEFLATED, 31)  # wbits 31: a gzip header, mtime 0
    with path.open("wb") as out:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            raw.update(block)
            stored = deflate.compress(block)
            blob.update(stored)
            out.write(stored)
        tail = deflate.flush()
        blob.update(tail)
        out.write(tail)
    return f"sha256:{blob.hexdigest()}", f"sha256:{raw.hexdigest()}"


def _push_images(host: str, work: Path, base_mib: int, own_mib: list[int]) -> list[Reference]:
    """The synthetic images in `host` (bench/img0 .. img7, tag 1.N); the base pushed once, mounted."""
    client = RegistryClient()
    sources = work / "src"
    sources.mkdir()
    base = sources / "base"
    base_digest, base_diff_id = write_layer(base, base_mib * MiB)
    refs = []
    for number, size in enumerate(own_mib):
        ref = Reference.parse(f"{host}/bench/img{number}:1.{number}")
        own = sources / f"own{number}"
        own_digest, own_diff_id = write_layer(own, size * MiB)
        if number == 0 or not client.mount_blob(ref, base_digest, "bench/img0"):
            client.push_blob(ref, base, base_digest)
        client.push_blob(ref, own, own_digest)
        layers = [(base_digest, base.stat().st_size), (own_digest, own.stat().st_size)]
        own.unlink()  # pushed: the registry holds it now
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/true"], "Labels": {"bench": str(number)}},
                "rootfs": {"type": "layers", "diff_ids": [base_diff_id, own_diff_id]},
            }
        ).encode()
        config_path = sources / f"config{number}.json"
        config_path.write_bytes(config)
        config_digest = client.push_blob(ref, config_path).digest
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": LAYER, "digest": digest, "size": size} for digest, size in layers],
            },
            indent=2,
        ).encode()
        client.put_manifest(ref, Manifest.of(manifest, OCI_MANIFEST))
        refs.append(ref)
    base.unlink()
    return refs


def _run(argv: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(argv[:4])} failed ({done.returncode}): {done.stderr.decode()}")


def _run_each(argvs: list[list[str]]) -> None:
    """One after another, as a person copying image by image would."""
    for argv in argvs:
        _run(argv)


def _blobs(layout: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in (layout / "blobs" / "sha256").iterdir()}


def _shares(paths: list[str], count: int) -> list[list[str]]:
    """`paths` dealt into `count` lists, largest first, so the lists are about equal in bytes."""
    shares: list[list[str]] = [[] for _ in range(count)]
    for number, path in enumerate(paths):
        shares[number % count].append(path)
    return [share for share in shares if share]


def _in_parallel(argvs: list[list[str]], cwd: Path) -> None:
    children = [subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for argv in argvs]
    # communicate, not wait: a child whose stderr fills the pipe would otherwise never exit.
    errors = [child.communicate()[1] for child in children]
    for argv, child, error in zip(argvs, children, errors, strict=True):
        if child.returncode != 0:
            raise SystemExit(f"benchmark: {' '.join(argv[:2])} failed ({child.returncode}): {error.decode()}")


class Table:
    """Rows of (name, seconds, MB/s) in groups, printed at the end."""

    def __init__(self, unique_bytes: int) -> None:
        self.unique = unique_bytes
        self.lines: list[str] = []

    def group(self, title: str) -> None:
        self.lines.append(title)

    def row(self, name: str, seconds: float, note: str = "") -> float:
        speed = self.unique / MB / seconds
        self.lines.append(f"  {name:52s} {seconds:6.2f} s  {speed:7.1f} MB/s{note}")
        return speed

    def ratio(self, ours: float, peer: float, peer_name: str) -> None:
        word = "faster" if ours >= peer else "slower"
        self.lines.append(f"  {'ratio ours / ' + peer_name:52s} {ours / peer:6.2f}x  (ours {word})")

    def note(self, text: str) -> None:
        self.lines.append(f"  {text}")


def main() -> None:
    if not REGISTRY_BINARY.is_file():
        raise SystemExit("benchmark: the test registry is missing; run scripts/install-test-registry")
    total_mib = int(os.environ.get("BENCH_BUNDLE_MIB", "1024"))
    if total_mib < 128:
        raise SystemExit("benchmark: BENCH_BUNDLE_MIB must be at least 128")
    base_mib, own_mib = _sizes(total_mib)
    skopeo = shutil.which("skopeo")
    sha256sum = shutil.which("sha256sum")
    openssl = shutil.which("openssl")
    cores = os.cpu_count() or 1
    # A SIGTERM (nox or CI cancelling the run) unwinds like Ctrl-C, so the registries are stopped
    # and the temporary folder removed instead of left behind.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        work = Path(tmp)
        registries: list[RegistryProcess] = []

        def registry(name: str) -> RegistryProcess:
            registries.append(RegistryProcess(work / name))
            return registries[-1]

        try:
            source = registry("source")
            refs: list[Reference] = []
            setup = timed(lambda: refs.extend(_push_images(source.host, work, base_mib, own_mib)))
            table = _measure(work, refs, registry, skopeo, sha256sum, openssl, cores)
        finally:
            for process in registries:
                process.stop()
    print(
        f"bundle images over loopback: {IMAGES} images, a {base_mib} MiB base layer shared by all and"
        f" {own_mib[0]}-{own_mib[-1]} MiB of their own, {table.unique / MB:.0f} MB unique"
        f" (distribution 2.8, {cores} cores, {ROOT.name}; set-up {setup:.1f} s)"
    )
    print("\n".join(table.lines))
    if not skopeo:
        print("  skopeo: not installed (apt-get install skopeo), its side is skipped")


def _measure(
    work: Path,
    refs: list[Reference],
    registry: Callable[[str], RegistryProcess],
    skopeo: str | None,
    sha256sum: str | None,
    openssl: str | None,
    cores: int,
) -> Table:
    policy = [skopeo or "skopeo", "--insecure-policy", "copy", "--quiet"]
    ours = work / "ours"
    client = RegistryClient()

    def pull_all() -> None:
        layout = ImageLayout(ours)
        entries: list[ImageEntry] = []
        for ref in refs:
            entries.append(layout.pull(client, ref, None, ref.tag, workers=CREATE_WORKERS).entry)
        layout.write_index(entries)

    created = timed(pull_all)
    blobs = _blobs(ours)
    table = Table(sum(blobs.values()))
    table.group(f"create: registry -> OCI layout ({len(blobs)} blobs)")
    ours_speed = table.row(f"ours: ImageLayout.pull (workers={CREATE_WORKERS})", created)
    if skopeo:
        theirs = work / "skopeo"
        argv = [*policy, "--src-tls-verify=false", "--src-no-creds"]
        seconds = timed(lambda: _run_each([[*argv, f"docker://{ref}", f"oci:{theirs}:{ref.tag}"] for ref in refs]))
        differ = sorted(set(_blobs(theirs).items()) ^ set(blobs.items()))
        if differ:
            raise SystemExit(f"benchmark: skopeo's layout and ours hold different blobs: {differ}")
        table.ratio(ours_speed, table.row("skopeo: copy docker:// -> oci: (each image)", seconds), "skopeo")
        shutil.rmtree(theirs)

    table.group("verify: every blob's sha256")
    verified = oci_layout.verify(ours)
    if verified.problems:
        raise SystemExit("benchmark: our layout does not verify:\n" + "\n".join(verified.problems))
    seconds = timed(lambda: oci_layout.verify(ours))
    verify_speed = table.row("ours: oci_layout.verify", seconds)
    verify_seconds = seconds
    sums.write(ours)
    checked = sums.check(ours)
    if checked.problems:
        raise SystemExit("benchmark: SHA256SUMS does not check:\n" + "\n".join(checked.problems))
    check_speed = table.row("ours: sums.check", timed(lambda: sums.check(ours)))
    files = sums.bundle_files(ours)
    if sha256sum:
        peer = table.row(
            "sha256sum -c (one process)", timed(lambda: _run([sha256sum, "-c", "--quiet", "SHA256SUMS"], ours))
        )
        table.ratio(verify_speed, peer, "sha256sum (verify)")
        table.ratio(check_speed, peer, "sha256sum (sums.check)")
        by_size = sorted(files, key=lambda rel: -(ours / rel).stat().st_size)
        argvs = [[sha256sum, *share] for share in _shares(by_size, cores)]
        table.row(f"sha256sum, {len(argvs)} processes", timed(lambda: _in_parallel(argvs, ours)))
    if openssl:
        by_size = sorted(files, key=lambda rel: -(ours / rel).stat().st_size)
        argvs = [[openssl, "dgst", "-sha256", *share] for share in _shares(by_size, cores)]
        peer = table.row(f"openssl dgst -sha256, {len(argvs)} processes", timed(lambda: _in_parallel(argvs, ours)))
        table.ratio(verify_speed, peer, "openssl (verify)")
    (ours / sums.SUMS_FILE).unlink()

    table.group("load: OCI layout -> an empty registry")
    site = registry("ours-site")
    reports: list[LoadReport] = []
    seconds = timed(lambda: reports.append(load(ours, site.host, RegistryClient(), workers=LOAD_WORKERS)))
    blobs_by = reports[0].blobs
    ours_speed = table.row(
        f"ours: load (workers={LOAD_WORKERS})",
        seconds,
        f"  (its verify ~{verify_seconds:.2f} s; {blobs_by[UPLOADED]} uploaded, {blobs_by[MOUNTED]} mounted)",
    )
    if skopeo:
        other = registry("skopeo-site")
        argv = [*policy, "--dest-tls-verify=false", "--dest-no-creds"]
        argvs = [[*argv, f"oci:{ours}:{ref.tag}", f"docker://{other.host}/{ref.repository}:{ref.tag}"] for ref in refs]
        seconds = timed(lambda: _run_each(argvs))
        for ref in refs:
            served = client.head_manifest(Reference(other.host, ref.repository, ref.tag))
            loaded = client.head_manifest(Reference(site.host, ref.repository, ref.tag))
            if served is None or loaded is None or served.digest != loaded.digest:
                raise SystemExit(f"benchmark: {ref.repository}:{ref.tag} has different digests after the two loads")
        table.ratio(ours_speed, table.row("skopeo: copy oci: -> docker:// (each image)", seconds), "skopeo")
    return table


if __name__ == "__main__":
    main()
