"""The package's shape: grouped by concern, imports running one way, no reaching into privates.

Every module of `astrago_deploy` is parsed with `ast` (nothing is imported), so the rules hold
for imports inside functions and under `TYPE_CHECKING` too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "astrago_deploy"
ROOT = PACKAGE.name
# Lower layers never import higher ones; a layer imports only from layers below it.
# `cli` is the error boundary and repository lookup the task wiring uses (it needs only core).
LAYERS: list[set[str]] = [
    {"core"},
    {"toolchain"},
    {"model", "registry"},
    {"charts"},
    {"render"},
    {"images"},
    {"patches", "validate"},
    {"lint", "upgrade", "deploy", "promote", "bundle"},
    {"cli"},
    {"tasks"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


@dataclass(frozen=True)
class Import:
    module: str  # dotted name of the importing module
    line: int
    target: str  # dotted name imported (a module, or a module's attribute)

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(dotted: str) -> str:
    """The top-level unit of the package a dotted name belongs to (`render`, `cli`, ...)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> list[Import]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> list[Import]:
    """The package-internal imports of `module`'s source, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [Import(module, node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [i for i in found if i.target == ROOT or i.target.startswith(f"{ROOT}.")]


MODULES = sorted(PACKAGE.rglob("*.py"))
IMPORTS = [i for path in MODULES for i in imports_of(path)]
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def unit_graph(imports: list[Import] = IMPORTS) -> dict[str, dict[str, list[Import]]]:
    """unit -> units it imports -> the imports that make the edge (the package root excluded)."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        source, target = unit_of(imp.module), unit_of(imp.target)
        if source and target and source != target and not target.startswith("__"):
            graph.setdefault(source, {}).setdefault(target, []).append(imp)
    return graph


def test_the_top_level_holds_only_init_the_cli_and_subpackages() -> None:
    files = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert files == ["__init__.py", "cli.py"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == SUBPACKAGES, "every folder of the package is a subpackage"


def test_every_subpackage_has_a_place_in_the_layers_and_says_what_it_owns() -> None:
    assert set(SUBPACKAGES) | {"cli"} == set(RANK)
    for name in SUBPACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 5, f"{name}/__init__.py needs a docstring saying what it owns"


def test_core_imports_no_other_subpackage() -> None:
    graph = unit_graph()
    assert {target: [i.where for i in imps] for target, imps in graph.get("core", {}).items()} == {}


def test_no_import_cycle_between_subpackages() -> None:
    graph = unit_graph()
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for target in sorted(graph.get(unit, {})):
            if state.get(target) == "open":
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])


def upward_imports(imports: list[Import]) -> list[str]:
    return [
        imp.where
        for source, targets in unit_graph(imports).items()
        for target, imps in targets.items()
        for imp in imps
        if RANK[target] >= RANK[source]
    ]


def test_imports_run_down_the_layers() -> None:
    assert upward_imports(IMPORTS) == []


def private_reaches(imports: list[Import]) -> list[str]:
    """Imports of a `_private` module or name that lives in another unit of the package."""
    return [
        imp.where
        for imp in imports
        if unit_of(imp.target) != unit_of(imp.module)
        and any(part.startswith("_") and not part.startswith("__") for part in imp.target.split(".")[1:])
    ]


def test_no_module_imports_another_subpackages_private_module_or_name() -> None:
    assert private_reaches(IMPORTS) == []


def test_the_rules_see_relative_nested_and_private_imports() -> None:
    source = (
        "from .manifests import load_documents\n"
        "from astrago_deploy.render import _helpers\n"
        "def f() -> None:\n"
        "    from ..core import _secret\n"
        "    import astrago_deploy.lint._rules\n"
    )
    found = imports_in(source, f"{ROOT}.render.renderer", is_package=False)
    assert [i.target for i in found] == [
        f"{ROOT}.render.manifests.load_documents",
        f"{ROOT}.render._helpers",
        f"{ROOT}.core._secret",
        f"{ROOT}.lint._rules",
    ]
    assert upward_imports(found) == [f"{ROOT}.render.renderer:5 imports {ROOT}.lint._rules"]
    assert private_reaches(found) == [
        f"{ROOT}.render.renderer:4 imports {ROOT}.core._secret",
        f"{ROOT}.render.renderer:5 imports {ROOT}.lint._rules",
    ]


def test_building_the_task_namespace_loads_no_capability() -> None:
    """`inv` imports every task module to build its namespace; each task imports what it calls
    inside its body, so starting `inv render` loads neither the HTTP stack, GitPython, the
    schema validator nor any capability subpackage (tasks/__init__.py says why)."""
    import subprocess
    import sys

    probe = (
        "import sys; from pathlib import Path; from astrago_deploy.tasks import build_namespace; "
        "build_namespace(Path('.')); print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split())
    heavy = {"requests", "urllib3", "git", "jsonschema", "kubernetes_validate", "ruamel.yaml", "semver"}
    capabilities = {f"{ROOT}.{name}" for layer in LAYERS[1:-2] for name in layer}
    assert not loaded & (heavy | capabilities), sorted(loaded & (heavy | capabilities))
    assert f"{ROOT}.tasks.render" in loaded  # the probe did build the namespace


def test_rendering_loads_neither_the_http_stack_nor_git() -> None:
    """A render runs pinned tools and reads files: loading requests or GitPython for it would
    be start-up paid on every `inv render` (toolchain.pinned imports HTTP only to install)."""
    import subprocess
    import sys

    probe = "import sys, astrago_deploy.render.renderer; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split())
    assert f"{ROOT}.render.renderer" in loaded
    assert not loaded & {"requests", "urllib3", "git"}, sorted(loaded & {"requests", "urllib3", "git"})


def readme_layout_rows() -> list[str]:
    """The units the README's layout table has a row for, in the table's order."""
    readme = (PACKAGE.parent.parent / "README.md").read_text(encoding="utf-8")
    rows = []
    for line in readme.splitlines():
        cell = line.split("|")[1].strip() if line.startswith("| `astrago_deploy/") else ""
        rows += re.findall(r"`astrago_deploy/(\w+)(?:/|\.py)`|`(\w+)/`", cell)
    return [module or folder for module, folder in rows]


def test_the_readme_layout_table_has_a_row_for_each_subpackage_in_layer_order() -> None:
    rows = readme_layout_rows()
    assert sorted(set(rows)) == sorted({*SUBPACKAGES, "cli"}), "one README layout row per subpackage (and cli.py)"
    ranks = [RANK[name] for name in rows]
    assert ranks == sorted(ranks), f"README rows out of layer order: {rows}"
