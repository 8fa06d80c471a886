"""The patch checker asks the pinned kustomize (`kubectl kustomize`) what each patch does.

Small kustomizations over a few hand-written resources, built by the real pinned kubectl: no
chart, no helm. Where the expected answer is kustomize's own choice (which resources a
selector picks), the test also builds the patches the way the post-renderer does and checks
that the checker agrees with what that build changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from astrago_deploy.core.errors import ConfigError
from astrago_deploy.patches import kustomize as patching
from astrago_deploy.render.manifests import load_documents
from astrago_deploy.toolchain.environment import tool_environ

from .conftest import PROJECT

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web, tier: front}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  namespace: demo
  labels: {app: worker}
spec:
  replicas: 1
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers: [{name: worker, image: "busybox:1.36"}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  ports: [{port: 80}]
  selector: {app: web}
"""

ANNOTATE = "- op: add\n  path: /metadata/annotations\n  value: {checked: \"yes\"}\n"


@pytest.fixture
def kustomizer() -> patching.Kustomizer:
    return patching.Kustomizer(PROJECT / ".tools" / "bin" / "kubectl", tool_environ(os.environ))


@pytest.fixture
def patches_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "repo" / "patches"
    (folder / "demo").mkdir(parents=True)
    return folder


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def check(patches_dir: Path, kustomizer: patching.Kustomizer, manifests: str = MANIFESTS) -> list[patching.PatchStatus]:
    return patching.check(patches_dir, "demo", "dev", manifests, kustomizer)


def changed_by_post_renderer(patches_dir: Path, kustomizer: patching.Kustomizer) -> set[str]:
    """Kind/name of every resource the post-renderer's build changes."""
    def by_id(text: str) -> dict[str, object]:
        return {f"{d['kind']}/{d['metadata']['name']}": d for d in load_documents(text)}

    before, after = by_id(MANIFESTS), by_id(patching.apply(patches_dir, "demo", "dev", MANIFESTS, kustomizer))
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


TWO_RESOURCES = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: 3
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
  annotations: {team: platform}
