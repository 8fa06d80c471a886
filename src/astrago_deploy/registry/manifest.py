"""Manifests as the exact bytes a registry served, and the descriptors inside them.

A manifest's identity is the digest of its bytes: parsing is only for reading descriptors,
and what is stored or pushed again is always `Manifest.data`, never a re-serialization (which
changes whitespace or key order, and so the digest). Image manifests (OCI and Docker v2
schema 2) name a config and layers; an image index (OCI) or manifest list (Docker) names one
manifest per platform.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
# The distribution spec asks registries to accept manifests of at least 4 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/arch[/variant]`, as `docker --platform` writes it."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r} (use os/arch[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        platform = data.get("platform")
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=int(data["size"]),
            platform=(
                Platform(
                    str(platform.get("os", "")), str(platform.get("architecture", "")), str(platform.get("variant", ""))
                )
                if isinstance(platform, dict)
                else None
            ),
            urls=tuple(str(u) for u in data.get("urls") or ()),
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as served: `data` is what its `digest` covers."""

    media_type: str
    data: bytes
    digest: str

    @classmethod
    def of(cls, data: bytes, media_type: str = "") -> Manifest:
        """A manifest from bytes; the media type from the document when not given."""
        return cls(media_type or str(_parse(data).get("mediaType", "")), data, digest_of(data))

    @property
    def json(self) -> dict[str, Any]:
        return _parse(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES or "manifests" in self.json

    @property
    def config(self) -> Descriptor | None:
        config = self.json.get("config")
        return Descriptor.from_json(config) if isinstance(config, dict) else None

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_json(d) for d in self.json.get("layers") or []]

    @property
    def manifests(self) -> list[Descriptor]:
        """The per-platform manifests of an index or manifest list."""
        return [Descriptor.from_json(d) for d in self.json.get("manifests") or []]

    @property
    def blobs(self) -> list[Descriptor]:
        """Config then layers: every blob an image manifest needs present in its repository."""
        config = self.config
        return ([config] if config else []) + self.layers

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))

    def for_platform(self, platform: Platform) -> Descriptor | None:
        """The index entry for `platform` (a variant, when asked, must match too)."""
        for entry in self.manifests:
            found = entry.platform
            if found is None or (found.os, found.architecture) != (platform.os, platform.architecture):
                continue
            if platform.variant and found.variant != platform.variant:
                continue
            return entry
        return None


def _parse(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise ValueError("the manifest is not JSON") from exc
    if not isinstance(parsed, dict):
        raise ValueError("the manifest is not a JSON object")
    return parsed
