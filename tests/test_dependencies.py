"""The runtime dependencies in pyproject.toml are exactly what the package imports.

Every module of `astrago_deploy` is parsed with `ast` (imports inside functions and under
`TYPE_CHECKING` count too); each third-party top-level name is mapped to the distribution that
installs it in this virtualenv. Development tools (nox, pytest, mypy, ...) stay out of the
runtime list and out of the package.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = PROJECT / "src" / "astrago_deploy"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return canonical(match[0])


def imported_top_levels(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, list[str]]:
    """Top-level name -> the modules importing it, for names outside the standard library."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in imported_top_levels(path.read_text(encoding="utf-8")):
            if name not in sys.stdlib_module_names and name != PACKAGE.name and name != "__future__":
                found.setdefault(name, []).append(path.relative_to(PROJECT).as_posix())
    return found


def project_table() -> dict[str, object]:
    table = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert isinstance(table, dict)
    return table


def test_runtime_dependencies_are_exactly_what_the_package_imports() -> None:
    declared = {requirement_name(r) for r in project_table()["dependencies"]}  # type: ignore[union-attr]
    distributions = importlib.metadata.packages_distributions()
    imported: dict[str, list[str]] = {}
    for name, where in third_party_imports().items():
        owners = distributions.get(name)
        assert owners, f"{name} (imported by {where[0]}) is installed by no distribution in this virtualenv"
        for owner in owners:
            imported.setdefault(canonical(owner), []).extend(where)
    assert sorted(set(imported) - declared) == [], "imported but not declared in [project] dependencies"
    assert sorted(declared - set(imported)) == [], "declared in [project] dependencies but never imported"


def test_development_tools_are_not_runtime_dependencies() -> None:
    table = project_table()
    declared = {requirement_name(r) for r in table["dependencies"]}  # type: ignore[union-attr]
    extras = table["optional-dependencies"]
    assert isinstance(extras, dict)
    dev = {requirement_name(r) for r in extras["dev"]}
    assert {"nox", "pytest", "mypy", "ruff"} <= dev
    assert declared & dev == set()
    assert "nox" not in third_party_imports()


def test_the_import_scan_sees_nested_and_type_checking_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import jsonschema.validators\n"
        "def f() -> None:\n    from git import Repo\n"
        "from .local import thing\n"
    )
    assert imported_top_levels(source) == {"__future__", "typing", "jsonschema", "git"}
