"""Safe extraction of chart archives and the content digest of extracted trees.

Archives are real tar streams built by tests/chart_fixtures.py (and the real upstream charts
of the mirror); every refusal is checked for its message and for leaving nothing outside the
destination.
"""

from __future__ import annotations

import gzip
import os
import stat
import tracemalloc
from pathlib import Path

import pytest
import yaml

from astrago_deploy.charts.archive import ExtractLimits, extract_chart
from astrago_deploy.core.digests import tree_digest
from astrago_deploy.core.errors import ArchiveError
from astrago_deploy.model.lock import VersionsLock

from .chart_fixtures import (
    Entry,
    absolute_path_tgz,
    chart_entries,
    chart_tgz,
    hardlink_tgz,
    header_run_tgz,
    huge_declared_size_tgz,
    many_files_tgz,
    oversized_header_tgz,
    reference_tree_digest,
    sparse_tgz,
    special_file_tgz,
    symlink_outside_tgz,
    tar_bytes,
    tar_slip_tgz,
    two_top_folders_tgz,
)
from .conftest import PROJECT

LABEL = "evil 0.1.0"


def listing(root: Path) -> dict[str, str]:
    """Relative path -> 'd' / 'l:<target>' / '<octal mode>:<bytes>' for everything below root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"l:{os.readlink(path)}"
        elif path.is_dir():
            out[rel] = f"d:{stat.S_IMODE(path.stat().st_mode):o}"
        else:
            out[rel] = f"{stat.S_IMODE(path.stat().st_mode):o}:{path.read_text()}"
    return out


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty extraction folder two levels down, so escapes have somewhere to land."""
    folder = tmp_path / "staging" / "tree"
    folder.mkdir(parents=True)
    return folder


def outside(tmp_path: Path, dest: Path) -> list[str]:
    """Everything below tmp_path that is not the destination tree (should stay empty)."""
    return sorted(
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if p != dest.parent and p != dest and dest not in p.parents
    )


# --- extraction -------------------------------------------------------------------------------


def test_extracts_the_single_top_folder_with_normalized_modes(dest: Path) -> None:
    payload = tar_bytes(
        [
            Entry("demo", kind="dir", mode=0o700),
            *chart_entries("demo", "0.1.0", crds=True),
            Entry("demo/files/run.sh", data=b"#!/bin/sh\necho hi\n", mode=0o700),
            Entry("demo/files/secret.txt", data=b"private\n", mode=0o600),
            Entry("demo/files/shared.txt", data=b"world-writable\n", mode=0o666),
            Entry("demo/templates/alias.yaml", kind="symlink", linkname="configmap.yaml"),
            Entry("demo/root-values.yaml", kind="symlink", linkname="./values.yaml"),
        ]
    )

    top = extract_chart(payload, dest, "demo 0.1.0")

    assert top == "demo"
    assert listing(dest) == {
        "Chart.yaml": "644:" + (chart_entries("demo", "0.1.0")[0].data.decode()),
        "crds": "d:755",
        "crds/widgets.yaml": "644:" + chart_entries("demo", "0.1.0", crds=True)[3].data.decode(),
        "files": "d:755",
        "files/run.sh": "755:#!/bin/sh\necho hi\n",
        "files/secret.txt": "644:private\n",
        "files/shared.txt": "644:world-writable\n",
        "root-values.yaml": "l:./values.yaml",
        "templates": "d:755",
        "templates/alias.yaml": "l:configmap.yaml",
        "templates/configmap.yaml": "644:" + chart_entries("demo", "0.1.0")[2].data.decode(),
        "values.yaml": "644:# Default values of demo.\ngreeting: hello\n",
    }
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_the_top_folder_name_need_not_be_the_chart_name(dest: Path) -> None:
    assert extract_chart(chart_tgz("demo", "0.1.0", top="demo-chart"), dest, "demo 0.1.0") == "demo-chart"
    assert (dest / "Chart.yaml").is_file()


def test_an_uncompressed_tar_is_refused_in_one_line_as_helm_refuses_it(tmp_path: Path, dest: Path) -> None:
    # `helm template x.tar` says "does not appear to be a gzipped archive": a chart is a .tgz.
    payload = tar_bytes(chart_entries("demo", "0.1.0"), compress=False)
    archive = tmp_path / "demo-0.1.0.tgz"
    archive.write_bytes(payload)
    for given in (payload, archive):
        with pytest.raises(ArchiveError) as caught:
            extract_chart(given, dest, f"demo 0.1.0: {archive}")
        assert str(caught.value) == (
            f"demo 0.1.0: {archive}: not a gzip-compressed chart archive "
            "(Helm charts are .tgz files; check the URL or file)"
        )
    assert list(dest.iterdir()) == []


