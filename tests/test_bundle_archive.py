"""SHA256SUMS, the bundle tar, its parts and safe extraction, with the real `sha256sum`, `cat`
and `tar` as the site would use them: every damage and every hostile member named, nothing
extracted from a refused archive."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from astrago_deploy.bundle import archive, sums
from astrago_deploy.core.errors import InputError, IntegrityError


def make_bundle(root: Path) -> Path:
    (root / "images" / "blobs" / "sha256").mkdir(parents=True)
    (root / "bundle.json").write_text('{"format": 1}\n')
    (root / "images" / "blobs" / "sha256" / "big").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "tools").mkdir()
    tool = root / "tools" / "helm"
    tool.write_bytes(b"#!/bin/sh\necho helm\n")
    tool.chmod(0o755)
    sums.write(root)
    return root


def test_sums_are_what_sha256sum_checks_and_every_damage_is_named(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    lines = (root / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["bundle.json", "images/blobs/sha256/big", "tools/helm"]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    good = sums.check(root)
    assert good.problems == [] and good.files == 3
    assert good.bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")

    big = root / "images" / "blobs" / "sha256" / "big"
    data = bytearray(big.read_bytes())
    data[1000] ^= 0x80
    big.write_bytes(bytes(data))
    (root / "tools" / "helm").unlink()
    (root / "tools" / "extra").write_text("not listed\n")
    problems = sums.check(root).problems
    assert problems[0] == "tools/extra: extra (not in SHA256SUMS)"
    assert problems[1] == "tools/helm: missing"
    assert problems[2].startswith("images/blobs/sha256/big: sha256 ") and len(problems) == 3
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root, capture_output=True).returncode != 0


def test_sums_refuse_paths_that_leave_the_bundle_and_names_sha256sum_would_escape(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    with (root / "SHA256SUMS").open("a") as handle:
        handle.write(f"{'0' * 64}  ../../etc/passwd\n{'0' * 64}  /etc/shadow\nnonsense\n")
    problems = sums.check(root).problems
    assert "SHA256SUMS:4: '../../etc/passwd' leaves the bundle" in problems
    assert "SHA256SUMS:5: '/etc/shadow' leaves the bundle" in problems
    assert "SHA256SUMS:6: not a `HEX  PATH` line" in problems
    (root / "odd\nname").write_text("x")
    with pytest.raises(InputError, match="newline or a backslash"):
        sums.write(root)
    (root / "odd\nname").unlink()
    os.symlink("/etc/passwd", root / "link")
    with pytest.raises(InputError, match="link: a bundle holds no links"):
        sums.write(root)
    assert "SHA256SUMS: missing" in sums.check(tmp_path).problems


def test_the_tar_is_deterministic_splits_into_parts_sha256sum_can_join_and_extracts_whole(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    digest = archive.write_tar(root, first, "bundle")
    assert archive.write_tar(root, second, "bundle") == digest and first.read_bytes() == second.read_bytes()
    listing = subprocess.run(["tar", "-tvf", str(first)], capture_output=True, text=True, check=True).stdout
    assert "bundle/tools/helm" in listing and "-rwxr-xr-x" in listing

    media = tmp_path / "media"
    media.mkdir()
    tar = media / "site.tar"
    shutil.copy(first, tar)
    parts = archive.split(tar, archive.parse_size("1MiB"))
    assert [p.name for p in parts] == [f"site.tar.part-{i:03d}" for i in range(4)] and not tar.exists()
    assert all(p.stat().st_size == 1024 * 1024 for p in parts[:-1])
    joined = subprocess.run(
        f"cat site.tar.part-* > site.tar && sha256sum -c {tar.name}.sha256",
        shell=True,
        cwd=media,
        capture_output=True,
        text=True,
    )
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert joined.stdout.count(": OK") == 5  # the whole tar and each part
    assert "cat site.tar.part-* > site.tar" in archive.join_instructions(tar)
    tar.unlink()

    # The parts extract as they are, without joining them.
    dest = archive.extract(parts[0], tmp_path / "site")
    assert dest == tmp_path / "site" / "bundle" and sums.check(dest).problems == []
    assert os.access(dest / "tools" / "helm", os.X_OK)
    with pytest.raises(InputError, match="exists already"):
        archive.extract(parts[0], tmp_path / "site")

    parts[2].unlink()
    with pytest.raises(InputError, match=re.escape("part site.tar.part-002 is missing")):
        archive.extract(parts[0], tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists() or list((tmp_path / "elsewhere").iterdir()) == []


def test_a_truncated_tar_is_refused_and_nothing_is_extracted(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    tar = tmp_path / "b.tar"
    archive.write_tar(root, tar, "bundle")
    tar.write_bytes(tar.read_bytes()[: 2 * 1024 * 1024])
    with pytest.raises(IntegrityError, match="truncated"):
        archive.extract(tar, tmp_path / "site")
    assert not (tmp_path / "site").exists() or list((tmp_path / "site").iterdir()) == []


def hostile_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("bundle/bundle.json"), io.BytesIO(b""))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tarfile.TarInfo("/etc/cron.d/evil"), "'/etc/cron.d/evil' leaves the bundle"),
        (tarfile.TarInfo("bundle/../../evil"), "'bundle/../../evil' leaves the bundle"),
        (link("bundle/escape", "/etc/passwd", tarfile.SYMTYPE), "'bundle/escape' is a link (to '/etc/passwd')"),
        (link("bundle/hard", "../outside", tarfile.LNKTYPE), "'bundle/hard' is a link"),
        (link("bundle/inside", "bundle.json", tarfile.SYMTYPE), "'bundle/inside' is a link"),
        (link("bundle/dev", "", tarfile.CHRTYPE), "'bundle/dev' is not a file or folder"),
        (tarfile.TarInfo("other/file"), "holds one folder, this one 2"),
        (tarfile.TarInfo("bundle/bundle.json"), "'bundle/bundle.json' appears twice"),
    ],
    ids=["absolute", "dotdot", "symlink-out", "hardlink", "symlink-in", "device", "two-tops", "twice"],
)
def test_hostile_members_are_refused_by_name_before_anything_is_extracted(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    tar = hostile_tar(tmp_path / "evil.tar", member, b"payload\n")
    site = tmp_path / "site"
    with pytest.raises(IntegrityError, match=re.escape(message)):
        archive.extract(tar, site)
    assert not site.exists() or list(site.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_sizes_parse_the_way_media_are_labelled() -> None:
    assert archive.parse_size("4G") == 4 * 1000**3
    assert archive.parse_size("4.7GB") == int(4.7 * 1000**3)
    assert archive.parse_size("700M") == 700 * 1000**2
    assert archive.parse_size("64MiB") == 64 * 1024**2
    assert archive.parse_size("2097152") == 2 * 1024**2
    for bad in ("", "big", "-4G", "4X", "10K"):
        with pytest.raises(InputError):
            archive.parse_size(bad)
