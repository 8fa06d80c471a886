"""An environment's image inventory: every image its cluster pulls, why, and its site reference.

Built from the rendered environment (rendered/<env>/, the same pipeline as a deploy, patches
included), the committed `images.extra.yaml` (images nothing in the render names, each with a
reason), and, for an environment with `offline.registry`, a second render with the registry
unset (under .cache/images/upstream/): each field of the real render is paired with the same
field of that one, so the inventory knows the upstream reference of every rewritten image and
checks the rewrite against `reference.site_reference`. Errors: a reference that does not parse,
an image outside the site registry, a site reference that is not the upstream path kept (a
flattened path), two upstream images that map to one site reference. No tag or `latest` warns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.core import yaml
from astrago_deploy.core.diagnostics import Diagnostic, error, warning
from astrago_deploy.core.errors import ConfigError, ImageReferenceError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.images.collect import rendered_uses
from astrago_deploy.images.reference import ImageRef, in_registry, parse_image, site_reference
from astrago_deploy.images.uses import ImageUse, KindContext
from astrago_deploy.model import environments
from astrago_deploy.model.environments import Environment
from astrago_deploy.model.releases import releases
from astrago_deploy.render import renderer as rendering
from astrago_deploy.toolchain.pinned import PinnedTools

EXTRA_FILE = "images.extra.yaml"
EXTRA_RESOURCE = "images.extra.yaml"
DEFAULT_NODE_OS = ("ubuntu22.04",)
_OS_TAG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class InventoryImage:
    image: str  # fully qualified upstream reference
    site: str | None  # where it lives in the site registry, for an offline environment
    why: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"image": self.image, "site": self.site, "why": list(self.why)}


@dataclass
class Inventory:
    environment: str
    registry: str | None
    images: list[InventoryImage] = field(default_factory=list)
    findings: list[Diagnostic] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"environment": self.environment, "images": [image.as_json() for image in self.images]}

    @property
    def errors(self) -> list[Diagnostic]:
        return [f for f in self.findings if f.is_error]


def node_os(settings: Mapping[str, Any], env: str) -> tuple[str, ...]:
    """`cluster.nodeOS`: the OS tags of the environment's GPU nodes (`ubuntu22.04`, `rhel9.4`)."""
    cluster = settings.get("cluster") if isinstance(settings.get("cluster"), dict) else {}
    assert isinstance(cluster, dict)
    value = cluster.get("nodeOS", list(DEFAULT_NODE_OS))
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and _OS_TAG.fullmatch(v) for v in value):
        raise ConfigError(
            f"environment {env}: cluster.nodeOS must be a non-empty list of OS tags such as [ubuntu22.04, rhel9.4] "
            f"(got {value!r}); see its values.yaml layers under environments/"
        )
    return tuple(dict.fromkeys(value))


def offline_registry(settings: Mapping[str, Any]) -> str | None:
    offline = settings.get("offline")
    registry = offline.get("registry") if isinstance(offline, dict) else None
    return str(registry).strip().rstrip("/") if registry else None


def read_extra(path: Path) -> list[ImageUse]:
    """The entries of images.extra.yaml: `RELEASE: [{image: REF, reason: WHY}, ...]`."""
    if not path.is_file():
        return []
    data = yaml.read_mapping(path)
    uses: list[ImageUse] = []
    for release, entries in data.items():
        if not isinstance(entries, list):
            raise ConfigError(f"{path.name}: {release} must be a list of {{image, reason}} entries")
        for index, entry in enumerate(entries):
            where = f"{path.name}: {release}[{index}]"
            if not isinstance(entry, dict) or set(entry) != {"image", "reason"}:
                raise ConfigError(f"{where}: an entry has exactly the keys image and reason")
            if not isinstance(entry["reason"], str) or not entry["reason"].strip():
                raise ConfigError(f"{where}: reason must say why the image is pulled")
            reason = " ".join(entry["reason"].split())
            uses.append(ImageUse(str(release), EXTRA_RESOURCE, reason, "", entry["image"], path.name))
    return uses


def _normalized(uses: Iterable[ImageUse], findings: list[Diagnostic]) -> list[tuple[ImageUse, ImageRef]]:
    """Each use with its parsed reference; an unparseable one becomes an error at its place."""
    parsed = []
    for use in uses:
        try:
            ref = parse_image(use.image)
        except ImageReferenceError as exc:
            findings.append(error(use.source, None, f"{use.resource} {use.field}", f"{use.release}: {exc}"))
            continue
        if ref.unpinned:
            findings.append(
                warning(use.source, None, f"{use.resource} {use.field}", f"{use.release}: {ref} has {ref.unpinned}")
            )
        parsed.append((use, ref))
    return parsed


def build(
    environment: str,
    uses: Sequence[ImageUse],
    extra: Sequence[ImageUse] = (),
    registry: str | None = None,
    site_uses: Sequence[ImageUse] | None = None,
    findings: Sequence[Diagnostic] = (),
) -> Inventory:
    """The inventory of `uses` (upstream references, as rendered without a site registry) plus
    the extra entries of rendered releases. With `registry`, `site_uses` are the same fields as
    the environment really renders them: each must be its upstream image's site reference."""
    inventory = Inventory(environment, registry, findings=list(findings))
    releases = {use.release for use in uses}
    parsed = _normalized([*uses, *(e for e in extra if e.release in releases)], inventory.findings)
    why: dict[ImageRef, set[str]] = {}
    for use, ref in parsed:
        why.setdefault(ref, set()).add(use.why)
    sites: dict[ImageRef, ImageRef] = {}
    if registry:
        sites = {ref: site_reference(ref, registry) for ref in why}
        _check_collisions(sites, parsed, inventory.findings)
        _check_site_render(registry, parsed, site_uses or [], inventory.findings)
    inventory.images = [
        InventoryImage(str(ref), str(sites[ref]) if registry else None, tuple(sorted(why[ref])))
        for ref in sorted(why, key=str)
    ]
    return inventory


