"""The create side of the air-gap bundle under faults (issue 16, "Tests"): a pull through a
loopback proxy that answers 500s, resets a 64 MiB blob mid-body or goes quiet on a slow link
recovers by retry and Range resume and verifies; `inv bundle.create` killed with SIGKILL at a
random moment while it fetches, then run again, fetches no complete blob again; and a canary
registry password (ASTRAGO_REPO_<HOST>_PASSWORD, behind a token service) appears in no output
and no file of the bundle, which still carries every image.

The kill moment comes from a seeded RNG (printed; `ASTRAGO_KILL_SEED=N` replays it).
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astrago_deploy.bundle.oci_layout import ImageLayout, partial_files
from astrago_deploy.bundle.oci_layout import verify as verify_layout
from astrago_deploy.bundle.verify import verify as verify_bundle
from astrago_deploy.core.http import credentials_hint, host_env_key
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.copy import copy_image
from astrago_deploy.registry.manifest import Platform
from astrago_deploy.registry.reference import Reference

from .registry_support import Image, Proxy, RegistryProcess, TokenServer, build_image, sha256, write_random
from .test_bundle import BASE, ENV, upstream, with_pyproject  # noqa: F401 (a fixture)
from .test_kill_campaign import INV, kill_rng, kill_tree  # noqa: F401 (a fixture)
from .test_registry import _needs_registry, push_image
from .test_upgrade import cli_env, inv

MiB = 1024 * 1024
BIG = 64 * MiB
AMD64 = Platform("linux", "amd64")
Served = tuple[RegistryProcess, dict[str, Image | bytes]]


def with_blob(image: Image, digest: str, size: int) -> Image:
    """`image` with one more layer, blob `digest` of `size` bytes (pushed on its own, from a file)."""
    manifest = json.loads(image.manifest)
    manifest["layers"].append({"mediaType": manifest["layers"][0]["mediaType"], "digest": digest, "size": size})
    return Image(json.dumps(manifest, indent=3).encode(), image.media_type, image.blobs, image.arch)


def push_big(client: RegistryClient, ref: Reference, image: Image, workdir: Path) -> tuple[Image, str]:
    """Push `image` to `ref` with a 64 MiB random layer added, streamed from disk both ways."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "big-layer"
    digest = write_random(source, BIG)
    client.push_blob(ref, source, digest)
    source.unlink()
    bigger = with_blob(image, digest, BIG)
    push_image(client, ref, bigger, workdir)
    return bigger, digest


def blob_gets(proxy: Proxy, digest: str) -> list[tuple[str | None, int]]:
    return [(s.headers.get("Range"), s.status) for s in proxy.seen if s.method == "GET" and digest in s.path]


def fetched_blobs(proxy: Proxy) -> list[str]:
    return [s.path.rpartition("/blobs/")[2] for s in proxy.seen if s.method == "GET" and "/blobs/sha256:" in s.path]


# --- faults during a pull ------------------------------------------------------------------------


@dataclass(frozen=True)
class BigImage:
    registry: RegistryProcess
    ref: Reference
    image: Image
    big: str  # the 64 MiB layer's digest

    @property
    def config(self) -> str:
        return str(json.loads(self.image.manifest)["config"]["digest"])


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigImage]:
    _needs_registry()
    registry = RegistryProcess(tmp_path_factory.mktemp("big-registry"))
    ref = Reference(registry.host, "nvcr.io/nvidia/big", "1.0")
    image, digest = push_big(RegistryClient({}), ref, build_image([BASE]), tmp_path_factory.mktemp("push"))
    yield BigImage(registry, ref, image, digest)
    registry.stop()


