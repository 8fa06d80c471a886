"""What the suite prints tells the truth: progress times and advice commands.

Progress lines carry the seconds since the run started; a real `inv charts.add` and
`inv charts.sync` against the mirror must never print more seconds than the run took.

Every command the suite prints as advice (`run \\`inv charts.sync --name harbor\\``) must run:
each one found in the package's strings, in the README and in a real `charts.verify` report is
parsed by invoke's own Program and Parser against the real task collection of `tasks.py`, so an
unknown task or flag, a stray positional word or a missing required argument fails here.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path

import pytest
from invoke.exceptions import ParseError
from invoke.parser import ParserContext
from invoke.program import Program

from astrago_deploy.core.console import ConsoleProgress
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import VersionsLock

from .conftest import PROJECT

INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]
PACKAGE = PROJECT / "src" / "astrago_deploy"
SECONDS = re.compile(r"\((\d+(?:\.\d+)?)s\)")


def inv(root: Path, mirror: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `inv ARGS` on `root` through the mirror; the result and the wall time it took."""
    environ = {k: v for k, v in os.environ.items() if k not in ("CHARTS_MIRROR", "ASTRAGO_ROOT")}
    environ.update({"ASTRAGO_ROOT": str(root), "NO_COLOR": "1", "CHARTS_MIRROR": str(mirror)})
    started = time.monotonic()
    done = subprocess.run([*INV, *args], cwd=root, env=environ, capture_output=True, text=True, timeout=600)
    return done, time.monotonic() - started


# --- progress times ---------------------------------------------------------------------------


def progress_seconds(stderr: str) -> list[tuple[str, float]]:
    return [(line, float(m.group(1))) for line in stderr.splitlines() if (m := SECONDS.search(line))]


def assert_within(stderr: str, wall: float) -> None:
    lines = progress_seconds(stderr)
    assert any(": verified (" in line for line, _ in lines), stderr
    # Shown with one decimal: a line may round up by 0.05 s.
    assert [line for line, seconds in lines if seconds > wall + 0.05] == [], f"the run took {wall:.2f}s"


