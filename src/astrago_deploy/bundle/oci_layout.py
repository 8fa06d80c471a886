"""One OCI image layout (image-layout spec 1.0) holding every image of a bundle, byte-exact.

`oci-layout`, `index.json` and `blobs/<algorithm>/<hex>`: each blob (layers, configs and the
manifests themselves) stored once whatever number of images share it, under the digest of its
bytes. Manifests are stored exactly as the registry served them, so every digest a site sees
is the upstream one (a Docker v2 schema 2 manifest stays one). `index.json` names each image
with `org.opencontainers.image.ref.name` (its tag) and the reference it was pulled from.

A blob is written through the registry client's `pull_blob` (a partial file beside it, resumed
with Range, renamed once digest and size match), so an interrupted pull, run again, fetches
only what is missing, and a blob present under its name is complete. `verify` reads the
layout back without trusting any of it: every blob's digest and size, every manifest's
references present, nothing in `blobs/` that no image reaches.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.core import atomic
from astrago_deploy.core.digests import hash_file
from astrago_deploy.core.errors import InputError, IntegrityError
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import (
    DOCKER_MANIFEST_LIST,
    IMAGE_MANIFESTS,
    INDEXES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    Manifest,
    Platform,
)
from astrago_deploy.registry.reference import DIGEST, Reference

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
SOURCE = "io.astrago.image.source"  # the reference the image was pulled from
UPSTREAM_DIGEST = "io.astrago.image.upstream-digest"  # the index it was cut from, if it was
# Partial downloads are kept beside their blob (`.HEX.PREFIX.partial`): a rerun resumes them.
_PARTIAL = re.compile(r"^\.[0-9a-f]+\.[0-9a-f]{16}\.partial$")


@dataclass(frozen=True)
class ImageEntry:
    """One image in `index.json`: the manifest (or index) a site serves under `tag`."""

    descriptor: Descriptor
    tag: str
    source: str
    upstream_digest: str = ""  # the upstream index's digest when only some platforms were kept

    def as_json(self) -> dict[str, Any]:
        annotations = {REF_NAME: self.tag, SOURCE: self.source}
        if self.upstream_digest:
            annotations[UPSTREAM_DIGEST] = self.upstream_digest
        return {
            "mediaType": self.descriptor.media_type,
            "digest": self.descriptor.digest,
            "size": self.descriptor.size,
            "annotations": annotations,
        }


@dataclass
class PullReport:
    """What pulling one image did: the entry, the platforms left out, blobs fetched or present,
    the platforms kept and the bytes of everything the image needs (manifests and blobs)."""

    entry: ImageEntry
    left_out: list[str] = field(default_factory=list)
    fetched: int = 0
    present: int = 0
    fetched_bytes: int = 0
    platforms: list[str] = field(default_factory=list)
    size: int = 0


def blob_relpath(digest: str) -> str:
    """`blobs/ALG/HEX` of a digest; a digest that is not `sha256:<64 hex>`/`sha512:<128 hex>`
    (a hostile `sha256:../../x`) is refused."""
    if not DIGEST.match(digest):
        raise InputError(f"invalid digest {digest!r}")
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


class ImageLayout:
    """An OCI image layout at `root` (created on first write). `bases` are the layouts of the
    bundles an incremental one builds on: a blob one of them holds is not fetched again, and is
    read from there (manifests always live in `root`)."""

    def __init__(self, root: Path, bases: Sequence[Path] = ()) -> None:
        self.root = root
        self.bases = tuple(bases)

    def blob_path(self, digest: str) -> Path:
        """Where this layout keeps blob `digest` (where a fetch writes it)."""
        return self.root / blob_relpath(digest)

    def find_blob(self, descriptor: Descriptor) -> Path | None:
        """This layout's copy of a blob with its size, else a base's; None when none has it."""
        for root in (self.root, *self.bases):
            path = root / blob_relpath(descriptor.digest)
            try:
                if path.stat().st_size == descriptor.size:
                    return path
            except FileNotFoundError:
                continue
        return None

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Present (here or in a base) under its digest with its size (content: `verify`)."""
        return self.find_blob(descriptor) is not None

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        layout = self.root / LAYOUT_FILE
        if not layout.exists():
            atomic.write_text(layout, json.dumps(LAYOUT_VERSION) + "\n")

    def put_manifest(self, manifest: Manifest) -> None:
        """Store a manifest's exact bytes under its digest (once)."""
        path = self.blob_path(manifest.digest)
        if not (path.is_file() and path.stat().st_size == len(manifest.data)):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(path, manifest.data)

    def read_manifest(self, descriptor: Descriptor) -> Manifest:
        path = self.blob_path(descriptor.digest)
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise IntegrityError(f"{blob_relpath(descriptor.digest)}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        data = path.read_bytes()
        manifest = Manifest.of(data, descriptor.media_type)
        if manifest.digest != descriptor.digest:
            raise IntegrityError(f"{blob_relpath(descriptor.digest)}: content has digest {manifest.digest}")
        return manifest

    def entries(self) -> list[ImageEntry]:
        """The images `index.json` names ([] when there is none yet)."""
        try:
            index = json.loads((self.root / INDEX_FILE).read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise IntegrityError(f"{self.root / INDEX_FILE}: not JSON ({exc})") from exc
        found = []
        try:
            for item in index.get("manifests") or []:
                annotations = item.get("annotations") or {}
                found.append(
                    ImageEntry(
                        Descriptor.from_json(item),
                        str(annotations.get(REF_NAME, "")),
                        str(annotations.get(SOURCE, "")),
                        str(annotations.get(UPSTREAM_DIGEST, "")),
                    )
                )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{self.root / INDEX_FILE}: not an image index ({exc!r})") from exc
        return found

    def write_index(self, entries: Iterable[ImageEntry]) -> None:
        """`index.json` naming `entries` (sorted by source, one per source), written atomically."""
        unique = {entry.source: entry for entry in entries}
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [unique[source].as_json() for source in sorted(unique)],
        }
        self.init()
        atomic.write_text(self.root / INDEX_FILE, json.dumps(index, indent=2) + "\n")

    # --- pulling ------------------------------------------------------------------------------

    def pull(
        self,
        client: RegistryClient,
        source: Reference,
        platforms: list[Platform] | None,
        tag: str,
        on_blob: Callable[[int], None] = lambda _size: None,
        workers: int = 1,
        name: str = "",
    ) -> PullReport:
        """Store image `source` (every manifest and blob it needs): `plan` then `fetch`."""
        return self.fetch(client, [self.plan(client, source, platforms, tag, name)], workers, on_blob)[0]

    def plan(
        self, client: RegistryClient, source: Reference, platforms: list[Platform] | None, tag: str, name: str = ""
    ) -> PlannedImage:
        """Read image `source`'s manifests (nothing is written yet). `platforms` None keeps an
        index whole and byte-exact, else only the listed platforms' images are kept: one
        platform is served as its own manifest, several as a new index listing just them.
        A `source` pinned by digest keeps its index whole whatever `platforms` says: the render
        asks the site for that digest (`site_reference` keeps it), and a cut index has another.
        `name` is the image's upstream reference recorded in `index.json` (default: `source`,
        which may be a mirror's location of it)."""
        top = client.get_manifest(source)
        upstream = ""
        left_out: list[str] = []
        if top.is_index and platforms is not None and not source.digest:
            kept, left_out = _select(top, platforms, source)
            upstream = top.digest
            top = client.get_manifest(source.at(kept[0].digest)) if len(kept) == 1 else _sub_index(top, kept)
        images = [client.get_manifest(source.at(d.digest)) for d in top.manifests] if top.is_index else [top]
        blobs: dict[str, Descriptor] = {}
        for image in images:
            if image.is_index:
                raise IntegrityError(f"{source}: an index inside an index is not supported")
            for blob in image.blobs:
                blobs.setdefault(blob.digest, blob)
        entry = ImageEntry(top.descriptor(), tag, name or str(source), upstream)
        return PlannedImage(source, entry, top, images, blobs, left_out)

    def missing_bytes(self, planned: list[PlannedImage]) -> int:
        """The bytes `fetch` will download for `planned`: each blob not yet here, once."""
        unique = {d.digest: d for image in planned for d in image.blobs.values()}
        return sum(d.size for d in unique.values() if not self.has_blob(d))

    def fetch(
        self,
        client: RegistryClient,
        planned: list[PlannedImage],
        workers: int = 1,
        on_blob: Callable[[int], None] = lambda _size: None,
    ) -> list[PullReport]:
        """Download every blob `planned` needs and the layout lacks, once each and `workers` at a
        time, then store each image's manifests (after its blobs: a manifest present means its
        image is complete). `on_blob` is told the size of each blob fetched (a progress bar by
        unique bytes). One report per planned image, in order."""
        self.init()
        reports = [PullReport(p.entry, p.left_out) for p in planned]
        # Each missing blob once, from the first image that needs it (its report counts it).
        needed: dict[str, tuple[Descriptor, Reference, PullReport]] = {}
        for plan, report in zip(planned, reports, strict=True):
            for blob in plan.blobs.values():
                if self.has_blob(blob) or blob.digest in needed:
                    report.present += 1
                else:
                    needed[blob.digest] = (blob, plan.source, report)

        def fetch_one(item: tuple[Descriptor, Reference, PullReport]) -> None:
            blob, source, _report = item
            client.pull_blob(source, blob.digest, self.blob_path(blob.digest), size=blob.size)
            on_blob(blob.size)

        work = sorted(needed.values(), key=lambda item: -item[0].size)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(fetch_one, work))
        for blob, _source, report in work:
            report.fetched += 1
            report.fetched_bytes += blob.size
        for plan, report in zip(planned, reports, strict=True):
            for image in plan.images:
                self.put_manifest(image)
            if plan.top not in plan.images:
                self.put_manifest(plan.top)
            top = plan.top
            report.platforms = [str(d.platform) for d in top.manifests if d.platform] if top.is_index else []
            report.size = sum(b.size for b in plan.blobs.values()) + sum(len(i.data) for i in plan.images)
            report.size += 0 if top in plan.images else len(top.data)
        return reports