def _check_collisions(
    sites: Mapping[ImageRef, ImageRef], parsed: Sequence[tuple[ImageUse, ImageRef]], findings: list[Diagnostic]
) -> None:
    by_site: dict[ImageRef, list[ImageRef]] = {}
    for upstream, site in sites.items():
        by_site.setdefault(site, []).append(upstream)
    first_use = {ref: use for use, ref in reversed(parsed)}
    for site, upstreams in sorted(by_site.items(), key=lambda item: str(item[0])):
        if len(upstreams) > 1:
            names = sorted(str(u) for u in upstreams)
            use = first_use[sorted(upstreams, key=str)[0]]
            findings.append(
                error(
                    use.source,
                    None,
                    f"{use.resource} {use.field}",
                    f"{' and '.join(names)} map to one site reference {site}",
                    "mirror one of them under another path (a site registry holds one image per reference)",
                )
            )


def _check_site_render(
    registry: str,
    parsed: Sequence[tuple[ImageUse, ImageRef]],
    site_uses: Sequence[ImageUse],
    findings: list[Diagnostic],
) -> None:
    upstream_at = {use.place: ref for use, ref in parsed if use.resource != EXTRA_RESOURCE}
    for use, ref in _normalized(site_uses, findings):
        key = f"{use.resource} {use.field}"
        if not in_registry(ref, registry):
            findings.append(
                error(
                    use.source, None, key, f"{use.release}: image {ref} is not pulled from the site registry {registry}"
                )
            )
            continue
        upstream = upstream_at.get(use.place)
        if upstream is None:
            findings.append(
                error(
                    use.source,
                    None,
                    key,
                    f"{use.release}: {ref} has no upstream image at this field without offline.registry",
                )
            )
        elif site_reference(upstream, registry) != ref:
            expected = site_reference(upstream, registry)
            findings.append(
                error(
                    use.source,
                    None,
                    key,
                    f"{use.release}: site reference {ref} does not match upstream {upstream} "
                    f"(expected {expected}: host dropped, path kept)",
                )
            )


def images_of_render(folder: Path, os_tags: tuple[str, ...] = DEFAULT_NODE_OS) -> set[str]:
    """Every image the render at `folder` makes a cluster pull, fully qualified, as the image
    inventory collects them (pod specs, `*_IMAGE` env values, gpu-operator's operands per node
    OS, one per tag of `os_tags`). A reference that does not parse is kept as written: a report
    (the upgrade's, the promotion's) shows it, and `inv images.list` and `nox -s images` name
    its place."""
    uses, _warnings = rendered_uses(folder, KindContext(os_tags))
    found: set[str] = set()
    for use in uses:
        try:
            found.add(str(parse_image(use.image)))
        except ImageReferenceError:
            found.add(str(use.image))
    return found


def upstream_dir(layout: RepoLayout) -> Path:
    """Where offline environments are rendered with `offline.registry` unset."""
    return layout.cache_dir / "images" / "upstream"


def environment_inventory(
    layout: RepoLayout, env: Environment, namespaces: Mapping[str, str] | None = None, upstream_root: Path | None = None
) -> Inventory:
    """The inventory of `env` from rendered/<env> (and, offline, the upstream render under
    `upstream_root`); both must have been rendered (`render_for_inventory` does it)."""
    settings = environments.settings(layout, env)
    context = KindContext(node_os(settings, env.name))
    registry = offline_registry(settings)
    rendered, findings = rendered_uses(layout.rendered_dir / env.name, context, namespaces, layout.root)
    extra = read_extra(layout.root / EXTRA_FILE)
    if not registry:
        return build(env.name, rendered, extra, findings=findings)
    folder = (upstream_root or upstream_dir(layout)) / env.name
    upstream, more = rendered_uses(folder, context, namespaces, layout.root)
    return build(env.name, upstream, extra, registry, rendered, [*findings, *more])


def render_for_inventory(layout: RepoLayout, envs: Sequence[Environment], log: Callable[[str], None]) -> None:
    """Render `envs` (cached when unchanged), and each offline one again with the registry unset."""
    tools = PinnedTools(layout)
    rendering.require_vendored(layout, "images")
    rendering.Renderer(layout, tools, layout.rendered_dir, log).render(envs)
    offline = [env for env in envs if offline_registry(environments.settings(layout, env))]
    if offline:
        upstream = rendering.Renderer(layout, tools, upstream_dir(layout), log, state_values={"offline.registry": ""})
        upstream.render(offline)


def inventories(layout: RepoLayout, envs: Sequence[Environment], log: Callable[[str], None]) -> list[Inventory]:
    """Render what is needed and build each environment's inventory, in the order given."""
    render_for_inventory(layout, envs, log)
    tools = PinnedTools(layout)
    found = []
    for env in envs:
        namespaces = {ref.name: ref.namespace for ref in releases(layout, env.name, tools)}
        found.append(environment_inventory(layout, env, namespaces))
    return found
