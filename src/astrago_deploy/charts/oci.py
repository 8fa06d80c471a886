"""Helm charts in OCI registries, pinned by manifest digest.

Speaks the registry HTTP API v2 directly: resolve a tag to its manifest digest, fetch the
manifest by digest (verifying it), then the chart layer blob (verifying it). Anonymous,
basic and bearer-token registries are supported; credentials come from the environment (see
`transport`) and are never logged. Loopback registries, and hosts listed in
`ASTRAGO_OCI_PLAIN_HTTP` (comma-separated), are spoken to over plain HTTP.

`OCI_MIRROR=HOST[:PORT]` names a registry that stands in for every upstream one, the way a
Harbor proxy cache or an air-gapped site's registry does: `oci://ghcr.io/org/charts/NAME` is
read from `oci://HOST[:PORT]/ghcr.io/org/charts/NAME` (a `:` in the upstream host becomes `_`).
The lock keeps the upstream location; the manifest digest makes the mirror's copy verifiable.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from astrago_deploy.core.errors import FetchError, IntegrityError
from astrago_deploy.core.http import Fetcher, credentials_for, host_port

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CHART_BYTES = 256 * 1024 * 1024
LOOPBACK = ("127.", "localhost", "[::1]")


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

    def scheme(self, environ: dict[str, str]) -> str:
        plain = {h.strip() for h in environ.get("ASTRAGO_OCI_PLAIN_HTTP", "").split(",") if h.strip()}
        return "http" if self.host.startswith(LOOPBACK) or self.host in plain else "https"

    def api(self, environ: dict[str, str], tail: str) -> str:
        return f"{self.scheme(environ)}://{self.host}/v2/{self.path}/{tail}"

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
        self.fetcher = fetcher
        self.mirror = fetcher.environ.get("OCI_MIRROR", "").removeprefix("oci://")
        self._tokens: dict[str, str] = {}

    def _environ(self) -> dict[str, str]:
        return dict(self.fetcher.environ)

    def _get(self, chart: OciChart, tail: str, accept: str, max_bytes: int) -> tuple[dict[str, str], bytes]:
        chart = chart.through(self.mirror)
        url = chart.api(self._environ(), tail)
        headers = {"Accept": accept}
        token = self._tokens.get(chart.path)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        reply = self.fetcher.http(url, max_bytes, headers=headers, accept_status=frozenset({401, 404}))
        if reply.status == 401 and not token:
            self._authenticate(chart, reply.headers.get("WWW-Authenticate", ""), url)
            headers["Authorization"] = f"Bearer {self._tokens[chart.path]}" if chart.path in self._tokens else ""
            if not headers["Authorization"]:
                del headers["Authorization"]
            reply = self.fetcher.http(url, max_bytes, headers=headers, accept_status=frozenset({401, 404}))
        if reply.status == 401:
            raise FetchError(
                f"oci://{chart.host}/{chart.path}: access denied (set ASTRAGO_REPO_<HOST>_USERNAME/_PASSWORD)"
            )
        if reply.status == 404:
            what = "no such repository" if tail == "tags/list" else f"{tail.rsplit('/', maxsplit=1)[-1]} not found"
            raise FetchError(f"oci://{chart.host}/{chart.path}: {what}")
        return reply.headers, reply.body

    def _authenticate(self, chart: OciChart, challenge: str, url: str) -> None:
        if challenge.lower().startswith("basic"):
            if credentials_for(url, self.fetcher.environ) is None:
                raise FetchError(f"oci://{chart.host}: the registry wants credentials; none are set")
            return  # the fetcher already sends them; the retry will tell
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise FetchError(f"oci://{chart.host}: unsupported authentication challenge")
        params.setdefault("scope", f"repository:{chart.path}:pull")
        query = "&".join(f"{k}={v}" for k, v in params.items())
        reply = self.fetcher.http(f"{realm}?{query}", 1024 * 1024, auth=credentials_for(url, self.fetcher.environ))
        try:
            data = json.loads(reply.body)
            self._tokens[chart.path] = str(data.get("token") or data["access_token"])
        except (ValueError, KeyError) as exc:
            raise FetchError(f"oci://{chart.host}: the token service gave no token") from exc

    def resolve(self, chart: OciChart, version: str) -> str:
        """The manifest digest (`sha256:...`) the tag `version` points at now."""
        _headers, body = self._get(chart, f"manifests/{tag_of(version)}", MANIFEST_TYPES, MAX_MANIFEST_BYTES)
        return f"sha256:{hashlib.sha256(body).hexdigest()}"

    def tags(self, chart: OciChart) -> list[str]:
        _headers, body = self._get(chart, "tags/list", "application/json", MAX_MANIFEST_BYTES)
        try:
            return [str(t) for t in json.loads(body).get("tags") or []]
        except ValueError as exc:
            raise FetchError(f"oci://{chart.host}/{chart.path}: malformed tag list") from exc

    def pull(self, chart: OciChart, manifest_digest: str) -> tuple[bytes, str]:
        """The chart archive pinned by `manifest_digest`, and the archive's own digest."""
        _headers, body = self._get(chart, f"manifests/{manifest_digest}", MANIFEST_TYPES, MAX_MANIFEST_BYTES)
        actual = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if actual != manifest_digest:
            raise IntegrityError(
                f"{chart.name}: OCI manifest digest mismatch (expected {manifest_digest}, got {actual})"
            )
        try:
            manifest: dict[str, Any] = json.loads(body)
        except ValueError as exc:
            raise FetchError(f"{chart.name}: the OCI manifest is not JSON") from exc
        layers = [layer for layer in manifest.get("layers", []) if layer.get("mediaType") == CHART_LAYER]
        if len(layers) != 1:
            raise FetchError(f"{chart.name}: the OCI manifest has {len(layers)} Helm chart layers, expected 1")
        layer_digest = str(layers[0]["digest"])
        _headers, blob = self._get(chart, f"blobs/{layer_digest}", "*/*", MAX_CHART_BYTES)
        blob_digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
        if blob_digest != layer_digest:
            raise IntegrityError(
                f"{chart.name}: chart layer digest mismatch (expected {layer_digest}, got {blob_digest})"
            )
        return blob, blob_digest
