"""The determinism check: no release may generate a value at render time.

A chart left to generate a key, password or certificate (harbor's `randAlphaNum`, `genCA`,
`htpasswd`) makes a new one on every render and so on every deploy: pods restart, issued tokens
become invalid, and a review can never tell a real change from noise. The renderer normalizes
such values as a safety net; this check makes a regression fail `nox -s lint` instead. It renders
each release whose chart can generate values (render/generated.py) twice per environment and
reports every value the two renders disagree on, with the environments it appears in.
"""

from __future__ import annotations

from astrago_deploy.core.diagnostics import Diagnostic, shown_path
from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.releases import ReleaseRef, releases
from astrago_deploy.render import renderer as rendering
from astrago_deploy.render.generated import normalize_generated
from astrago_deploy.render.manifests import load_documents
from astrago_deploy.toolchain.pinned import PinnedTools

_FIX = 'make the chart read it from an existing Secret (README "Secrets")'


def check_generated(layout: RepoLayout, env_names: list[str] | None = None) -> list[Diagnostic]:
    """One error per generated value (release, resource, path), naming the environments it appears in."""
    try:
        rendering.require_vendored(layout)
    except AstragoError as exc:
        return [Diagnostic(shown_path(layout.lock_file, layout.root), None, "charts", "error", str(exc))]
    tools = PinnedTools(layout)
    renderer = rendering.Renderer(layout, tools, layout.rendered_dir)
    found: dict[tuple[str, str], list[str]] = {}  # (release, `Kind/ns/name path`) -> environments
    refs: dict[str, ReleaseRef] = {}
    for env in environments.select(layout, env_names):
        installed = {ref.name: ref for ref in releases(layout, env.name, tools) if ref.installed}
        refs.update(installed)
        generating = rendering.generating_releases(layout, env.name, installed, tools)
        if not generating:
            continue
        first, second = renderer.release_texts(env.name, generating), renderer.release_texts(env.name, generating)
        for name in generating:
            docs = load_documents(first.get(name, ""), f"{env.name}/{name}")
            for item in normalize_generated(docs, load_documents(second.get(name, ""), f"{env.name}/{name}")):
                found.setdefault((name, item), []).append(env.name)
    problems = []
    for (name, item), envs in found.items():  # in render order: a Secret before what checksums it
        resource, _, path = item.partition(" ")
        message = (
            f"{name} generates {resource} {path} afresh on every render ({', '.join(envs)}): every deploy replaces it"
        )
        problems.append(Diagnostic(*_where(layout, refs[name]), f"{resource} {path}", "error", message, _FIX))
    return problems


def _where(layout: RepoLayout, ref: ReleaseRef) -> tuple[str, int | None]:
    """The release's values file (where the fix goes), else the line declaring the release."""
    values = layout.helmfile_dir / "values" / f"{ref.name}.yaml.gotmpl"
    if values.is_file():
        return shown_path(values, layout.root), None
    return shown_path(ref.tier_file, layout.root), ref.line