@dataclass(frozen=True)
class PlannedImage:
    """One image's manifests as read, before anything is stored."""

    source: Reference
    entry: ImageEntry
    top: Manifest
    images: list[Manifest]
    blobs: dict[str, Descriptor]
    left_out: list[str]


def _select(index: Manifest, platforms: list[Platform], source: Reference) -> tuple[list[Descriptor], list[str]]:
    kept: list[Descriptor] = []
    for platform in platforms:
        entry = index.for_platform(platform)
        if entry is None:
            listed = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
            raise InputError(f"{source} lists no image for {platform} (it has: {listed})")
        if entry not in kept:
            kept.append(entry)
    left_out = [str(d.platform or d.digest) for d in index.manifests if d not in kept]
    return kept, left_out


def _sub_index(index: Manifest, kept: list[Descriptor]) -> Manifest:
    """A new index of `index`'s media type listing only `kept`, each entry as upstream wrote it."""
    document = index.json
    digests = {d.digest for d in kept}
    document["manifests"] = [entry for entry in document.get("manifests") or [] if entry.get("digest") in digests]
    media_type = index.media_type if index.media_type in INDEXES else DOCKER_MANIFEST_LIST
    return Manifest.of(json.dumps(document, indent=2).encode(), media_type)


# --- verifying -----------------------------------------------------------------------------------


