"""Small chart archives built byte-for-byte by the tests, and Helm repositories serving them.

Everything here is deterministic (fixed mtimes, owners and gzip header), so the same call
always gives the same bytes and therefore the same sha256. The malicious archives are real
tar streams, each with exactly one thing wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MTIME = 1_700_000_000


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Entry:
    """One tar member. `kind`: file, dir, symlink, hardlink, chr, blk, fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    linkname: str = ""
    declared_size: int | None = None  # a header claiming this size, with no data behind it


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.type = _TYPES[entry.kind]
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = entry.mode if entry.mode is not None else (0o755 if entry.kind == "dir" else 0o644)
    info.linkname = entry.linkname
    info.size = len(entry.data) if entry.kind == "file" else 0
    return info


def tar_bytes(entries: Iterable[Entry], compress: bool = True) -> bytes:
    """A tar stream (gzip-compressed by default, like a chart .tgz) of exactly `entries`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for entry in entries:
            info = _info(entry)
            if entry.declared_size is not None:
                # Only the header: tarfile would insist on the data; an attacker need not.
                info.size = entry.declared_size
                archive.fileobj.write(info.tobuf(archive.format, archive.encoding, archive.errors))  # type: ignore[union-attr]
                archive.offset += tarfile.BLOCKSIZE
                continue
            archive.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    data = raw.getvalue()
    if not compress:
        return data
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)
    return out.getvalue()


def chart_yaml(name: str, version: str, app_version: str = "1.0.0", description: str = "A test chart") -> str:
    return (
        "apiVersion: v2\n"
        f"name: {name}\n"
        f"version: {version}\n"
        f"appVersion: {app_version!r}\n"
        f"description: {description}\n"
        "type: application\n"
    )


CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
  namespace: {{ .Release.Namespace }}
data:
  greeting: {{ .Values.greeting | quote }}
  chart: {{ .Chart.Name }}-{{ .Chart.Version }}
"""

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object}
"""


def chart_entries(
    name: str,
    version: str,
    *,
    greeting: str = "hello",
    crds: bool = False,
    extra: Sequence[Entry] = (),
    top: str | None = None,
) -> list[Entry]:
    """The members of a small valid chart in folder `top` (default: the chart name)."""
    root = top or name
    entries = [
        Entry(f"{root}/Chart.yaml", data=chart_yaml(name, version).encode()),
        Entry(f"{root}/values.yaml", data=f"# Default values of {name}.\ngreeting: {greeting}\n".encode()),
        Entry(f"{root}/templates/configmap.yaml", data=CONFIGMAP.encode()),
    ]
    if crds:
        entries.append(Entry(f"{root}/crds/widgets.yaml", data=CRD.encode()))
    entries.extend(extra)
    return entries


def chart_tgz(
    name: str,
    version: str,
    *,
    greeting: str = "hello",
    crds: bool = False,
    extra: Sequence[Entry] = (),
    top: str | None = None,
) -> bytes:
    """A small valid chart archive, as `helm package` would lay it out."""
    return tar_bytes(chart_entries(name, version, greeting=greeting, crds=crds, extra=extra, top=top))


# --- malicious archives: a valid chart plus exactly one bad member ----------------------------


def _evil(name: str, version: str, bad: Entry) -> bytes:
    return tar_bytes([*chart_entries(name, version), bad])


def absolute_path_tgz(name: str = "evil", version: str = "0.1.0") -> bytes:
    return _evil(name, version, Entry("/tmp/astrago-absolute-escape", data=b"pwned\n"))


def tar_slip_tgz(name: str = "evil", version: str = "0.1.0", escape: str = "../../../escaped.txt") -> bytes:
    return _evil(name, version, Entry(f"{name}/templates/{escape}", data=b"pwned\n"))


def symlink_outside_tgz(name: str = "evil", version: str = "0.1.0", target: str = "../../../etc/passwd") -> bytes:
    return _evil(name, version, Entry(f"{name}/templates/link.yaml", kind="symlink", linkname=target))


def hardlink_tgz(name: str = "evil", version: str = "0.1.0", target: str = "/etc/passwd") -> bytes:
    return _evil(name, version, Entry(f"{name}/templates/hard.yaml", kind="hardlink", linkname=target))


def special_file_tgz(kind: str, name: str = "evil", version: str = "0.1.0") -> bytes:
    """`kind`: chr, blk or fifo."""
    return _evil(name, version, Entry(f"{name}/templates/special", kind=kind))


def two_top_folders_tgz(name: str = "evil", version: str = "0.1.0") -> bytes:
    return _evil(name, version, Entry("other/values.yaml", data=b"x: 1\n"))


def huge_declared_size_tgz(size: int, name: str = "evil", version: str = "0.1.0") -> bytes:
    """A member whose header claims `size` bytes (no data follows)."""
    return _evil(name, version, Entry(f"{name}/templates/huge.yaml", declared_size=size))


def many_files_tgz(count: int, name: str = "crowd", version: str = "0.1.0") -> bytes:
    extra = [Entry(f"{name}/files/f{i:05d}.txt", data=f"{i}\n".encode()) for i in range(count)]
    return chart_tgz(name, version, extra=extra)


def _header(kind: bytes, name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = MTIME
    return info.tobuf(tarfile.USTAR_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _members(entries: Iterable[Entry]) -> bytes:
    """The tar blocks of `entries` (regular files and folders) without the end-of-archive marker."""
    blocks = []
    for entry in entries:
        info = _info(entry)
        blocks.append(info.tobuf(tarfile.GNU_FORMAT) + entry.data + _pad(len(entry.data)))
    return b"".join(blocks)


END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


def _gzip_stream(parts: Iterable[bytes]) -> bytes:
    """gzip of the concatenated `parts`, compressed as they come (a 200 MB header stays cheap)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing, mtime 0; 1: fast
    return b"".join([*(packer.compress(part) for part in parts), packer.flush()])