def test_charts_add_shows_no_progress_time_longer_than_the_run(project: RepoLayout, mirror: Path) -> None:
    """charts.add stages its chart without a `begin`: the clock used to run from 0 (boot time)."""
    # The committed lock has ingress-nginx: add it to a lock without it.
    lock = project.lock_file.read_text()
    project.lock_file.write_text(re.sub(r"(?m)^(  #.*\n)?  ingress-nginx:\n(    .*\n)+", "", lock, count=1))
    assert "ingress-nginx" not in project.lock_file.read_text()
    done, wall = inv(
        project.root, mirror, "charts.add", "ingress-nginx",
        "--repo", "https://kubernetes.github.io/ingress-nginx", "--version", "4.11.3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_within(done.stderr, wall)


def test_charts_sync_shows_no_progress_time_longer_than_the_run(project: RepoLayout, mirror: Path) -> None:
    done, wall = inv(project.root, mirror, "charts.sync")
    assert done.returncode == 0, done.stderr
    assert_within(done.stderr, wall)
    charts = VersionsLock.load(project.lock_file).names()
    assert len(progress_seconds(done.stderr)) == 3 * len(charts)  # downloading, extracting, verified for each


def test_render_shows_no_time_longer_than_the_run(synced_project: RepoLayout, mirror: Path) -> None:
    done, wall = inv(synced_project.root, mirror, "render", "--env", "dev", "--no-cache")
    assert done.returncode == 0, done.stderr
    [seconds] = [float(m.group(1)) for m in re.finditer(r"rendered in (\d+\.\d)s", done.stdout)]
    assert seconds <= wall + 0.05, f"the run took {wall:.2f}s"


def test_a_step_without_begin_is_timed_from_the_display_start() -> None:
    stream = io.StringIO()
    started = time.monotonic()
    with redirect_stderr(stream):
        progress = ConsoleProgress()
        progress.step("demo", "verified")
    wall = time.monotonic() - started
    [(line, seconds)] = progress_seconds(stream.getvalue())
    assert line == f"  demo: verified ({seconds:.1f}s)"
    assert seconds <= wall + 0.05


# --- advice commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class Advice:
    where: str  # file:line
    command: str  # as written, `{placeholders}` unfilled


# A sample value for each placeholder an advice string interpolates (an f-string expression).
# A new placeholder fails the test below until it gets a sample here.
SAMPLES = {
    "chart.name": "harbor",
    "name": "harbor",
    "locked": "nginx",
    "flags": "--env dev --env stage",
    "result.branch": "chart/harbor-1.15.0",
    "env": "dev",
    "env_name": "dev",
    "chart": "harbor",
    "release": "demo",
    "last": "prod",
    "target": "stage",
    "tar.name": "site.tar",
    "PART_SUFFIX": ".part-",
    "path": "/srv/site",
    "stage.name": "stage",
    "head.sha[:12]": "0123456789ab",
}

# Text that names the command that made something ("Added by `inv charts.add ...`", "Generated by
# `inv charts.upgrade`") records provenance, not advice: only its task must exist.
PROVENANCE = re.compile(r"\bby `$")

COMMAND = re.compile(r"(?<![\w/.-])inv (?=[a-z-])[^`)\n;]*")


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _text(node: ast.expr) -> str | None:
    """A string literal's text, with each f-string expression as `{expression}`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
            elif isinstance(part, ast.FormattedValue):
                parts.append("{" + ast.unparse(part.value) + "}")
        return "".join(parts)
    return None


def commands_in(text: str) -> Iterator[tuple[str, bool]]:
    """Each `inv ...` command in text, and whether it is a provenance note."""
    for match in COMMAND.finditer(text):
        command = match.group(0).rstrip(" .,:")
        yield command, bool(PROVENANCE.search(text[: match.start()]))


def package_advice() -> list[tuple[Advice, bool]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Docstrings describe; the parts of an f-string are read with the f-string.
        skip = _docstrings(tree) | {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, ast.expr):
                continue
            text = _text(node)
            if text is None:
                continue
            where = f"{path.relative_to(PROJECT)}:{node.lineno}"
            found.extend((Advice(where, command), provenance) for command, provenance in commands_in(text))
    return found


def readme_advice() -> list[tuple[Advice, bool]]:
    """Commands the README shows, each with whether it must be a whole command: shell blocks and
    the task table's synopses must; inline code in prose may just name a task (`inv render`)."""
    found = []
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    in_block = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        spans = [line] if in_block else re.findall(r"`([^`]*)`", line)
        whole = in_block or line.startswith("| `inv ")
        for span in spans:
            for command, _ in commands_in(span.replace(".venv/bin/inv ", "inv ")):
                found.append((Advice(f"README.md:{number}", command), whole))
    return found


def fill(command: str) -> str:
    def sample(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in SAMPLES:
            raise AssertionError(f"no sample value for {{{expression}}} in {command!r}: add one to SAMPLES")
        return SAMPLES[expression]

    return re.sub(r"\{([^{}]+)\}", sample, command)


def synopsis_to_argv(command: str) -> list[str]:
    """A README synopsis as one concrete command: optional parts taken, `...` repeats dropped,
    `TASK` (any task) as a real one."""
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    return ["charts.verify" if word == "TASK" else word for word in words if word != "..."]


class Tasks:
    """The real task collection of tasks.py, loaded once by invoke's own loader."""

    def __init__(self) -> None:
        program = Program(binary="inv")
        program.create_config()
        program.normalize_argv(["inv", "--search-root", str(PROJECT)])
        program.parse_core_args()
        program.parse_collection()
        self.collection = program.collection

    def parse(self, argv: list[str]) -> list[ParserContext]:
        """argv (starting with `inv`) parsed as `inv` does (core flags, then tasks); raises ParseError."""
        program = Program(binary="inv", namespace=self.collection)
        program.create_config()
        program.normalize_argv(argv)
        program.parse_core_args()
        program.parse_collection()
        program.parse_tasks()
        return list(program.tasks)

    def names(self) -> set[str]:
        return set(self.collection.task_names)


@pytest.fixture(scope="module")
def tasks() -> Tasks:
    return Tasks()


def test_the_parser_rejects_what_invoke_rejects(tasks: Tasks) -> None:
    """The check itself: each kind of bad advice fails it, good advice passes."""
    for bad in (
        "inv charts.sync harbor",  # the reported advice: a positional word invoke takes for a task
        "inv charts.add",  # required arguments missing
        "inv charts.sync --nam harbor",  # an unknown flag
        "inv chart.sync",  # an unknown task
    ):
        with pytest.raises(ParseError):
            tasks.parse(shlex.split(bad))
    [sync] = tasks.parse(shlex.split("inv charts.sync --name harbor"))
    assert (sync.name, sync.args["name"].value) == ("charts.sync", ["harbor"])
    [add] = tasks.parse(synopsis_to_argv("inv charts.add NAME --repo URL --version V [--release R]"))
    assert {k: a.value for k, a in add.args.items() if a.got_value} == {
        "name": "NAME", "repo": "URL", "version": "V", "release": "R",
    }  # fmt: skip


def test_every_advice_command_in_the_package_parses(tasks: Tasks) -> None:
    found = package_advice()
    # The scan finds what it must (the advice charts.verify prints for a missing chart among it).
    assert any(a.command.startswith("inv charts.sync ") and "{chart.name}" in a.command for a, _ in found), found
    failures = []
    for advice, provenance in found:
        argv = shlex.split(fill(advice.command))
        if provenance:
            if argv[1] not in tasks.names():
                failures.append(f"{advice.where}: {advice.command}: no task {argv[1]!r}")
            continue
        try:
            tasks.parse(argv)
        except ParseError as exc:
            failures.append(f"{advice.where}: {advice.command}: {exc}")
    assert failures == []


def test_every_command_in_the_readme_parses(tasks: Tasks) -> None:
    found = readme_advice()
    assert any(a.command.startswith("inv charts.upgrade NAME") and whole for a, whole in found), found
    failures = []
    for advice, whole in found:
        argv = synopsis_to_argv(advice.command)
        if not whole and len(argv) == 2 and argv[1] in tasks.names():
            continue  # prose naming a task (`inv render` runs ...), not a command to copy
        try:
            tasks.parse(argv)
        except ParseError as exc:
            failures.append(f"{advice.where}: {advice.command}: {exc}")
    assert failures == []


def test_the_advice_charts_verify_prints_runs_and_repairs(synced_project: RepoLayout, mirror: Path, tasks: Tasks) -> None:
    """The reported case end to end: verify's advice, copied as printed, is a command that works."""
    root = synced_project.root
    harbor = synced_project.chart_dir("harbor", "1.14.2")
    values = harbor / "values.yaml"
    values.write_text(values.read_text() + "# a hand edit\n")

    done, _ = inv(root, mirror, "charts.verify")
    assert done.returncode == 1
    printed = [command for line in done.stdout.splitlines() for command, _ in commands_in(line)]
    assert printed == ["inv charts.sync --name harbor"], done.stdout
    tasks.parse(shlex.split(printed[0]))

    repaired, _ = inv(root, mirror, *shlex.split(printed[0])[1:])
    assert repaired.returncode == 0, repaired.stderr
    again, _ = inv(root, mirror, "charts.verify")
    assert again.returncode == 0, again.stdout + again.stderr