"""


@pytest.mark.parametrize("listing", ["patches:\n  - path: two.yaml\n", "patchesStrategicMerge:\n  - two.yaml\n"])
def test_a_multi_document_strategic_merge_patch_is_applied(
    patches_dir: Path, kustomizer: patching.Kustomizer, listing: str
) -> None:
    write(patches_dir / "demo", {"kustomization.yaml": listing, "two.yaml": TWO_RESOURCES})
    [status] = check(patches_dir, kustomizer)
    assert (status.patch, status.status, status.reason) == ("patches/demo/two.yaml", "applied", "changes 2 resource(s)")
    assert status.target == "Deployment/demo/web, Service/demo/web"
    assert changed_by_post_renderer(patches_dir, kustomizer) == {"Deployment/web", "Service/web"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        # A missing label is "not equal" to any value, also to the word None.
        ("tier!=front", {"Deployment/worker"}),
        ("tier!=None", {"Deployment/web", "Deployment/worker"}),
        ("tier!=front,app", {"Deployment/worker"}),
        ("!tier", {"Deployment/worker"}),
        ("tier notin (back)", {"Deployment/web", "Deployment/worker"}),
        # ...and never equal to one.
        ("tier=None", set()),
        ("tier in (None)", set()),
    ],
)
def test_label_selectors_select_what_kustomize_selects(
    patches_dir: Path, kustomizer: patching.Kustomizer, selector: str, selected: set[str]
) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": f"patches:\n  - path: annotate.yaml\n    target: {{kind: Deployment, labelSelector: '{selector}'}}\n",
        "annotate.yaml": ANNOTATE,
    })
    [status] = check(patches_dir, kustomizer)
    assert changed_by_post_renderer(patches_dir, kustomizer) == selected
    if selected:
        assert (status.status, status.reason) == ("applied", f"changes {len(selected)} resource(s)")
    else:
        assert status.status == "stale"
        assert "its target is not in the rendered release" in status.reason
    assert status.target == f"Deployment/* [{selector}]"


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("web-(x", "error parsing regexp: missing closing )"),
        ("(?=w)web", "invalid or unsupported Perl syntax"),  # fine for Python's re, not for Go's
        ("web[", "error parsing regexp: missing closing ]"),
    ],
)
def test_a_bad_regex_in_target_is_one_line_naming_the_patch(
    patches_dir: Path, kustomizer: patching.Kustomizer, name: str, complaint: str
) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": f"patches:\n  - path: annotate.yaml\n    target: {{kind: Deployment, name: '{name}'}}\n",
        "annotate.yaml": ANNOTATE,
    })
    [status] = check(patches_dir, kustomizer)
    assert (status.patch, status.status) == ("patches/demo/annotate.yaml", "failed")
    assert complaint in status.reason and "\n" not in status.reason
    # The post-renderer's error is one line too, naming the kustomization.
    with pytest.raises(ConfigError) as raised:
        patching.apply(patches_dir, "demo", "dev", MANIFESTS, kustomizer)
    assert "\n" not in str(raised.value) and complaint in str(raised.value)
    assert str(raised.value).startswith(f"{patches_dir / 'demo' / 'kustomization.yaml'}: kustomize: ")


def test_a_regex_only_go_understands_is_kustomize_s_to_judge(patches_dir: Path, kustomizer: patching.Kustomizer) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": "patches:\n  - path: annotate.yaml\n    target: {name: '[[:alpha:]]+', kind: Deployment}\n",
        "annotate.yaml": ANNOTATE,
    })
    [status] = check(patches_dir, kustomizer)
    assert (status.status, status.reason) == ("applied", "changes 2 resource(s)")


def test_an_invalid_label_selector_is_failed_not_stale(patches_dir: Path, kustomizer: patching.Kustomizer) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": "patches:\n  - path: annotate.yaml\n    target: {labelSelector: 'app in (web'}\n",
        "annotate.yaml": ANNOTATE,
    })
    [status] = check(patches_dir, kustomizer)
    assert status.status == "failed"
    assert status.reason.startswith("unable to parse requirement")


def test_stale_and_failed_patches_are_told_apart(patches_dir: Path, kustomizer: patching.Kustomizer) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": (
            "patches:\n"
            "  - path: annotate.yaml\n    target: {kind: Deployment, name: api}\n"  # selects nothing
            "  - path: same-replicas.yaml\n"  # names a resource, changes nothing
            "  - path: test-only.yaml\n    target: {kind: Deployment, name: web}\n"  # a JSON test that holds
            "  - path: failing-test.yaml\n    target: {kind: Deployment, name: web}\n"
            "  - path: gone.yaml\n"  # names a resource that is not rendered
            "  - path: missing-file.yaml\n"
        ),
        "annotate.yaml": ANNOTATE,
        "same-replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo}\n"
                              "spec: {replicas: 1}\n",
        "test-only.yaml": "- {op: test, path: /spec/replicas, value: 1}\n",
        "failing-test.yaml": "- {op: test, path: /spec/replicas, value: 2}\n- {op: replace, path: /spec/replicas, value: 3}\n",
        "gone.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: demo}\nspec: {replicas: 2}\n",
    })
    results = {r.patch.removeprefix("patches/demo/"): r for r in check(patches_dir, kustomizer)}
    assert {name: r.status for name, r in results.items()} == {
        "annotate.yaml": "stale",
        "same-replicas.yaml": "stale",
        "test-only.yaml": "stale",
        "failing-test.yaml": "failed",
        "gone.yaml": "failed",
        "missing-file.yaml": "failed",
    }
    assert results["annotate.yaml"].reason.startswith("its target is not in the rendered release")
    assert results["same-replicas.yaml"].reason == "matches 1 resource(s) but changes nothing (already upstream?)"
    assert results["test-only.yaml"].reason == "matches 1 resource(s) but changes nothing (already upstream?)"
    assert "testing value /spec/replicas failed" in results["failing-test.yaml"].reason
    assert results["gone.yaml"].reason.startswith("no resource matches strategic merge patch \"Deployment.v1.apps/api.demo\"")
    # Kustomize ran on a temporary copy; the message names the real folder.
    assert str(patches_dir / "demo" / "missing-file.yaml") in results["missing-file.yaml"].reason
    assert "astrago-kustomize-" not in results["missing-file.yaml"].reason
    assert all("\n" not in r.reason for r in results.values())


def test_patches_fine_alone_but_failing_together_are_reported(patches_dir: Path, kustomizer: patching.Kustomizer) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": (
            "patches:\n"
            "  - path: drop-tier.yaml\n    target: {kind: Deployment, name: web}\n"
            "  - path: move-tier.yaml\n    target: {kind: Deployment, name: web}\n"
        ),
        "drop-tier.yaml": "- {op: remove, path: /metadata/labels/tier}\n",
        "move-tier.yaml": "- {op: test, path: /metadata/labels/tier, value: front}\n"
                          "- {op: replace, path: /metadata/labels/tier, value: back}\n",
    })
    results = check(patches_dir, kustomizer)
    assert [(r.patch, r.status) for r in results] == [
        ("patches/demo/drop-tier.yaml", "applied"),
        ("patches/demo/move-tier.yaml", "applied"),
        ("patches/demo/kustomization.yaml", "failed"),
    ]
    assert results[-1].reason.startswith("its patches fail together: ")


def test_an_environment_layer_is_checked_on_top_of_the_release_wide_one(
    patches_dir: Path, kustomizer: patching.Kustomizer
) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": "patches:\n  - path: label.yaml\n    target: {kind: Service}\n",
        "label.yaml": "- {op: add, path: /metadata/labels/exposed, value: \"true\"}\n",
        # Selects what only the release-wide layer's patch makes selectable.
        "dev/kustomization.yaml": "patches:\n  - path: annotate.yaml\n    target: {labelSelector: exposed=true}\n",
        "dev/annotate.yaml": ANNOTATE,
    })
    results = check(patches_dir, kustomizer)
    assert [(r.patch, r.status, r.reason) for r in results] == [
        ("patches/demo/label.yaml", "applied", "changes 1 resource(s)"),
        ("patches/demo/dev/annotate.yaml", "applied", "changes 1 resource(s)"),
    ]


def test_a_release_that_renders_nothing_has_only_stale_patches(
    patches_dir: Path, kustomizer: patching.Kustomizer
) -> None:
    write(patches_dir / "demo", {"kustomization.yaml": "patches:\n  - path: two.yaml\n", "two.yaml": TWO_RESOURCES})
    [status] = check(patches_dir, kustomizer, manifests="")
    assert (status.status, status.reason) == ("stale", "demo renders nothing in dev")


def test_an_unreadable_patch_is_named_with_its_line(patches_dir: Path, kustomizer: patching.Kustomizer) -> None:
    write(patches_dir / "demo", {
        "kustomization.yaml": "patches:\n  - path: broken.yaml\n",
        "broken.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: [\n",
    })
    [status] = check(patches_dir, kustomizer)
    assert status.status == "failed"
    assert status.reason.startswith("patches/demo/broken.yaml:") and "not valid YAML" in status.reason
    assert "\n" not in status.reason


def test_an_unreadable_kustomization_is_named_relative_to_the_checkout(
    patches_dir: Path, kustomizer: patching.Kustomizer
) -> None:
    write(patches_dir / "demo", {"kustomization.yaml": "patches: [\n"})
    [status] = check(patches_dir, kustomizer)
    assert (status.patch, status.status) == ("patches/demo/kustomization.yaml", "failed")
    assert status.reason.startswith("patches/demo/kustomization.yaml:2:1: not valid YAML: ")
    assert str(patches_dir) not in status.reason and "\n" not in status.reason