@dataclass
class LayoutReport:
    """What `verify` found: counts and bytes as evidence, and every problem by path."""

    images: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    from_bases: int = 0  # layers and configs an incremental layout leaves to its base, found there
    left_to_base: int = 0  # the same, with no base at hand (`incremental`)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "fromBases": self.from_bases,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "problems": self.problems,
        }


def _blob_files(root: Path) -> Iterator[Path]:
    blobs = root / "blobs"
    if not blobs.is_dir():
        return
    for path in sorted(blobs.rglob("*")):
        if path.is_file() or path.is_symlink():
            yield path


def verify(
    root: Path, workers: int | None = None, bases: Sequence[Path] = (), incremental: bool = False
) -> LayoutReport:
    """Check the layout at `root` from its bytes alone (see the module docstring). A layer or
    config an incremental layout leaves to its `bases` is checked there, by digest and size;
    with `incremental` and no base at hand, one that is absent is counted, not a problem (a
    load finds it on the site, loaded from the base before)."""
    report = LayoutReport()
    layout = ImageLayout(root)
    try:
        version = json.loads((root / LAYOUT_FILE).read_bytes())
        if version != LAYOUT_VERSION:
            report.problems.append(f"{LAYOUT_FILE}: {version!r}, expected {LAYOUT_VERSION!r}")
    except (FileNotFoundError, ValueError) as exc:
        report.problems.append(f"{LAYOUT_FILE}: {'missing' if isinstance(exc, FileNotFoundError) else 'not JSON'}")
    try:
        entries = layout.entries()
    except IntegrityError as exc:
        report.problems.append(str(exc))
        entries = []
    report.images = len(entries)

    # Every file under blobs/ by content, in parallel (hashlib hashes without the GIL).
    files = list(_blob_files(root))
    actual: dict[str, tuple[str, int]] = {}

    def check(path: Path) -> tuple[str, tuple[str, int] | str]:
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            return rel, "a link, not a file"
        parts = rel.split("/")
        if len(parts) != 3 or parts[1] not in ("sha256", "sha512") or not DIGEST.match(f"{parts[1]}:{parts[2]}"):
            return rel, "not a blob name (blobs/ALGORITHM/HEX)"
        hexdigest, size = hash_file(path, parts[1])
        found = f"{parts[1]}:{hexdigest}"
        if found != f"{parts[1]}:{parts[2]}":
            return rel, f"content has digest {found}"
        return rel, (found, size)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for rel, outcome in pool.map(check, files):
            if isinstance(outcome, str):
                report.problems.append(f"{rel}: {outcome}")
            else:
                actual[outcome[0]] = outcome
    report.blobs = len(actual)
    report.bytes = sum(size for _, size in actual.values())

    # Every reference from index.json down, each present with its size.
    reached: set[str] = set()

    def reach(descriptor: Descriptor, where: str, manifest: bool) -> None:
        if not DIGEST.match(descriptor.digest):
            report.problems.append(f"{where}: invalid digest {descriptor.digest!r}")
            return
        rel = blob_relpath(descriptor.digest)
        if descriptor.digest in reached:
            return
        reached.add(descriptor.digest)
        if descriptor.digest not in actual:
            if not manifest and _in_base(bases, descriptor, rel):
                report.from_bases += 1
                return
            if not manifest and incremental and not bases:
                report.left_to_base += 1
                return
            if not any(problem.startswith(f"{rel}:") for problem in report.problems):
                report.problems.append(f"{rel}: missing (named by {where})")
            return
        if actual[descriptor.digest][1] != descriptor.size:
            report.problems.append(f"{rel}: {actual[descriptor.digest][1]} bytes, {where} says {descriptor.size}")
            return
        if not manifest:
            return
        report.manifests += 1
        try:
            parsed = layout.read_manifest(descriptor)
            children = parsed.manifests if parsed.is_index else parsed.blobs
        except (ValueError, KeyError, TypeError, IntegrityError) as exc:
            report.problems.append(f"{rel}: not a readable manifest ({exc})")
            return
        for child in children:
            reach(child, f"manifest {descriptor.digest}", parsed.is_index)

    for number, entry in enumerate(entries, start=1):
        where = f"{INDEX_FILE} ({entry.source or f'entry {number}'})"
        if entry.descriptor.media_type not in (*INDEXES, *IMAGE_MANIFESTS):
            report.problems.append(f"{where}: media type {entry.descriptor.media_type!r}")
        reach(entry.descriptor, where, True)
    for digest in sorted(set(actual) - reached):
        report.problems.append(f"{blob_relpath(digest)}: extra (no image names it)")
    return report


def _in_base(bases: Sequence[Path], descriptor: Descriptor, rel: str) -> bool:
    """Whether a base layout holds the blob with its digest (hashed here) and size."""
    algorithm = descriptor.digest.partition(":")[0]
    for base in bases:
        path = base / rel
        if path.is_file() and not path.is_symlink():
            hexdigest, size = hash_file(path, algorithm)
            if f"{algorithm}:{hexdigest}" == descriptor.digest and size == descriptor.size:
                return True
    return False


def partial_files(root: Path) -> list[Path]:
    """Partial downloads an interrupted pull left (resumed by the next pull)."""
    return [path for path in _blob_files(root) if _PARTIAL.match(path.name)]
