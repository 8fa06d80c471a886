"""prometheus-operator's workloads: `Prometheus`, `PrometheusAgent`, `Alertmanager`, `ThanosRuler`.

The operator builds each StatefulSet's main image as prometheus-operator's
`operator.BuildImagePath` does (pkg/operator/image.go): `spec.image` when set, else the base
image (`spec.baseImage`, else the operator's default) with `@sha256:<sha>`, else `:<tag>`, else
`:<version>`. With neither an image nor a version, the operator's compiled-in default version
applies, which no render shows: that is a warning asking to set the image. A Prometheus with
`spec.thanos` (even empty) also runs the Thanos sidecar, built the same way. Containers and init
containers given in the spec are merged into the pod by name, and those naming an image count.

The config-reloader sidecar of every Prometheus and Alertmanager pod comes from the operator's
`--prometheus-config-reloader` flag, read with the operator's pod spec (`images.collect`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from astrago_deploy.images.uses import Found, KindContext, Unresolved

GROUP = "monitoring.coreos.com"
# Kind -> the operator's default base image for its main container.
DEFAULT_BASE = {
    "Prometheus": "quay.io/prometheus/prometheus",
    "PrometheusAgent": "quay.io/prometheus/prometheus",
    "Alertmanager": "quay.io/prometheus/alertmanager",
    "ThanosRuler": "quay.io/thanos/thanos",
}
KINDS = tuple(DEFAULT_BASE)
THANOS_BASE = "quay.io/thanos/thanos"


def image_path(spec: dict[str, Any], default_base: str) -> str:
    """The image the operator runs for `spec`, "" when only its built-in default version would name it."""
    image = str(spec.get("image") or "")
    if image:
        return image
    base = str(spec.get("baseImage") or default_base)
    sha, tag, version = (str(spec.get(k) or "") for k in ("sha", "tag", "version"))
    if sha:
        return f"{base}@sha256:{sha.removeprefix('sha256:')}"
    if tag:
        return f"{base}:{tag}"
    return f"{base}:{version}" if version else ""


def _main(spec: dict[str, Any], field: str, default_base: str) -> Found | Unresolved:
    path = image_path(spec, default_base)
    if path:
        return Found(path, field)
    return Unresolved(
        field, "no image and no version: the operator starts its built-in default, which no render shows; set the image"
    )


def found_images(doc: dict[str, Any], _context: KindContext) -> Iterator[Found | Unresolved]:
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    kind = str(doc.get("kind"))
    yield _main(spec, "spec.image", DEFAULT_BASE[kind])
    thanos = spec.get("thanos")
    if kind == "Prometheus" and isinstance(thanos, dict):
        yield _main(thanos, "spec.thanos.image", THANOS_BASE)
    for list_name in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(list_name) or []):
            if isinstance(container, dict) and container.get("image"):
                yield Found(container["image"], f"spec.{list_name}[{container.get('name') or index}].image")
