"""Scaffolding a release for a newly added chart: its tier entry, values file and toggle.

The tier file is a helmfile template, so the release block is appended as text (the file
stays as people wrote it); the base environment's toggle is added with a round-trip YAML
edit that keeps comments. All files are written together or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.errors import ConfigError, InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.yaml import CommentedMap
from astrago_deploy.model.releases import TIERS, declared_releases

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")


@dataclass(frozen=True)
class ReleasePlan:
    layout: RepoLayout
    files: dict[Path, str]


def release_block(release: str, chart: str, namespace: str, tier: str) -> str:
    return f"""
# Added by `inv charts.add {chart} --release {release}`.
- name: {release}
  namespace: {namespace}
  chart: {{{{ index .Charts "{chart}" | required "{chart} is not in charts/versions.lock" }}}}
  installed: {{{{ index .Values.releases "{release}" "enabled" }}}}
  labels: {{tier: {tier}, app: {release}}}
  inherit: [{{template: release}}]
  postRendererArgs: [--release, {release}, --env, {{{{ .Environment.Name }}}}]
"""


def plan_release(layout: RepoLayout, release: str, chart: str, namespace: str, tier: str) -> ReleasePlan:
    """Validate everything and compute every file's new text; writes nothing."""
    for label, value in (("release", release), ("namespace", namespace)):
        if not _DNS_LABEL.match(value):
            raise InputError(f"invalid --{label} {value!r}: lowercase letters, digits and '-', at most 53 characters")
        if yaml.ambiguous(value):  # written plain into the tier file: helmfile would read `yes` as true
            raise InputError(f"invalid --{label} {value!r}: YAML reads it as a number or boolean; choose another")
    if tier not in TIERS:
        raise InputError(f"invalid --tier {tier!r}: one of {', '.join(TIERS)}")
    existing = {r.name: r.tier_file for r in declared_releases(layout)}
    if release in existing:
        raise InputError(f"release {release!r} already exists in {existing[release].relative_to(layout.root)}")
    tier_file = layout.releases_dir / f"{tier}.yaml.gotmpl"
    if not tier_file.is_file():
        raise ConfigError(f"{tier_file} is missing")
    values_file = layout.environments_dir / "base" / "releases" / f"{release}.yaml"
    if values_file.exists():
        raise InputError(f"{values_file.relative_to(layout.root)} already exists")
    tier_text = yaml.read_text(tier_file)
    newline = yaml.line_ending(tier_text)
    block = release_block(release, chart, namespace, tier).replace("\n", newline)
    writes = {
        tier_file: tier_text + ("" if tier_text.endswith("\n") else newline) + block,
        values_file: (
            f"# Chart values for release {release} in every environment (chart {chart}).\n"
            f"# Per environment: environments/<env>/releases/{release}.yaml. No secrets here.\n"
        ),
    }
    base_values = layout.environments_dir / "base" / "values.yaml"
    writes[base_values] = _with_toggle(base_values, release)
    return ReleasePlan(layout, writes)


def _with_toggle(path: Path, release: str) -> str:
    edited = yaml.load_for_edit(path)
    doc = edited.doc
    releases = doc.get("releases")
    if releases is None:
        releases = doc["releases"] = CommentedMap()
    if not isinstance(releases, CommentedMap):
        raise ConfigError(f"{path}: 'releases' must be a mapping")
    toggle = CommentedMap(enabled=True)
    toggle.fa.set_flow_style()
    releases[release] = toggle
    return edited.text()


def apply(plan: ReleasePlan) -> list[Path]:
    transaction = atomic.FileTransaction()
    for path, text in plan.files.items():
        transaction.write(path, text)
    transaction.commit()
    return transaction.paths
