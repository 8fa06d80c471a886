"""Offline validation of rendered manifests: Kubernetes schemas, CRD schemas, offline images."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from astrago_deploy.core.diagnostics import Diagnostic, format_diagnostic
from astrago_deploy.core.errors import AstragoError, ConfigError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render.generated import NORMALIZED
from astrago_deploy.render.manifests import digest_secret, load_documents
from astrago_deploy.render.renderer import Renderer, dump_documents
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.validate import validation
from astrago_deploy.validate.validation import validate_documents

from .conftest import make_project

ENVS = ["dev", "stage", "prod", "sample-site"]


def deployment(**container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", **container}]},
            },
        },
    }


def custom_resource_definition(schema: dict[str, Any], preserve: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": schema, "status": {"type": "object"}},
                        }
                    },
                },
                {"name": "v0", "served": False, "storage": False, "schema": {"openAPIV3Schema": {"type": "object"}}},
            ],
        },
    }


def widget(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}, "spec": spec}


def errors(findings: list[Diagnostic]) -> list[str]:
    return [f.message for f in findings if f.severity == "error"]


@pytest.fixture(scope="module")
def rendered_template(tmp_path_factory: pytest.TempPathFactory, synced_template: RepoLayout) -> RepoLayout:
    """The synced project with every environment rendered by the pinned tools (once per module)."""
    dest = tmp_path_factory.mktemp("validated") / "repo"
    shutil.copytree(synced_template.root, dest, symlinks=True)
    layout = RepoLayout.at(dest)
    envs = [environments.get(layout, env) for env in ENVS]
    Renderer(layout, PinnedTools(layout), layout.rendered_dir, use_cache=False).render(envs)
    return layout


@pytest.fixture
def rendered(tmp_path: Path, rendered_template: RepoLayout) -> RepoLayout:
    """A private copy of the rendered project, free to edit."""
    dest = tmp_path / "repo"
    shutil.copytree(rendered_template.root, dest, symlinks=True)
    return RepoLayout.at(dest)


@pytest.fixture(scope="module")
def cluster_policy(rendered_template: RepoLayout) -> dict[str, Any]:
    docs = load_documents((rendered_template.rendered_dir / "dev" / "gpu-operator.yaml").read_text())
    return next(doc for doc in docs if doc["kind"] == "ClusterPolicy")


@pytest.fixture(scope="module")
def chart_crds(rendered_template: RepoLayout) -> validation.CrdIndex:
    return validation.crd_schemas(rendered_template)


# --- built-in kinds -----------------------------------------------------------------------


def test_valid_deployment_passes() -> None:
    assert validate_documents([deployment(imagePullPolicy="IfNotPresent")], "1.31", {}) == []


def test_unknown_field_is_an_error_naming_field_and_resource() -> None:
    findings = validate_documents([deployment(imagePullPolicyy="Always")], "1.31", {}, source="rendered/dev/web.yaml")
    assert findings == [
        Diagnostic(
            "rendered/dev/web.yaml",
            None,
            "Deployment/apps/web",
            "error",
            "spec.template.spec.containers[0].imagePullPolicyy: unknown field",
        )
    ]
    shown = format_diagnostic(findings[0])
    assert "imagePullPolicyy" in shown and "Deployment/apps/web" in shown
    # Without strictness, unknown fields are the API server's business (it drops them).
    assert validate_documents([deployment(imagePullPolicyy="Always")], "1.31", {}, strict=False) == []


def test_wrong_types_are_errors() -> None:
    doc = deployment(ports=[{"containerPort": "http"}])
    doc["spec"]["replicas"] = "three"
    assert errors(validate_documents([doc], "1.31", {})) == [
        "spec.replicas: 'three' is not of type integer",
        "spec.template.spec.containers[0].ports[0].containerPort: 'http' is not of type integer",
    ]


def test_documents_without_api_version_kind_or_name_are_errors() -> None:
    findings = validate_documents(
        [{"metadata": {"name": "x"}}, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}], "1.31", {}
    )
    assert errors(findings) == ["document has no apiVersion or kind", "metadata.name: missing"]


def test_normalized_secret_data_passes_but_real_non_base64_data_does_not() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "x"},
        "data": {"generated": NORMALIZED, "ok": "aGVsbG8="},
        "stringData": {"plain": NORMALIZED},
    }
    assert validate_documents([secret], "1.31", {}) == []
    assert secret["data"]["generated"] == NORMALIZED  # the caller's document is untouched
    secret["data"]["broken"] = "not base64!"
    assert errors(validate_documents([secret], "1.31", {})) == ["data.broken: not valid base64"]
    # As the renderer writes them: valid data as digests passes, data that was not base64 still fails.
    digested = digest_secret(secret, keep=(NORMALIZED,))
    assert digested["data"]["ok"].startswith("sha256:")
    assert errors(validate_documents([digested], "1.31", {})) == ["data.broken: not valid base64"]
    del digested["data"]["broken"]
    assert validate_documents([digested], "1.31", {}) == []


def test_schemas_follow_the_kubernetes_version() -> None:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "p"},
        "spec": {"failurePolicy": "Fail", "unknownField": 1},
    }
    # GA in 1.30: 1.29 has no schema for it (a warning); 1.31 validates it.
    [older] = validate_documents([policy], "1.29", {})
    assert older.severity == "warning"
    assert "no schema for admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" in older.message
    assert errors(validate_documents([policy], "1.31", {})) == ["spec.unknownField: unknown field"]


def test_a_custom_group_named_like_a_builtin_is_not_validated_as_the_builtin() -> None:
    doc = {"apiVersion": "apps.example.com/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"x": 1}}
    [finding] = validate_documents([doc], "1.31", {})
    assert finding.severity == "warning"


# --- custom resources -----------------------------------------------------------------------


def test_chart_crds_are_indexed_per_served_version(chart_crds: validation.CrdIndex) -> None:
    assert ("nvidia.com", "v1", "ClusterPolicy") in chart_crds
    assert ("nvidia.com", "v1alpha1", "NVIDIADriver") in chart_crds
    # node-feature-discovery (a gpu-operator subchart): crds/ and a CRD template.
    assert ("nfd.k8s-sigs.io", "v1alpha1", "NodeFeatureRule") in chart_crds
    assert ("topology.node.k8s.io", "v1alpha2", "NodeResourceTopology") in chart_crds
    crd = custom_resource_definition({"type": "object"})
    index = validation.crd_schemas_of([crd])
    assert list(index) == [("example.com", "v1", "Widget")]  # v0 is not served


def test_rendered_cluster_policy_passes_its_crd(
    cluster_policy: dict[str, Any], chart_crds: validation.CrdIndex
) -> None:
    # The chart leaves out spec.operator.defaultRuntime, which the CRD requires but defaults:
    # defaults apply before validation, as in the API server.
    assert "defaultRuntime" not in cluster_policy["spec"]["operator"]
    assert validate_documents([cluster_policy], "1.31", chart_crds) == []


def test_cluster_policy_unknown_field_or_wrong_type_is_an_error(
    cluster_policy: dict[str, Any], chart_crds: validation.CrdIndex
) -> None:
    doc = copy.deepcopy(cluster_policy)
    doc["spec"]["driver"]["enabledd"] = True
    doc["spec"]["toolkit"]["enabled"] = "yes"
    doc["spec"]["operator"]["defaultRuntime"] = "podman"
    doc["sepc"] = {}
    findings = validate_documents([doc], "1.31", chart_crds, source="rendered/dev/gpu-operator.yaml")
    assert {f.key for f in findings} == {"ClusterPolicy//cluster-policy"}
    assert errors(findings) == [
        "sepc: unknown field",
        "spec.driver.enabledd: unknown field",
        "spec.operator.defaultRuntime: 'podman' is not one of ['docker', 'crio', 'containerd']",
        "spec.toolkit.enabled: 'yes' is not of type boolean",
    ]


def test_unknown_custom_resource_is_a_warning(chart_crds: validation.CrdIndex) -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"any": 1}}
    policy_v2 = {"apiVersion": "nvidia.com/v2", "kind": "ClusterPolicy", "metadata": {"name": "p"}, "spec": {}}
    findings = validate_documents([doc, policy_v2], "1.31", chart_crds)
    assert [(f.severity, f.message) for f in findings] == [
        ("warning", "no schema for example.com/v1/Gadget; not validated"),
        ("warning", "no schema for nvidia.com/v2/ClusterPolicy; not validated (the known CRD serves v1)"),
    ]


def test_crd_strictness_follows_the_structural_schema() -> None:
    schema = {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "note": {"type": "string", "nullable": True},
            "mode": {"type": "string", "default": "fast", "enum": ["fast", "slow"]},
            "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "pod": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }
    crds = validation.crd_schemas_of([custom_resource_definition(schema)])

    def check(spec: dict[str, Any]) -> list[str]:
        return errors(validate_documents([widget(spec)], "1.31", crds))

    assert check({"size": 3}) == []
    assert check({"size": "50%"}) == []
    assert check({"size": 1, "labels": {"a": "b"}, "extra": {"anything": {"deep": 1}}, "note": None}) == []
    assert check({"size": 1, "pod": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}}) == []
    assert check({"size": 1, "mode": None}) == []  # a null non-nullable field is pruned, then defaulted
    assert check({"size": 1, "sizee": 2}) == ["spec.sizee: unknown field"]
    assert check({"size": 1.5}) == ["spec.size: 1.5 is not of type integer or string"]
    assert check({"size": 1, "labels": {"a": 1}}) == ["spec.labels.a: 1 is not of type string"]
    assert check({"size": 1, "mode": "medium"}) == ["spec.mode: 'medium' is not one of ['fast', 'slow']"]
    assert check({"size": 1, "ratio": 0}) == ["spec.ratio: 0 is less than or equal to the minimum of 0"]
    assert check({}) == ["spec: 'size' is a required property"]
    # Non-strict: unknown fields are left to the API server's pruning.
    assert errors(validate_documents([widget({"size": 1, "sizee": 2})], "1.31", crds, strict=False)) == []


def test_crds_in_the_render_are_indexed() -> None:
    crd = custom_resource_definition({"type": "object", "properties": {"size": {"type": "integer"}}})
    layout = RepoLayout.at(Path("/nonexistent"))
    crds = validation.crd_schemas(layout, [crd])
    assert errors(validate_documents([widget({"size": "big"})], "1.31", crds)) == [
        "spec.size: 'big' is not of type integer"
    ]


# --- the Kubernetes version -----------------------------------------------------------------


def set_version(layout: RepoLayout, layer: str, value: str) -> None:
    path = layout.environments_dir / layer / "values.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("cluster", {})["kubernetesVersion"] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(data))


def test_kubernetes_version_comes_from_base_values_and_layers_override_it(tmp_path: Path) -> None:
    layout = make_project(tmp_path / "repo", with_git=False)
    assert validation.kubernetes_version(layout) == "1.31"
    assert {env: validation.kubernetes_version(layout, env) for env in ENVS} == dict.fromkeys(ENVS, "1.31")
    set_version(layout, "prod", '"1.30"')
    set_version(layout, "customers/sample-site", '"1.32"')
    assert validation.kubernetes_version(layout) == "1.31"
    assert validation.kubernetes_version(layout, "dev") == "1.31"
    assert validation.kubernetes_version(layout, "prod") == "1.30"
    assert validation.kubernetes_version(layout, "sample-site") == "1.32"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"1.99"', "Kubernetes version 1.99 has no schemas in kubernetes-validate"),
        ('"1.31.2"', "is not MAJOR.MINOR"),
        ('"latest"', "is not MAJOR.MINOR"),
        ("1.30", "quote it"),
    ],
)
def test_an_unsupported_kubernetes_version_is_a_clear_error(tmp_path: Path, value: str, expected: str) -> None:
    layout = make_project(tmp_path / "repo", with_git=False)
    set_version(layout, "dev", value)
    with pytest.raises(ConfigError) as caught:
        validation.kubernetes_version(layout, "dev")
    message = str(caught.value)
    assert expected in message
    assert "environments/dev/values.yaml: cluster.kubernetesVersion" in message
    if "no schemas" in expected:
        assert "supported: 1.25, 1.26," in message and "1.31" in message
    with pytest.raises(ConfigError, match="no schemas"):
        validate_documents([], "1.99", {})


def test_supported_versions_are_major_minor() -> None:
    supported = validation.supported_kubernetes_versions()
    assert "1.31" in supported
    assert all(version.count(".") == 1 for version in supported)


# --- rendered environments ------------------------------------------------------------------


def test_every_rendered_environment_validates_without_errors(rendered_template: RepoLayout) -> None:
    # How long this takes is measured by benchmarks/bench_render.py, never asserted here.
    findings = validation.validate_rendered(rendered_template, ENVS)
    assert [format_diagnostic(f) for f in findings if f.is_error] == []
    assert [format_diagnostic(f) for f in findings] == []  # every custom resource has its CRD, too
    # Nothing named means every environment.
    assert validation.validate_rendered(rendered_template, []) == []


def append_document(layout: RepoLayout, env: str, release: str, doc: dict[str, Any]) -> None:
    path = layout.rendered_dir / env / f"{release}.yaml"
    path.write_text(path.read_text() + dump_documents([doc]))


def test_offline_registry_flags_images_from_elsewhere(rendered: RepoLayout) -> None:
    stray = deployment()
    stray["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/library/busybox:1.36"
    for env in ("dev", "stage", "sample-site"):
        append_document(rendered, env, "astrago", stray)
    findings = validation.validate_rendered(rendered, ["dev", "stage", "sample-site"])
    assert [(f.file, f.key, f.message) for f in findings if f.is_error] == [
        (
            "rendered/stage/astrago.yaml",
            "Deployment/apps/web",
            "image docker.io/library/busybox:1.36 is not pulled from the offline registry 10.61.3.20:30002 "
            "(release astrago)",
        ),
        (
            "rendered/sample-site/astrago.yaml",
            "Deployment/apps/web",
            "image docker.io/library/busybox:1.36 is not pulled from the offline registry 192.168.50.10:30002 "
            "(release astrago)",
        ),
    ]


def test_validation_uses_each_environments_kubernetes_version(rendered: RepoLayout) -> None:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "p"},
        "spec": {"failurePolicy": "Fail"},
    }
    append_document(rendered, "dev", "astrago", policy)
    append_document(rendered, "prod", "astrago", policy)
    set_version(rendered, "dev", '"1.29"')
    findings = validation.validate_rendered(rendered, ["dev", "prod"])
    assert [(f.file, f.severity) for f in findings] == [("rendered/dev/astrago.yaml", "warning")]


def test_a_broken_rendered_document_is_reported_with_its_file(rendered: RepoLayout) -> None:
    append_document(rendered, "prod", "harbor", deployment(imagePullPolicyy="Always"))
    findings = validation.validate_rendered(rendered, ["prod"])
    assert [format_diagnostic(f) for f in findings] == [
        "rendered/prod/harbor.yaml: Deployment/apps/web: spec.template.spec.containers[0].imagePullPolicyy: "
        "unknown field"
    ]


def test_an_environment_that_was_not_rendered_says_how_to_render_it(rendered: RepoLayout) -> None:
    shutil.rmtree(rendered.rendered_dir / "stage")
    with pytest.raises(AstragoError, match=r"not rendered: stage .*run `inv render --env stage`"):
        validation.validate_rendered(rendered, ["dev", "stage"])
    with pytest.raises(AstragoError, match="unknown environment 'nowhere'"):
        validation.validate_rendered(rendered, ["nowhere"])