CUT_AT = 20 * MiB + 123
STALL_AT = 40 * MiB + 7
READ_TIMEOUT = 2.0  # the client's wait for the next bytes; the stall is longer (with room on a busy machine)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        # Every GET is answered 500 at first: the retry policy sends each again.
        ("500s", [(None, 500), (None, 500), (None, 200)]),
        # The connection is reset 20 MiB into the big layer: resumed from there.
        ("reset", [(None, 200), (f"bytes={CUT_AT}-", 206)]),
        # A slow link (paced) that goes quiet for longer than the read timeout: resumed.
        ("slow", [(None, 200), (f"bytes={STALL_AT}-", 206)]),
    ],
)
def test_a_pull_through_faults_recovers_by_retry_and_resume_and_verifies(
    big_image: BigImage, tmp_path: Path, fault: str, expected: list[tuple[str | None, int]]
) -> None:
    faults: dict[str, Any] = {
        "500s": {"fail": {"/manifests/": 2, f"/blobs/{big_image.big}": 2, f"/blobs/{big_image.config}": 1}},
        "reset": {"cut": {f"/blobs/{big_image.big}": CUT_AT}},
        "slow": {"pace": {f"/blobs/{big_image.big}": 0.01}, "stall": {f"/blobs/{big_image.big}": (STALL_AT, 5.0)}},
    }[fault]
    proxy = Proxy(big_image.registry.host, **faults)
    layout = ImageLayout(tmp_path / "images")
    client = RegistryClient({}, backoff=0.0, timeout=READ_TIMEOUT)
    source = big_image.ref.in_repository(big_image.ref.repository, proxy.host)
    tracemalloc.start()
    try:
        report = layout.pull(client, source, [AMD64], "1.0", workers=3)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        proxy.stop()
    assert peak < 8 * MiB  # the 64 MiB layer is streamed to disk, never held
    assert blob_gets(proxy, big_image.big) == expected
    if fault == "500s":
        assert [s.status for s in proxy.seen if "/manifests/" in s.path] == [500, 500, 200]
        assert blob_gets(proxy, big_image.config) == [(None, 500), (None, 200)]
    assert (report.fetched, report.present, report.fetched_bytes) == (3, 0, report.size - len(big_image.image.manifest))
    assert report.entry.descriptor.digest == big_image.image.digest
    layout.write_index([report.entry])
    assert verify_layout(layout.root).problems == []
    assert layout.blob_path(big_image.big).stat().st_size == BIG
    assert partial_files(layout.root) == []


# --- kill -9 during create -----------------------------------------------------------------------


