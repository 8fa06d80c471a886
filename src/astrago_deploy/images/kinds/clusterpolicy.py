"""NVIDIA gpu-operator's `ClusterPolicy`: the operands the operator starts, with their images.

The rules follow the operator (api/nvidia/v1/clusterpolicy_types.go and controllers/ of
gpu-operator 25.x): an image is `repository/image:version` (`@version` for a `sha256:` digest),
or `image` alone when repository and version are both empty; with nothing set the operator falls
back to its own `*_IMAGE` environment variables, which the pod-spec scan already collects. A
component runs when its `enabled` flag says so, absent flags taking the operator's default; the
sandbox components (vGPU, VFIO, Kata, CC, the sandbox device plugin) run only with
`sandboxWorkloads.enabled`. The driver, GPUDirect Storage, GDRCopy and vGPU manager images get
`-<os>` appended per node OS (`cluster.nodeOS`), as the operator appends the node's OS tag,
unless pinned by digest. The driver manager runs as the driver's (and vGPU/VFIO managers') init
container; `operator.initContainer` is an operand init container image and always counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from astrago_deploy.images.uses import Found, KindContext, Unresolved

GROUP = "nvidia.com"
KIND = "ClusterPolicy"


@dataclass(frozen=True)
class Component:
    key: str
    enabled_by_default: bool
    sandbox: bool = False  # runs only with sandboxWorkloads.enabled
    per_os: bool = False  # the operator appends -<os> to the tag
    nested: tuple[str, ...] = ()  # sub-specs with their own image (init containers)


COMPONENTS = (
    Component("driver", True, per_os=True, nested=("manager",)),
    Component("toolkit", True),
    Component("devicePlugin", True),
    Component("dcgm", True),
    Component("dcgmExporter", True),
    Component("migManager", True),
    Component("gfd", True),
    Component("nodeStatusExporter", False),
    Component("gds", False, per_os=True),
    Component("gdrcopy", False, per_os=True),
    Component("sandboxDevicePlugin", False, sandbox=True),
    Component("kataManager", False, sandbox=True),
    Component("vfioManager", False, sandbox=True, nested=("driverManager",)),
    Component("vgpuDeviceManager", False, sandbox=True),
    Component("vgpuManager", False, sandbox=True, per_os=True, nested=("driverManager",)),
    Component("ccManager", False, sandbox=True),
)
# Sidecars of the driver DaemonSet: they run only where the driver does.
_DRIVER_SIDECARS = frozenset({"gds", "gdrcopy"})


def _enabled(spec: Any, default: bool) -> bool:
    value = spec.get("enabled") if isinstance(spec, dict) else None
    return default if value is None else value is True


def image_path(spec: dict[str, Any]) -> str:
    """The operator's `imagePath`: "" when the spec names no image (the env fallback applies)."""
    repository, image, version = (str(spec.get(k) or "") for k in ("repository", "image", "version"))
    if not repository and not version:
        return image
    if version.startswith("sha256:"):
        return f"{repository}/{image}@{version}"
    return f"{repository}/{image}:{version}"


def _images_of(spec: dict[str, Any], field: str, per_os: bool, context: KindContext) -> Iterator[Found]:
    path = image_path(spec)
    if not path:
        return  # the operator uses its *_IMAGE environment variable, collected from its pod spec
    if per_os and "sha256:" not in path:
        for os_tag in context.node_os:
            yield Found(f"{path}-{os_tag}", field, f"node OS {os_tag}")
    else:
        yield Found(path, field)


def found_images(doc: dict[str, Any], context: KindContext) -> Iterator[Found | Unresolved]:
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    sandbox = _enabled(spec.get("sandboxWorkloads"), False)
    driver = spec.get("driver") if isinstance(spec.get("driver"), dict) else {}
    assert isinstance(driver, dict)
    driver_runs = _enabled(driver, True)
    if driver_runs and driver.get("useNvidiaDriverCRD") is True:
        driver_runs = False
        yield Unresolved("spec.driver", "useNvidiaDriverCRD: the driver images come from NVIDIADriver resources")
    elif driver_runs and driver.get("usePrecompiled") is True:
        driver_runs = False
        yield Unresolved(
            "spec.driver", "usePrecompiled: the driver tag names each node's kernel; list it in images.extra.yaml"
        )
    operator = spec.get("operator") if isinstance(spec.get("operator"), dict) else {}
    assert isinstance(operator, dict)
    init = operator.get("initContainer")
    if isinstance(init, dict):
        yield from _images_of(init, "spec.operator.initContainer", False, context)
    validator = spec.get("validator")
    if isinstance(validator, dict):
        yield from _images_of(validator, "spec.validator", False, context)
    for component in COMPONENTS:
        component_spec = spec.get(component.key)
        if not isinstance(component_spec, dict) and not component.enabled_by_default:
            continue
        component_spec = component_spec if isinstance(component_spec, dict) else {}
        if not _enabled(component_spec, component.enabled_by_default) or (component.sandbox and not sandbox):
            continue
        if component.key == "driver" and not driver_runs:
            continue
        if component.key in _DRIVER_SIDECARS and not driver_runs:
            continue
        field = f"spec.{component.key}"
        yield from _images_of(component_spec, field, component.per_os, context)
        for nested in component.nested:
            sub = component_spec.get(nested)
            if isinstance(sub, dict):
                yield from _images_of(sub, f"{field}.{nested}", False, context)
        if component.key == "kataManager":
            yield from _kata_artifacts(component_spec)


def _kata_artifacts(spec: dict[str, Any]) -> Iterator[Found]:
    """Kata Manager pulls each runtime class's artifacts (an OCI image) itself."""
    config = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    assert isinstance(config, dict)
    for runtime in config.get("runtimeClasses") or []:
        artifacts = runtime.get("artifacts") if isinstance(runtime, dict) else None
        url = artifacts.get("url") if isinstance(artifacts, dict) else None
        if isinstance(url, str) and url:
            yield Found(url, f"spec.kataManager.config.runtimeClasses[{runtime.get('name', '?')}].artifacts.url")