def test_extended_headers_within_the_bounds_are_read(dest: Path) -> None:
    # Go's archive/tar (helm package) writes pax records for long names; they must still work.
    long_name = "demo/templates/" + "n" * 150 + ".yaml"
    payload = tar_bytes([*chart_entries("demo", "0.1.0"), Entry(long_name, data=b"a: 1\n")])
    assert extract_chart(payload, dest, "demo 0.1.0") == "demo"
    assert (dest / "templates" / ("n" * 150 + ".yaml")).read_text() == "a: 1\n"
    assert extract_chart(oversized_header_tgz("pax", 60_000, "demo"), dest.parent / "pax", "demo 0.1.0") == "demo"
    assert extract_chart(header_run_tgz(8, "demo"), dest.parent / "run", "demo 0.1.0") == "demo"


def test_a_200_mb_pax_header_is_refused_before_it_is_read(dest: Path) -> None:
    # 200 MB of header compress to about 200 kB; tarfile alone reads all of it into memory.
    payload = oversized_header_tgz("pax", 200_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError) as caught:
            extract_chart(payload, dest, LABEL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        f"{LABEL}: a pax header of 200000000 bytes, refused (at most 65536; Helm never writes such archives)"
    )
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: the header was read"
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(absolute_path_tgz(), "refused entry '/tmp/astrago-absolute-escape' (absolute", id="absolute-path"),
        pytest.param(
            tar_slip_tgz(), "refused entry 'evil/templates/../../../escaped.txt' ('..' in path)", id="tar-slip"
        ),
        pytest.param(tar_slip_tgz(escape="../Chart.yaml"), "('..' in path)", id="dotdot-staying-inside"),
        pytest.param(
            tar_bytes([Entry("../escaped.txt", data=b"x")]),
            "refused entry '../escaped.txt' ('..' in path)",
            id="dotdot-top",
        ),
        pytest.param(
            symlink_outside_tgz(),
            "refused link templates/link.yaml -> ../../../etc/passwd (points outside the chart)",
            id="symlink-relative-outside",
        ),
        pytest.param(
            symlink_outside_tgz(target="/etc/passwd"),
            "refused link templates/link.yaml -> /etc/passwd (absolute target)",
            id="symlink-absolute",
        ),
        pytest.param(
            symlink_outside_tgz(target="../.."),
            "refused link templates/link.yaml -> ../.. (points outside the chart)",
            id="symlink-to-parent",
        ),
        pytest.param(
            tar_bytes([*chart_entries("evil", "0.1.0"), Entry("evil", kind="symlink", linkname="/")]),
            "refused link 'evil' at top level",
            id="symlink-top",
        ),
        pytest.param(
            hardlink_tgz(), "refused hard link evil/templates/hard.yaml -> /etc/passwd", id="hardlink-outside"
        ),
        pytest.param(
            hardlink_tgz(target="evil/values.yaml"),
            "refused hard link evil/templates/hard.yaml -> evil/values.yaml",
            id="hardlink-inside",
        ),
        pytest.param(special_file_tgz("chr"), "refused special file evil/templates/special (device", id="char-device"),
        pytest.param(special_file_tgz("blk"), "refused special file evil/templates/special (device", id="block-device"),
        pytest.param(special_file_tgz("fifo"), "refused special file evil/templates/special (device, FIFO", id="fifo"),
        pytest.param(
            two_top_folders_tgz(), "entries in more than one top-level folder ('evil', 'other')", id="two-top-folders"
        ),
        pytest.param(
            tar_bytes([*chart_entries("evil", "0.1.0"), Entry("README.md", data=b"hi\n")]),
            "entries in more than one top-level folder ('evil', 'README.md')",
            id="file-beside-the-folder",
        ),
        pytest.param(
            tar_bytes([Entry("Chart.yaml", data=b"x")]),
            "refused entry 'Chart.yaml' (file at top level)",
            id="lone-file",
        ),
        pytest.param(
            tar_bytes([*chart_entries("evil", "0.1.0"), Entry("evil/values.yaml", data=b"again: 1\n")]),
            "duplicate entry evil/values.yaml",
            id="duplicate-file",
        ),
        pytest.param(
            huge_declared_size_tgz(10**12),
            "evil/templates/huge.yaml is 1000000000000 bytes, refused",
            id="huge-declared",
        ),
        pytest.param(tar_bytes([]), "the archive is empty", id="empty"),
        pytest.param(b"<html>502 Bad Gateway</html>", "not a gzip-compressed chart archive", id="not-an-archive"),
        pytest.param(b"", "not a gzip-compressed chart archive", id="no-bytes"),
        pytest.param(
            tar_bytes([*chart_entries("evil", "0.1.0"), Entry("evil/values.yaml/x.yaml", data=b"x: 1\n")]),
            "refused entry 'evil/values.yaml/x.yaml' (inside values.yaml, which is a file)",
            id="file-below-a-file",
        ),
        pytest.param(
            tar_bytes([*chart_entries("evil", "0.1.0"), Entry("evil/values.yaml", kind="dir")]),
            "duplicate entry evil/values.yaml (a file and a folder)",
            id="folder-over-a-file",
        ),
        pytest.param(
            oversized_header_tgz("longname", 70_000),
            "a GNU long name header of 70000 bytes, refused (at most 65536",
            id="gnu-longname-too-long",
        ),
        pytest.param(
            oversized_header_tgz("longname", 5000),
            "(a path longer than a file system allows)",
            id="longname-beyond-name-max",
        ),
        pytest.param(header_run_tgz(5000), "more than 8 extended headers in a row, refused", id="header-run"),
        pytest.param(sparse_tgz(pax=False), "refused sparse file evil/templates/sparse.yaml", id="gnu-sparse"),
        pytest.param(sparse_tgz(pax=True), "refused sparse file (pax GNU.sparse)", id="pax-sparse"),
        pytest.param(
            b"\x1f\x8b" + b"not really gzip", "corrupt or truncated archive (BadGzipFile", id="gzip-magic-only"
        ),
        pytest.param(gzip.compress(b"<html>not a tar</html>", mtime=0), "corrupt or truncated archive", id="gzip-of-html"),
        pytest.param(chart_tgz("evil", "0.1.0")[:300], "corrupt or truncated archive", id="truncated-gzip"),
    ],
)
def test_refuses_unsafe_or_malformed_archives(tmp_path: Path, dest: Path, payload: bytes, reason: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        extract_chart(payload, dest, LABEL)

    message = str(caught.value)
    assert message.startswith(f"{LABEL}: ")
    assert reason in message
    assert outside(tmp_path, dest) == []
    assert not Path("/tmp/astrago-absolute-escape").exists()


def test_a_chain_of_links_that_leads_outside_is_refused_and_writes_nothing_outside(tmp_path: Path, dest: Path) -> None:
    # Each target alone stays inside when read as text (`sub/d/../..` -> `.`), but `sub/d` is a
    # link to the chart root, so `sub/e` really points two levels above it; a third entry
    # would then create folders through `sub/e`, outside the destination.
    payload = tar_bytes(
        [
            *chart_entries("evil", "0.1.0"),
            Entry("evil/sub/e", kind="symlink", linkname="d/../.."),
            Entry("evil/sub/d", kind="symlink", linkname=".."),
            Entry("evil/sub/e/planted/x", kind="symlink", linkname="y"),
        ]
    )
    with pytest.raises(ArchiveError, match=r"^evil 0\.1\.0: refused link sub/e/planted/x \(inside the link sub/e\)$"):
        extract_chart(payload, dest, LABEL)
    assert outside(tmp_path, dest) == []

    chain_only = tar_bytes(
        [
            *chart_entries("evil", "0.1.0"),
            Entry("evil/sub/e", kind="symlink", linkname="d/../.."),
            Entry("evil/sub/d", kind="symlink", linkname=".."),
        ]
    )
    fresh = tmp_path / "second" / "tree"
    fresh.mkdir(parents=True)
    with pytest.raises(ArchiveError, match=r"refused link sub/e -> d/\.\./\.\. \(points outside the chart\)"):
        extract_chart(chain_only, fresh, LABEL)


@pytest.mark.parametrize(
    ("payload", "limits", "reason"),
    [
        pytest.param(many_files_tgz(20), ExtractLimits(members=10), "more than 10 entries, refused", id="members"),
        pytest.param(
            chart_tgz("evil", "0.1.0", extra=[Entry("evil/big.bin", data=b"x" * 5000)]),
            ExtractLimits(file_bytes=4096),
            "evil/big.bin is 5000 bytes, refused",
            id="file-bytes",
        ),
        pytest.param(
            many_files_tgz(50, name="evil"),
            ExtractLimits(total_bytes=400),
            "more than 400 bytes unpacked, refused",
            id="total-bytes",
        ),
    ],
)
def test_size_and_count_limits(dest: Path, payload: bytes, limits: ExtractLimits, reason: str) -> None:
    with pytest.raises(ArchiveError, match=rf"^{LABEL}: .*{reason}"):
        extract_chart(payload, dest, LABEL, limits)


def test_limits_are_inclusive_bounds(dest: Path) -> None:
    payload = many_files_tgz(7)  # Chart.yaml, values.yaml, a template and 7 files
    assert extract_chart(payload, dest, "crowd 0.1.0", ExtractLimits(members=10)) == "crowd"
    assert len(list((dest / "files").iterdir())) == 7


# --- the content digest -----------------------------------------------------------------------


def extracted(tmp_path: Path, name: str, payload: bytes) -> Path:
    target = tmp_path / name
    target.mkdir(parents=True)
    extract_chart(payload, target, name)
    return target


DEMO = chart_tgz(
    "demo",
    "0.1.0",
    crds=True,
    extra=[
        Entry("demo/files/run.sh", data=b"#!/bin/sh\n", mode=0o755),
        Entry("demo/templates/alias.yaml", kind="symlink", linkname="configmap.yaml"),
    ],
)


def test_tree_digest_follows_the_documented_format(tmp_path: Path) -> None:
    tree = extracted(tmp_path, "a", DEMO)
    assert tree_digest(tree) == reference_tree_digest(tree)


def test_tree_digest_is_independent_of_path_umask_and_timestamps(tmp_path: Path) -> None:
    first = extracted(tmp_path, "one", DEMO)
    previous = os.umask(0o077)
    try:
        second = extracted(tmp_path / "deeper" / "elsewhere", "two", DEMO)
    finally:
        os.umask(previous)
    os.utime(second / "values.yaml", (0, 0))

    assert listing(first) == listing(second)
    assert tree_digest(first) == tree_digest(second)


@pytest.mark.parametrize("change", ["byte", "exec-bit", "rename", "new-empty-dir", "link-target", "delete"])
def test_tree_digest_changes_with_content(tmp_path: Path, change: str) -> None:
    tree = extracted(tmp_path, "a", DEMO)
    before = tree_digest(tree)
    values = tree / "values.yaml"
    if change == "byte":
        values.write_bytes(values.read_bytes().replace(b"hello", b"hellp"))
    elif change == "exec-bit":
        values.chmod(0o755)
    elif change == "rename":
        values.rename(tree / "values.yml")
    elif change == "new-empty-dir":
        (tree / "charts").mkdir()
    elif change == "link-target":
        (tree / "templates" / "alias.yaml").unlink()
        (tree / "templates" / "alias.yaml").symlink_to("../values.yaml")
    else:
        (tree / "crds" / "widgets.yaml").unlink()

    after = tree_digest(tree)
    assert after != before
    assert after == reference_tree_digest(tree)


def test_tree_digest_ignores_write_and_group_bits(tmp_path: Path) -> None:
    tree = extracted(tmp_path, "a", DEMO)
    before = tree_digest(tree)
    (tree / "values.yaml").chmod(0o600)
    (tree / "files" / "run.sh").chmod(0o700)
    assert tree_digest(tree) == before


def test_tree_digest_of_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tree_digest(tmp_path / "absent")


@pytest.mark.parametrize(
    ("name", "relpath"),
    [
        ("harbor", "helm.goharbor.io/harbor-1.14.2.tgz"),
        ("ingress-nginx", "github.com/kubernetes/ingress-nginx/releases/download/helm-chart-4.11.3/ingress-nginx-4.11.3.tgz"),
        ("gpu-operator", "nvidia.github.io/gpu-operator/stable/gpu-operator-v25.3.4.tgz"),
        (
            "csi-driver-nfs",
            "raw.githubusercontent.com/kubernetes-csi/csi-driver-nfs/master/charts/v4.9.0/csi-driver-nfs-v4.9.0.tgz",
        ),
    ],
)
def test_real_upstream_archives_extract_to_the_committed_tree_digest(
    tmp_path: Path, mirror: Path, name: str, relpath: str
) -> None:
    lock = VersionsLock.load(PROJECT / "charts" / "versions.lock")
    payload = (mirror / relpath).read_bytes()
    tree = tmp_path / "tree"
    tree.mkdir()

    assert extract_chart(payload, tree, name) == name
    assert yaml.safe_load((tree / "Chart.yaml").read_text())["name"] == name
    assert tree_digest(tree) == lock.get(name).tree
