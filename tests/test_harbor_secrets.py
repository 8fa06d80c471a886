"""Harbor generates nothing at render time: it reads every key, password and certificate from
existing Secrets, which the README's "Secrets" section creates (real helmfile and helm)."""

from __future__ import annotations

from typing import Any

import pytest

from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.render.manifests import load_documents
from astrago_deploy.render.renderer import Renderer, split_releases
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import readme_secret_keys


def harbor_stream(layout: RepoLayout, env: str) -> str:
    return Renderer(layout, PinnedTools(layout), layout.rendered_dir).helmfile_stream(env, ["harbor"])


@pytest.mark.parametrize("env", ["dev", "sample-site"])
def test_two_renders_of_harbor_are_byte_identical_before_normalization(synced_project: RepoLayout, env: str) -> None:
    first, second = harbor_stream(synced_project, env), harbor_stream(synced_project, env)
    assert set(split_releases(first)) == {"harbor"}
    assert first == second


def referenced_secrets(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secret name -> the keys pods read from it (empty when they read it whole)."""
    found: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                found.setdefault(ref["name"], set()).add(ref["key"])
            ref = node.get("secretRef")
            if isinstance(ref, dict):
                found.setdefault(ref["name"], set())
            secret = node.get("secret")
            if isinstance(secret, dict) and "secretName" in secret:
                found.setdefault(secret["secretName"], set()).update(i["key"] for i in secret.get("items") or [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in docs:
        walk(doc)
    return found


def test_every_secret_harbor_reads_but_does_not_render_is_created_in_the_readme(synced_project: RepoLayout) -> None:
    docs = load_documents(split_releases(harbor_stream(synced_project, "dev"))["harbor"])
    rendered = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    # What the chart would generate is not rendered at all.
    assert not {"harbor-registry-htpasswd", "harbor-database", "harbor-ingress", "harbor-nginx"} & set(rendered)
    assert rendered["harbor-core"].get("data") is None and rendered["harbor-jobservice"].get("data") is None
    existing = {name: keys for name, keys in referenced_secrets(docs).items() if name not in rendered}
    assert set(existing) == {
        "harbor-admin", "harbor-secret-key", "harbor-core-token", "harbor-core-secret", "harbor-core-xsrf",
        "harbor-jobservice-secret", "harbor-registry-http", "harbor-registry-credentials", "harbor-database",
    }
    for name, keys in existing.items():
        created = readme_secret_keys(name)
        assert created is not None, f"README Secrets creates no {name}"
        assert keys <= created, f"{name}: README creates {sorted(created)}, harbor reads {sorted(keys)}"
    # The internal database reads the operator's Secret whole (envFrom): it needs POSTGRES_PASSWORD.
    assert "POSTGRES_PASSWORD" in (readme_secret_keys("harbor-database") or set())


def test_harbor_core_restarts_when_any_secret_it_reads_changes(synced_project: RepoLayout) -> None:
    docs = load_documents(split_releases(harbor_stream(synced_project, "dev"))["harbor"])
    rendered = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    [core] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "harbor-core"]
    reloaded = core["metadata"]["annotations"]["secret.reloader.stakater.com/reload"].split(",")
    # The chart's checksum annotations cover the Secrets it renders; Reloader covers the others.
    assert sorted(reloaded) == sorted(set(referenced_secrets([core])) - rendered)
