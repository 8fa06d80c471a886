"""Image references as a cluster reads them, in fully qualified form, and their site references.

A pod's `image: nginx` means `docker.io/library/nginx` and `goharbor/harbor-core:v2.10.2`
means `docker.io/goharbor/harbor-core:v2.10.2`: the first path component is a registry only
when it holds a `.` or a `:` or is `localhost` (the container runtimes' rule). `index.docker.io`
is `docker.io`. Tags and digests are kept as written; a reference with neither pulls `latest`.

`site_reference` is the one place the suite computes where an image lives in a site registry
(`offline.registry`, `host[:port][/path]`): the upstream host is dropped and the path kept, so
`nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1` -> `REGISTRY/nvidia/k8s/dcgm-exporter:4.3.1`. The
render's rewrite (helmfile/values/offline-images.yaml.gotmpl, our charts' helpers) spells the
same rule in Go templates; the inventory checks every rewritten image against this function.
"""

from __future__ import annotations

from dataclasses import dataclass

from astrago_deploy.core.errors import ImageReferenceError, InputError
from astrago_deploy.registry.reference import DIGEST, REPOSITORY, TAG, split_host_port

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True, order=True)
class ImageRef:
    """`registry/repository[:tag][@digest]`, every part explicit."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def unpinned(self) -> str:
        """Why the reference moves under the same name ("" when pinned by tag or digest)."""
        if self.digest:
            return ""
        if not self.tag:
            return "no tag (pulls latest)"
        return "tag latest" if self.tag == "latest" else ""


def _is_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def parse_image(text: object) -> ImageRef:
    """The fully qualified form of an image reference as a pod spec writes it.

    Raises ImageReferenceError naming the reference and what is wrong with it."""
    if not isinstance(text, str):
        raise ImageReferenceError(f"invalid image reference {text!r}: not a string")
    raw = text.strip()
    if not raw or raw != text or any(c.isspace() for c in raw):
        raise ImageReferenceError(f"invalid image reference {text!r}: empty or holds whitespace")
    rest, at, digest = raw.partition("@")
    if at and not DIGEST.fullmatch(digest):
        raise ImageReferenceError(f"invalid image reference {text!r}: bad digest {digest!r} (sha256:<64 hex>)")
    first, slash, remainder = rest.partition("/")
    if slash and _is_registry(first):
        registry, path = first, remainder
        try:
            split_host_port(registry)
        except InputError as exc:
            raise ImageReferenceError(f"invalid image reference {text!r}: bad registry {registry!r}") from exc
    else:
        registry, path = DOCKER_HUB, rest
    if registry.lower() in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    name, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        name, tag = path, ""
    elif not tag:
        raise ImageReferenceError(f"invalid image reference {text!r}: empty tag after ':'")
    if tag and not TAG.fullmatch(tag):
        raise ImageReferenceError(f"invalid image reference {text!r}: bad tag {tag!r}")
    if registry == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    if not REPOSITORY.fullmatch(name):
        raise ImageReferenceError(
            f"invalid image reference {text!r}: bad repository {name!r} (lower-case a-z0-9 . _ - /)"
        )
    return ImageRef(registry, name, tag, digest)


def site_reference(image: ImageRef, registry: str) -> ImageRef:
    """Where `image` lives in the site registry `registry` (`host[:port][/path]`): the upstream
    host dropped, the path kept, tag and digest kept."""
    host, _slash, prefix = registry.strip().rstrip("/").partition("/")
    repository = f"{prefix}/{image.repository}" if prefix else image.repository
    return ImageRef(host, repository, image.tag, image.digest)


def in_registry(image: ImageRef, registry: str) -> bool:
    """Whether `image` is pulled from `registry` (`host[:port][/path]`)."""
    return str(image).startswith(registry.strip().rstrip("/") + "/")
