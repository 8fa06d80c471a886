"""nox -s lint's repository checks: overrides against chart defaults, plaintext secrets, yamllint."""

from __future__ import annotations

from pathlib import Path

import pytest

from astrago_deploy.core.diagnostics import format_diagnostic
from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.lint import checks
from astrago_deploy.lint import secrets as secret_scan
from astrago_deploy.lint.overrides import check_overrides


def problems(layout: RepoLayout) -> list[str]:
    return [format_diagnostic(p) for p in check_overrides(layout)]


def append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)


def test_committed_repository_passes_every_lint_check(synced_project: RepoLayout) -> None:
    lines: list[str] = []
    checks.run_lint(lines.append, [], synced_project)
    assert lines == ["yamllint: ok", "helm lint: ok", "charts.verify: ok", "value overrides: ok", "plaintext secrets: ok",
                     "generated values: ok"]


def test_gpu_operator_wrapped_block_is_flagged_with_file_line_and_key(synced_project: RepoLayout) -> None:
    target = synced_project.environments_dir / "prod" / "releases" / "gpu-operator.yaml"
    lines_before = len(target.read_text().splitlines())
    append(target, "gpu-operator:\n  driver:\n    enabled: false\n")
    assert problems(synced_project) == [
        f"environments/prod/releases/gpu-operator.yaml:{lines_before + 1}: gpu-operator: not a value of chart "
        "gpu-operator (release gpu-operator); values of release gpu-operator are already at chart gpu-operator's "
        "top level (fix: remove the 'gpu-operator:' wrapper)"
    ]
    output: list[str] = []
    with pytest.raises(AstragoError, match="lint failed: value overrides"):
        checks.run_lint(output.append, [], synced_project)
    assert any("environments/prod/releases/gpu-operator.yaml" in line and "gpu-operator:" in line for line in output)


def test_gpu_operator_block_in_environment_settings_is_flagged(synced_project: RepoLayout) -> None:
    target = synced_project.environments_dir / "dev" / "values.yaml"
    append(target, "gpu-operator:\n  driver:\n    enabled: false\n")
    [problem] = problems(synced_project)
    assert problem.startswith("environments/dev/values.yaml:")
    assert "gpu-operator: not an environment setting" in problem
    assert "go in environments/dev/releases/gpu-operator.yaml" in problem


def test_typos_wrong_nesting_and_subchart_keys(synced_project: RepoLayout) -> None:
    (synced_project.environments_dir / "stage" / "releases").mkdir(parents=True, exist_ok=True)
    (synced_project.environments_dir / "stage" / "releases" / "gpu-operator.yaml").write_text(
        "driverr:\n  enabled: true\n"            # typo at the top level
        "devicePlugin:\n  config:\n    bogus: 1\n"  # typo deeper down
        "node-feature-discovery:\n  worker:\n    tolerations: []\n    nope: 1\n"  # subchart defaults
        "daemonsets:\n  labels:\n    team: gpu\n"  # free-form map: anything goes
        "operator:\n  upgradeCRD:\n    nested: true\n"  # scalar in the chart, mapping here
    )
    (synced_project.environments_dir / "stage" / "releases" / "astrago.yaml").write_text(
        "core:\n  replicaCount: 2\n  replicas: 3\n"  # schema-checked custom chart
    )
    (synced_project.environments_dir / "stage" / "releases" / "nginx.yaml").write_text("a: 1\n")
    assert problems(synced_project) == [
        "environments/stage/releases/astrago.yaml:3: core.replicas: not a value of chart astrago (release astrago)",
        "environments/stage/releases/gpu-operator.yaml:1: driverr: not a value of chart gpu-operator (release gpu-operator)",
        "environments/stage/releases/gpu-operator.yaml:5: devicePlugin.config.bogus: not a value of chart gpu-operator (release gpu-operator)",
        "environments/stage/releases/gpu-operator.yaml:9: node-feature-discovery.worker.nope: not a value of chart gpu-operator (release gpu-operator)",
        "environments/stage/releases/gpu-operator.yaml:14: operator.upgradeCRD: chart gpu-operator has a bool here, not a mapping (wrong nesting?)",
        "environments/stage/releases/nginx.yaml:1: nginx: there is no release 'nginx'; this file does nothing",
    ]


