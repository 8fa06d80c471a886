"""Repository checks behind `nox -s lint`: each returns Diagnostics, `run_lint` raises if any.

yamllint over our own YAML, `helm lint --strict` of every custom chart, charts.verify, the
override check (value keys that do not exist in the target chart), the plaintext-secret
check and the determinism check (no release generates a value at render time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from yamllint import linter
from yamllint.config import YamlLintConfig

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import files
from astrago_deploy.core.command import Timeouts
from astrago_deploy.core.diagnostics import Diagnostic, format_diagnostic, shown_path
from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.lint import secrets as secret_scan
from astrago_deploy.lint.determinism import check_generated
from astrago_deploy.lint.overrides import check_overrides
from astrago_deploy.toolchain.pinned import PinnedTools

YAMLLINT_CONFIG = """
extends: default
rules:
  line-length: {max: 160}
  document-start: disable
  truthy: {check-keys: false}
  comments: {min-spaces-from-content: 1}
  indentation: {spaces: 2, indent-sequences: consistent}
"""


def repository_yaml(layout: RepoLayout) -> list[Path]:
    """Our own plain YAML files (templates and vendored charts excluded)."""
    roots = [layout.environments_dir, layout.patches_dir, layout.root / ".github"]
    files = [layout.lock_file, layout.toolchain_manifest]
    for root in roots:
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for chart in sorted(layout.custom_dir.glob("*/")):
        files += [p for p in (chart / "values.yaml", chart / "Chart.yaml") if p.is_file()]
    return [f for f in files if f.is_file()]


def yamllint_problems(layout: RepoLayout) -> list[Diagnostic]:
    config = YamlLintConfig(YAMLLINT_CONFIG)
    problems = []
    for path in repository_yaml(layout):
        shown = shown_path(path, layout.root)
        for problem in linter.run(files.read_text(path), config, str(path)):
            # Every yamllint finding fails the lint, whatever level yamllint gives it.
            message = f"{problem.desc} (column {problem.column})"
            problems.append(Diagnostic(shown, problem.line, str(problem.rule or "syntax"), "error", message))
    return problems


def helm_lint_problems(layout: RepoLayout) -> list[Diagnostic]:
    tools = PinnedTools(layout)
    problems = []
    for chart in sorted(p for p in layout.custom_dir.iterdir() if (p / "Chart.yaml").is_file()):
        command = tools.command("helm", ["lint", "--strict", str(chart)], timeout=Timeouts.HELM)
        result = dataclasses.replace(command, ok_codes=frozenset({0, 1})).run()
        if result.returncode != 0:
            detail = [line.strip() for line in result.stdout.splitlines() if "[ERROR]" in line or "[WARNING]" in line]
            shown = shown_path(chart, layout.root)
            problems += [Diagnostic(shown, None, "helm lint --strict", "error", line) for line in detail or ["failed"]]
    return problems


def verify_problems(layout: RepoLayout) -> list[Diagnostic]:
    return ChartVendor(layout, Fetcher()).verify()


def override_problems(layout: RepoLayout) -> list[Diagnostic]:
    return check_overrides(layout)


def secret_problems(layout: RepoLayout) -> list[Diagnostic]:
    return secret_scan.scan(layout)


def generated_value_problems(layout: RepoLayout) -> list[Diagnostic]:
    return check_generated(layout)


def run_lint(log: Callable[[str], object], _args: Sequence[str], layout: RepoLayout | None = None) -> None:
    layout = layout or RepoLayout.at(Path.cwd())
    failed = []
    checks = (
        ("yamllint", yamllint_problems),
        ("helm lint", helm_lint_problems),
        ("charts.verify", verify_problems),
        ("value overrides", override_problems),
        ("plaintext secrets", secret_problems),
        ("generated values", generated_value_problems),
    )
    # helm lint, the override check and the renders read charts/external: no sync may swap a tree meanwhile.
    with charts_lock(layout).shared("lint"):
        for title, check in checks:
            problems = check(layout)
            log(f"{title}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                log(f"  {format_diagnostic(problem)}")
            if problems:
                failed.append(title)
    if failed:
        raise AstragoError(f"lint failed: {', '.join(failed)}")