def oversized_header_tgz(kind: str, size: int, name: str = "evil", version: str = "0.1.0") -> bytes:
    """A valid chart preceded by one extended header whose content is `size` bytes: a pax
    record (`kind="pax"`) or a GNU long name (`kind="longname"`) of that length."""

    def content(chunk: bytes = b"a" * (1 << 20)) -> Iterable[bytes]:
        if kind == "pax":
            # A pax record counts its own length digits: "<len> comment=<value>\n".
            length = size
            head = f"{length} comment=".encode()
            yield head
            rest = size - len(head) - 1
        else:
            yield f"{name}/".encode()
            rest = size - len(name) - 2
        for _ in range(rest // len(chunk)):
            yield chunk
        yield chunk[: rest % len(chunk)]
        yield b"\n" if kind == "pax" else b"\0"

    header = (
        _header(tarfile.XHDTYPE, "././@PaxHeader", size)
        if kind == "pax"
        else (_header(tarfile.GNUTYPE_LONGNAME, "././@LongLink", size))
    )
    chart = _members(chart_entries(name, version)) + END_OF_ARCHIVE
    return _gzip_stream([header, *content(), _pad(size), chart])


def header_run_tgz(count: int, name: str = "evil", version: str = "0.1.0") -> bytes:
    """A valid chart whose first member follows `count` small pax headers in a row."""
    record = b"19 comment=abcdefg\n"
    pax = _header(tarfile.XHDTYPE, "././@PaxHeader", len(record)) + record + _pad(len(record))
    return _gzip_stream([pax * count, _members(chart_entries(name, version)), END_OF_ARCHIVE])


def sparse_tgz(pax: bool, name: str = "evil", version: str = "0.1.0") -> bytes:
    """A valid chart plus one sparse file: an old GNU sparse member, or a pax 1.0 one."""
    if not pax:
        bad = _header(tarfile.GNUTYPE_SPARSE, f"{name}/templates/sparse.yaml", 0)
        return _gzip_stream([_members(chart_entries(name, version)), bad, END_OF_ARCHIVE])
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in chart_entries(name, version):
            archive.addfile(_info(entry), io.BytesIO(entry.data) if entry.kind == "file" else None)
        info = _info(Entry(f"{name}/templates/sparse.yaml", data=b"1\n0\n2\nx:"))
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "2"}
        archive.addfile(info, io.BytesIO(b"1\n0\n2\nx:"))
    return _gzip_stream([raw.getvalue()])


# --- Helm repositories ----------------------------------------------------------------------


@dataclass(frozen=True)
class RepoChart:
    name: str
    version: str
    payload: bytes
    index_digest: str | None = None  # what index.yaml claims (default: the payload's sha256)
    path: str = ""  # file path inside the repository (default NAME-VERSION.tgz)
    write_file: bool = True

    @property
    def filename(self) -> str:
        return self.path or f"{self.name}-{self.version}.tgz"

    @property
    def digest(self) -> str:
        return sha256(self.payload)


@dataclass
class HelmRepo:
    root: Path
    charts: list[RepoChart] = field(default_factory=list)

    def chart(self, name: str, version: str) -> RepoChart:
        return next(c for c in self.charts if c.name == name and c.version == version)


def write_repo(root: Path, charts: Sequence[RepoChart], absolute_base: str | None = None) -> HelmRepo:
    """Write the archives and an `index.yaml` (upstream layout: hex digests, newest first).

    URLs are relative to the repository unless `absolute_base` is given.
    """
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[dict[str, object]]] = {}
    for chart in charts:
        if chart.write_file:
            target = root / chart.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(chart.payload)
        claimed = chart.index_digest if chart.index_digest is not None else chart.digest
        url = f"{absolute_base.rstrip('/')}/{chart.filename}" if absolute_base else chart.filename
        entries.setdefault(chart.name, []).append(
            {
                "apiVersion": "v2",
                "name": chart.name,
                "version": chart.version,
                "appVersion": "1.0.0",
                "created": "2024-01-01T00:00:00Z",
                "digest": claimed.removeprefix("sha256:"),
                "urls": [url],
            }
        )
    index = {"apiVersion": "v1", "entries": entries, "generated": "2024-01-01T00:00:00Z"}
    (root / "index.yaml").write_text(yaml.safe_dump(index, sort_keys=False))
    return HelmRepo(root, list(charts))


def demo_repo(root: Path, absolute_base: str | None = None) -> HelmRepo:
    """A repository with demo 0.1.0 and 0.2.0 and extra 1.0.0."""
    return write_repo(
        root,
        [
            RepoChart("demo", "0.1.0", chart_tgz("demo", "0.1.0", crds=True)),
            RepoChart("demo", "0.2.0", chart_tgz("demo", "0.2.0", greeting="bonjour", crds=True)),
            RepoChart("extra", "1.0.0", chart_tgz("extra", "1.0.0")),
        ],
        absolute_base,
    )


def reference_tree_digest(root: Path) -> str:
    """The tree digest's documented format, written out independently of the code under test:
    one line per entry below `root` (`d REL`, `l REL TARGET`, `f MODE REL SHA256`), sorted."""
    lines = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            lines.append((rel, f"l {rel} {os.readlink(path)}\n"))
        elif path.is_dir():
            lines.append((rel, f"d {rel}\n"))
        else:
            mode = "755" if path.stat().st_mode & 0o111 else "644"
            lines.append((rel, f"f {mode} {rel} {hashlib.sha256(path.read_bytes()).hexdigest()}\n"))
    text = "".join(line for _, line in sorted(lines))
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