def test_settings_checks_release_toggles_and_duplicate_keys(synced_project: RepoLayout) -> None:
    append(synced_project.customers_dir / "sample-site" / "values.yaml",
           "releases:\n  harbor: {enabled: false, replicas: 2}\n  nothere: {enabled: true}\n")
    (synced_project.environments_dir / "dev" / "releases" / "harbor.yaml").write_text("expose:\n  type: x\nexpose:\n  type: y\n")
    found = problems(synced_project)
    assert any(p.startswith("environments/customers/sample-site/values.yaml:") and "releases.harbor.replicas: release toggles take only 'enabled'" in p for p in found)
    assert any("releases.nothere: there is no release 'nothere'" in p for p in found)
    assert any(p.startswith("environments/dev/releases/harbor.yaml:3:1: not valid YAML: found duplicate key") for p in found)


def test_plaintext_harbor_admin_password_fails_lint(synced_project: RepoLayout) -> None:
    target = synced_project.environments_dir / "dev" / "releases" / "harbor.yaml"
    target.write_text("harborAdminPassword: Harbor12345\n")
    [finding] = secret_scan.scan(synced_project)
    assert format_diagnostic(finding).startswith(
        "environments/dev/releases/harbor.yaml:1: harborAdminPassword: holds a plaintext credential"
    )
    with pytest.raises(AstragoError, match="plaintext secrets"):
        checks.run_lint(lambda _line: None, [], synced_project)


