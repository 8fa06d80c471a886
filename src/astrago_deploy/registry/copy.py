"""Copying an image (or an index and every image it lists) between repositories and registries.

The order is what makes a copy safe to interrupt: blobs first (a blob already in the
destination is skipped, one in another repository of the same registry is mounted, anything
else is streamed through a file in `workdir` and removed), then each manifest by digest, and
the tag last, so the destination's tag never points at an incomplete image. Manifests are
pushed as the exact bytes read, so source and destination digests are equal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.errors import NotFoundError
from astrago_deploy.registry.manifest import Descriptor, Manifest, Platform
from astrago_deploy.registry.reference import Reference


@dataclass
class CopyReport:
    digest: str = ""  # of the manifest the destination tag now names
    blobs: Counter[str] = field(default_factory=Counter)  # "exists" / "mounted" / "uploaded" -> count
    manifests: list[str] = field(default_factory=list)  # digests pushed, children before parents


def copy_image(
    client: RegistryClient,
    source: Reference,
    dest: Reference,
    workdir: Path,
    platform: Platform | None = None,
) -> CopyReport:
    """Copy `source` to `dest` (a tag or digest). With `platform`, only that image of an index."""
    report = CopyReport()
    top = client.get_manifest(source)
    if top.is_index and platform is not None:
        entry = top.for_platform(platform)
        if entry is None:
            raise NotFoundError(source.name, f"{source.target} lists no image for {platform}")
        top = client.get_manifest(source.at(entry.digest))
    _copy_tree(client, source, dest, top, workdir, report)
    client.put_manifest(dest if dest.tag or dest.digest else dest.at(top.digest), top)
    report.digest = top.digest
    report.manifests.append(top.digest)
    return report


def _copy_tree(
    client: RegistryClient, source: Reference, dest: Reference, manifest: Manifest, workdir: Path, report: CopyReport
) -> None:
    if manifest.is_index:
        for entry in manifest.manifests:
            child = client.get_manifest(source.at(entry.digest))
            _copy_tree(client, source, dest, child, workdir, report)
            client.put_manifest(dest.at(child.digest), child)
            report.manifests.append(child.digest)
        return
    for blob in manifest.blobs:
        report.blobs[_copy_blob(client, source, dest, blob, workdir)] += 1


def _copy_blob(client: RegistryClient, source: Reference, dest: Reference, blob: Descriptor, workdir: Path) -> str:
    if client.head_blob(dest, blob.digest, push=True) is not None:
        return "exists"
    same_registry = source.registry == dest.registry and source.repository != dest.repository
    if same_registry and client.mount_blob(dest, blob.digest, source.repository):
        return "mounted"
    staged = workdir / blob.digest.replace(":", "-")
    try:
        client.pull_blob(source, blob.digest, staged, size=blob.size)
        return client.push_blob(dest, staged, blob.digest).how
    finally:
        staged.unlink(missing_ok=True)