def blob_files(folder: Path) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Complete blobs (digest -> inode, mtime) and partial downloads (digest -> bytes) in a layout."""
    complete: dict[str, tuple[int, int]] = {}
    partial: dict[str, int] = {}
    for path in (folder / "blobs" / "sha256").glob("*") if (folder / "blobs").is_dir() else []:
        stat = path.stat()
        if path.name.endswith(".partial"):
            partial[f"sha256:{path.name.split('.')[1]}"] = stat.st_size
        else:
            complete[f"sha256:{path.name}"] = (stat.st_ino, stat.st_mtime_ns)
    return complete, partial


def test_create_killed_while_fetching_reruns_without_fetching_a_complete_blob_again(
    synced_project: RepoLayout,
    upstream: Served,  # noqa: F811 (the fixture)
    mirror: Path,
    tmp_path: Path,
    kill_rng: random.Random,  # noqa: F811 (the fixture)
) -> None:
    layout = synced_project
    registry, served = upstream
    with_pyproject(layout)
    # One image in the middle of the inventory carries the 64 MiB layer, sent at a slow pace, so
    # the kill finds blobs complete, that one half-fetched, maybe others not begun.
    name = sorted(n for n, v in served.items() if isinstance(v, Image))[len(served) // 3]
    image = served[name]
    assert isinstance(image, Image)
    _bigger, big = push_big(RegistryClient({}), Reference.parse(f"{registry.host}/{name}"), image, tmp_path / "push")
    pace = 0.03  # seconds per MiB of the big layer: about 2 s for all of it
    proxy = Proxy(registry.host, pace={f"/blobs/{big}": pace})
    out = tmp_path / "B"
    staging = tmp_path / "B.partial"
    args = ["bundle.create", "--env", ENV, "--out", str(out), "--mirror", str(mirror)]
    try:
        env = cli_env(layout.root, IMAGE_MIRROR=proxy.host)
        with (tmp_path / "killed.log").open("wb") as log:
            run = subprocess.Popen([*INV, *args], cwd=layout.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            try:
                deadline = time.monotonic() + 120
                while not (begun := blob_files(staging / "images")[1].get(big)):
                    assert run.poll() is None, (tmp_path / "killed.log").read_text()
                    assert time.monotonic() < deadline, "bundle.create began no big layer in 120 s"
                    time.sleep(0.02)
                # The proxy cannot send the rest faster than its pace (less what sits in socket and
                # file buffers already): a moment in the first half of that lands mid-layer.
                moment = kill_rng.uniform(0.0, max(0.0, (BIG - begun - 8 * MiB) / MiB * pace / 2))
                print(f"killed {moment:.2f} s after the big layer's first bytes")
                time.sleep(moment)
                assert run.poll() is None, "bundle.create ended before its kill"
            finally:
                kill_tree(run)
        killed_output = (tmp_path / "killed.log").read_text()
        assert run.returncode == -9, killed_output
        assert not out.exists() and staging.is_dir()
        complete, partial = blob_files(staging / "images")
        assert 0 < partial.get(big, 0) < BIG, partial
        first_fetched = fetched_blobs(proxy)

        proxy.seen.clear()
        proxy.pace.clear()
        rerun = inv(layout.root, *args, IMAGE_MIRROR=proxy.host, timeout=600)
    finally:
        proxy.stop()
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not staging.exists()

    again = fetched_blobs(proxy)
    assert len(again) == len(set(again))  # each missing blob once
    assert not set(again) & set(complete), "a blob complete before the rerun was fetched again"
    # Partial files holding all of their blob: the kill came between its last byte and its rename.
    whole = {d for d, size in partial.items() if size == ImageLayout(out / "images").blob_path(d).stat().st_size}
    unaccounted = set(first_fetched) - set(again) - set(complete) - whole
    assert not unaccounted, "begun by the killed run, neither complete then nor fetched now"
    for digest, size in partial.items():
        if digest in whole:
            assert blob_gets(proxy, digest) == [], digest  # checked on disk, not asked for
        elif size:  # a partial download (the big layer's at least) resumes where the killed run left it
            assert blob_gets(proxy, digest) == [(f"bytes={size}-", 206)], digest
    now, leftover = blob_files(out / "images")
    assert leftover == {}
    for digest, identity in complete.items():
        assert now[digest] == identity, f"{digest} was written again"
    assert big in now
    report = verify_bundle(out)
    assert report.ok, report.problems


# --- a canary credential -------------------------------------------------------------------------

CANARY = "canary-pa55-7f3e9c1d"


def test_a_registry_password_appears_in_no_output_and_no_file_of_the_bundle(
    synced_project: RepoLayout,
    upstream: Served,  # noqa: F811 (the fixture)
    mirror: Path,
    tmp_path: Path,
) -> None:
    layout = synced_project
    anonymous, served = upstream
    with_pyproject(layout)
    tokens = TokenServer(tmp_path / "token", users={"robot": CANARY})
    secured = RegistryProcess(tmp_path / "secured-registry", tokens.auth_block("secured"))
    try:
        key = host_env_key(secured.host)
        creds = {f"ASTRAGO_REPO_{key}_USERNAME": "robot", f"ASTRAGO_REPO_{key}_PASSWORD": CANARY}
        client = RegistryClient(creds)
        for name in (n for n in served if "#" not in n):
            copy_image(client, Reference.parse(f"{anonymous.host}/{name}"), Reference.parse(f"{secured.host}/{name}"),
                       tmp_path / "copy")  # fmt: skip
        anonymous.stop()  # from here on, every image comes from the registry that wants the password
        tokens.issued.clear()

        out = tmp_path / "B"
        args = ["bundle.create", "--env", ENV, "--out", str(out), "--mirror", str(mirror)]
        created = inv(layout.root, *args, IMAGE_MIRROR=secured.host, **creds, timeout=600)
        assert created.returncode == 0, created.stdout + created.stderr
        assert tokens.issued and {i.account for i in tokens.issued} == {"robot"}  # the credentials were used

        # A wrong password fails naming where credentials come from, never the value (--debug too).
        wrong = "wrong-" + CANARY
        refused = inv(layout.root, "--debug", *args[:-4], "--out", str(tmp_path / "W"), *args[-2:],
                      IMAGE_MIRROR=secured.host, **{**creds, f"ASTRAGO_REPO_{key}_PASSWORD": wrong})  # fmt: skip
    finally:
        secured.stop()
        tokens.stop()
    assert refused.returncode != 0
    assert "refused the credentials" in refused.stderr, refused.stderr
    assert credentials_hint(secured.host).split("/")[0] in refused.stderr or "credentials" in refused.stderr

    forms = [secret.encode() for secret in (CANARY, wrong)]
    forms += [base64.b64encode(f"robot:{secret}".encode()) for secret in (CANARY, wrong)]
    for output in (created.stdout, created.stderr, refused.stdout, refused.stderr):
        assert not any(form in output.encode() for form in forms)
    files = [p for folder in (out, tmp_path / "W.partial") for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 50
    for path in files:
        data = path.read_bytes()
        assert not any(form in data for form in forms), f"{path} holds the password"

    document = json.loads((out / "bundle.json").read_bytes())
    assert {r["image"] for r in document["images"]} == {n for n in served if "#" not in n}
    for record in document["images"]:
        expected = served.get(record["image"] + "#amd64") or served[record["image"]]
        if isinstance(expected, bytes):  # pinned by its index digest: carried whole
            assert record["digest"] == sha256(expected)
        else:
            assert record["digest"] == expected.digest
    report = verify_bundle(out)
    assert report.ok, report.problems
