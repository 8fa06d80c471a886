"""Helm charts in OCI registries, pinned by manifest digest.

The chart-specific part over the shared registry client (`astrago_deploy.registry`): resolve
a version's tag to its manifest digest, fetch the manifest by digest (verified), find its one
Helm chart layer and fetch that blob (verified). Authentication, plain HTTP for loopback
registries and hosts in `ASTRAGO_OCI_PLAIN_HTTP`, and credentials from
`ASTRAGO_REPO_<HOST>_USERNAME/_PASSWORD` are the registry client's.

`OCI_MIRROR=HOST[:PORT]` names a registry that stands in for every upstream one, the way a
Harbor proxy cache or an air-gapped site's registry does: `oci://ghcr.io/org/charts/NAME` is
read from `oci://HOST[:PORT]/ghcr.io/org/charts/NAME` (a `:` in the upstream host becomes `_`).
The lock keeps the upstream location; the manifest digest makes the mirror's copy verifiable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from astrago_deploy.core.errors import FetchError, IntegrityError
from astrago_deploy.core.http import Fetcher, host_port
from astrago_deploy.model.chart_names import chart_version_problem
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.errors import DigestMismatchError, RegistryError
from astrago_deploy.registry.manifest import DOCKER_MANIFEST, OCI_MANIFEST
from astrago_deploy.registry.reference import Reference

MANIFEST_TYPES = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MAX_CHART_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class OciChart:
    repository: str  # oci://host[:port]/path
    name: str

    @property
    def host(self) -> str:
        return host_port(self.repository)

    @property
    def path(self) -> str:
        rest = self.repository.removeprefix("oci://").rstrip("/")
        base = rest.split("/", 1)[1] if "/" in rest else ""
        return f"{base}/{self.name}" if base else self.name

    @property
    def reference(self) -> Reference:
        return Reference(self.host, self.path).checked(f"oci://{self.host}/{self.path}")

    def through(self, mirror: str) -> OciChart:
        """This chart's location in the registry `mirror` (see the module docstring)."""
        if not mirror:
            return self
        rest = self.repository.removeprefix("oci://").rstrip("/")
        host, _, base = rest.partition("/")
        path = "/".join(part for part in (host.replace(":", "_"), base) if part)
        return OciChart(f"oci://{mirror.rstrip('/')}/{path}", self.name)


def tag_of(version: str) -> str:
    """OCI tags cannot contain '+': Helm stores build metadata with '_' instead."""
    return version.replace("+", "_")


class OciClient:
    def __init__(self, fetcher: Fetcher) -> None:
        environ = dict(fetcher.environ)
        self.mirror = environ.get("OCI_MIRROR", "").removeprefix("oci://")
        # The fetcher's read timeout and total deadline (scaled) bound registry requests too.
        self.registry = RegistryClient(
            environ,
            retries=fetcher.retries,
            backoff=fetcher.backoff,
            timeout=fetcher.read_timeout,
            deadline=fetcher.total_deadline,
        )

    def _located(self, chart: OciChart) -> Reference:
        return chart.through(self.mirror).reference

    def resolve(self, chart: OciChart, version: str) -> str:
        """The manifest digest (`sha256:...`) the tag `version` points at now."""
        ref = self._located(chart).at(tag_of(version))
        with _chart_errors(chart, "OCI manifest"):
            return self.registry.get_manifest(ref, accept=MANIFEST_TYPES).digest

    def tags(self, chart: OciChart) -> list[str]:
        """The repository's tags that can be chart versions (a tag becomes a folder and branch
        name; others are left out, as an index's unusable entries are)."""
        with _chart_errors(chart, "OCI manifest"):
            tags = self.registry.tags(self._located(chart))
        return [tag for tag in tags if chart_version_problem(tag) is None]

    def pull(self, chart: OciChart, manifest_digest: str) -> tuple[bytes, str]:
        """The chart archive pinned by `manifest_digest`, and the archive's own digest."""
        ref = self._located(chart)
        with _chart_errors(chart, "OCI manifest"):
            manifest = self.registry.get_manifest(ref.at(manifest_digest), accept=MANIFEST_TYPES)
        try:
            layers = [layer for layer in manifest.layers if layer.media_type == CHART_LAYER]
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError(f"{chart.name}: the OCI manifest is not a valid image manifest") from exc
        if len(layers) != 1:
            raise FetchError(f"{chart.name}: the OCI manifest has {len(layers)} Helm chart layers, expected 1")
        layer_digest = layers[0].digest
        with _chart_errors(chart, "chart layer"):
            blob = self.registry.blob_bytes(ref, layer_digest, MAX_CHART_BYTES)
        return blob, layer_digest


@contextlib.contextmanager
def _chart_errors(chart: OciChart, what: str) -> Iterator[None]:
    """Registry failures named after the chart and its `oci://` location."""
    try:
        yield
    except DigestMismatchError as exc:
        raise IntegrityError(
            f"{chart.name}: {what} digest mismatch (expected {exc.expected}, got {exc.actual})"
        ) from exc
    except RegistryError as exc:
        raise FetchError(f"oci://{exc.where}: {exc.detail}") from exc