def test_secret_scan_covers_the_helmfile_and_its_release_templates(project: RepoLayout) -> None:
    append(project.helmfile_dir / "releases" / "security.yaml.gotmpl", "  values:\n  - adminPassword: s3cret\n")
    append(project.helmfile_dir / "helmfile.yaml.gotmpl", "# apiToken: commented out\n")
    [finding] = secret_scan.scan(project)
    assert format_diagnostic(finding).startswith("helmfile/releases/security.yaml.gotmpl:")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param("password: hunter2\n", [(1, "password")], id="plain"),
        pytest.param("a: 1\n  # x\nb:\n  clientSecret: 'abc'\n", [(4, "clientSecret")], id="nested-quoted-value"),
        pytest.param("apiToken: xyz # rotated\n", [(1, "apiToken")], id="trailing-comment"),
        pytest.param("tls.key: -----BEGIN RSA PRIVATE KEY-----\n", [(1, "private key")], id="pem"),
        pytest.param("tls:\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIIE\n", [(2, "private key")], id="pem-block"),
        pytest.param("database: {internal: {password: hunter2}}\n", [(1, "password")], id="flow-mapping"),
        pytest.param('"harborAdminPassword": "hunter2"\n', [(1, "harborAdminPassword")], id="quoted-key"),
        pytest.param("? password\n: hunter2\n", [(1, "password")], id="explicit-key"),
        pytest.param("db:\n  password: |\n    hunter2\n", [(2, "password")], id="block-scalar"),
        pytest.param("db:\n  password: >-\n    hunter2\n", [(2, "password")], id="folded-scalar"),
        pytest.param(
            "env:\n  - name: DB_PASSWORD\n    value: hunter2\n  - name: LOG_LEVEL\n    value: debug\n",
            [(3, "DB_PASSWORD")],
            id="env-list",
        ),
        pytest.param("env: [{name: API_TOKEN, value: abc}]\n", [(1, "API_TOKEN")], id="env-flow"),
        pytest.param(
            "env:\n  - name: DB_PASSWORD\n    valueFrom: {secretKeyRef: {name: db, key: password}}\n", [], id="env-ref"
        ),
        pytest.param("env:\n  - name: DB_PASSWORD_FILE\n    value: /run/secrets/db\n", [], id="env-file"),
        pytest.param("common: &pw hunter2\nharbor:\n  adminPassword: *pw\n", [(3, "adminPassword")], id="alias"),
        pytest.param(
            "base: &db {password: hunter2}\nprod:\n  <<: *db\nstage: *db\n", [(1, "password")], id="anchored-mapping"
        ),
        pytest.param("a: &a [*a, {password: x}]\n", [(1, "password")], id="recursive-alias"),
        pytest.param("a: 1\n---\nsecret: s3\n", [(3, "secret")], id="second-document"),
        pytest.param("password: 12345\n", [(1, "password")], id="numeric"),
        pytest.param("existingSecretAdminPassword: harbor-admin\n", [], id="existing-reference"),
        pytest.param("passwordKey: password\n", [], id="key-reference"),
        pytest.param('password: ""\n', [], id="empty"),
        pytest.param("password:\n", [], id="no-value"),
        pytest.param("password: ~\ntoken: null\n", [], id="null"),
        pytest.param("usePassword: false\n", [], id="boolean"),
        pytest.param("password: |\n\n", [], id="empty-block"),
        pytest.param("token: '{{ .Values.token }}'\n", [], id="template-expression"),
        pytest.param("resetPasswordAllowed: true\naccessTokenLifespan: 300\n", [], id="not-credential-names"),
        pytest.param("# password: commented\n", [], id="comment"),
    ],
)
def test_secret_scan_reads_every_way_of_writing_a_value(tmp_path: Path, text: str, found: list[tuple[int, str]]) -> None:
    findings = secret_scan.scan_text(tmp_path / "v.yaml", text)
    assert [(f.line, f.key) for f in findings] == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param("- name: x\n  values:\n  - adminPassword: s3cret\n", [(3, "adminPassword")], id="literal"),
        pytest.param("kubeContext: {{ .Values.cluster.kubeContext | quote }}\npassword: {{ .Values.pw }}\n", [], id="action"),
        pytest.param("{{- if .Values.x }}\ntoken: abc\n{{- end }}\n", [(2, "token")], id="inside-if"),
        pytest.param(
            "{{- /*\na comment: with } and }} inside\n*/ -}}\nenv:\n{{- range $e := .Values.envs }}\n"
            "  {{ $e }}:\n    secret: {{ $e }}-x\n{{- end }}\n  other:\n    secret: plain\n{{ $out | toYaml }}\n",
            [(10, "secret")],
            id="comment-range-and-lone-action",
        ),
        pytest.param("values:\n  - values/{{`{{ .Release.Name }}`}}.yaml\ntoken: t\n", [(3, "token")], id="raw-string"),
    ],
)
def test_secret_scan_reads_templates_with_their_actions_as_placeholders(
    tmp_path: Path, text: str, found: list[tuple[int, str]]
) -> None:
    findings = secret_scan.scan_text(tmp_path / "release.yaml.gotmpl", text)
    assert [(f.line, f.key) for f in findings] == found


def test_secret_scan_reports_a_file_it_cannot_read_instead_of_passing_it(tmp_path: Path) -> None:
    [finding] = secret_scan.scan_text(tmp_path / "v.yaml", "a: 1\npassword: [hunter2\n")
    assert format_diagnostic(finding) == (
        f"{tmp_path / 'v.yaml'}:3:1: not valid YAML: did not find expected ',' or ']' (while parsing a flow sequence) "
        "(fix: correct the YAML there; the file was not checked for secrets)"
    )


def test_yamllint_reports_file_and_line(synced_project: RepoLayout) -> None:
    append(synced_project.environments_dir / "stage" / "values.yaml", "bad:   [1,2]   \n")
    found = [format_diagnostic(p) for p in checks.yamllint_problems(synced_project)]
    assert found and all(p.startswith("environments/stage/values.yaml:") for p in found)
    line = len((synced_project.environments_dir / "stage" / "values.yaml").read_text().splitlines())
    assert f"environments/stage/values.yaml:{line}: trailing-spaces: trailing spaces (column 13)" in found
