"""Concurrency over `charts/external` and rendered output: gap-free swaps, the charts lock, kills.

Interleavings are forced, not hoped for: a child process runs the code under test with an
audit hook (`sys.addaudithook`) that stops it before its k-th file-system step (a rename, the
`renameat2` call, a removal) and waits; meanwhile this process looks at the destination and
runs a competing writer, then lets the child go on. Every step is visited in turn, so a moment
without the destination, or a competitor that breaks the swap, is found on every run. Nothing
here waits for a time to pass to prove something did not happen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import atomic
from astrago_deploy.core.digests import tree_digest
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import LockBusyError, charts_lock, holders, wait_seconds
from astrago_deploy.model.lock import VersionsLock

from .conftest import GIT_ENV, PROJECT, snapshot
from .lock_support import charts_lock_held, read_until

INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]

# The audit events of the steps a swap or a sync takes on the file system.
STEPPING = """
import os, signal, sys
STEPS = {"os.rename", "astrago_deploy.renameat2", "shutil.rmtree", "os.rmdir", "os.remove"}
_mode, _at = os.environ["STEP_MODE"], int(os.environ["STEP_AT"])
_seen = []
def _hook(event, args):
    if event not in STEPS:
        return
    _seen.append(event)
    if len(_seen) != _at:
        return
    if _mode == "pause":
        print(f"paused before {event}", flush=True)
        sys.stdin.readline()
    else:
        os.kill(os.getpid(), signal.SIGKILL)
def _count():
    print("steps", *_seen, flush=True)
"""

SWAP = (
    STEPPING
    + """
from pathlib import Path
from astrago_deploy.core import atomic
sys.addaudithook(_hook)
atomic.replace_dir(Path(sys.argv[1]), Path(sys.argv[2]))
_count()
"""
)


def tree(root: Path, label: str) -> Path:
    """A small tree whose every file says which tree it belongs to."""
    for rel in ("Chart.yaml", "values.yaml", "templates/a.yaml", "templates/b.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{label} {rel}\n")
    return root


def contents(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def which_tree(dest: Path, labels: list[str]) -> str:
    """The label of the complete tree at `dest`; fails on a missing, empty or mixed tree."""
    assert dest.is_dir() and not dest.is_symlink(), f"{dest} is missing"
    found = contents(dest)
    for label in labels:
        if found == contents(tree(dest.parent / f"expected-{label}", label)):
            return label
    raise AssertionError(f"{dest} holds neither of {labels} whole: {found}")


def swap_steps(tmp_path: Path) -> int:
    """How many file-system steps one `replace_dir` over an existing destination takes."""
    base = tmp_path / "count"
    base.mkdir()
    dest, staged = tree(base / "dest", "old"), tree(base / "staged", "new")
    done = subprocess.run(
        [sys.executable, "-c", SWAP, str(staged), str(dest)],
        env={**os.environ, "STEP_MODE": "count", "STEP_AT": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    return len(done.stdout.split()) - 1


def test_replace_dir_never_leaves_the_destination_missing_even_with_a_competing_writer(tmp_path: Path) -> None:
    steps = swap_steps(tmp_path)
    assert steps >= 2  # the swap itself and the removal of the old tree, at least
    for step in range(1, steps + 1):
        base = tmp_path / f"step-{step}"
        base.mkdir()
        dest = tree(base / "dest", "old")
        staged = tree(base / "staged", "first")
        child = subprocess.Popen(
            [sys.executable, "-c", SWAP, str(staged), str(dest)],
            env={**os.environ, "STEP_MODE": "pause", "STEP_AT": str(step)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        paused = child.stdout.readline()
        assert paused.startswith("paused before"), child.communicate()[1]

        # Inside the swap, stopped before one of its steps: the destination is a whole tree.
        assert which_tree(dest, ["old", "first"]) in ("old", "first"), paused
        # A second writer (another render of the same environment) replaces it meanwhile.
        atomic.replace_dir(tree(base / "competing", "second"), dest)
        assert which_tree(dest, ["old", "first", "second"]) in ("first", "second"), paused

        _, err = child.communicate("\n", timeout=60)
        assert child.returncode == 0, f"{paused}{err}"
        assert which_tree(dest, ["first", "second"]) in ("first", "second")
        # Nothing but the result is left: the old trees were removed, no staging remains.
        assert sorted(p.name for p in base.iterdir() if not p.name.startswith("expected-")) == ["dest"]


def test_replace_dir_places_a_tree_where_there_was_none_and_refuses_a_missing_source(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    atomic.replace_dir(tree(tmp_path / "staged", "new"), dest)
    assert contents(dest) == contents(tree(tmp_path / "expected", "new"))
    assert not (tmp_path / "staged").exists()

    with pytest.raises(FileNotFoundError):
        atomic.replace_dir(tmp_path / "nothing", dest)
    assert contents(dest) == contents(tree(tmp_path / "expected", "new"))
    with pytest.raises(FileNotFoundError):
        atomic.replace_dir(tree(tmp_path / "staged", "x"), tmp_path / "no-parent" / "dest")
    assert (tmp_path / "staged").is_dir()  # nothing moved


# --- the charts lock in one process ------------------------------------------------------------


def test_the_charts_lock_is_reentrant_in_a_process_and_visible_to_others(tmp_path: Path) -> None:
    layout = RepoLayout.at(tmp_path)
    lock = charts_lock(layout)
    with lock.shared("render"), lock.shared("validate"):
        assert [(h.pid, h.exclusive) for h in holders(layout.charts_lock)] == [(os.getpid(), False)]
        # Upgrading a shared hold in place would let a writer in between: a bug, said loudly.
        with (
            pytest.raises(RuntimeError, match="exclusive lock requested while holding it shared"),
            lock.exclusive("charts.sync"),
        ):
            pass
    assert holders(layout.charts_lock) == []
    with lock.exclusive("charts.sync"), lock.shared("charts.verify"):
        assert [(h.pid, h.exclusive) for h in holders(layout.charts_lock)] == [(os.getpid(), True)]
    assert holders(layout.charts_lock) == []
    assert layout.charts_lock.read_text() == ""  # the writer's note goes with the lock


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_lock_wait_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTRAGO_LOCK_WAIT", value)
    with pytest.raises(InputError) as caught:
        wait_seconds()
    assert str(caught.value) == f"ASTRAGO_LOCK_WAIT={value!r} is not a number of seconds (e.g. ASTRAGO_LOCK_WAIT=600)"


def test_a_writer_names_the_readers_it_waits_for_and_gives_up_in_one_line(tmp_path: Path) -> None:
    layout = RepoLayout.at(tmp_path)
    told: list[str] = []
    with charts_lock_held(tmp_path, "shared", "render") as pid:
        with (
            pytest.raises(LockBusyError) as caught,
            charts_lock(layout).exclusive("charts.sync", wait=0.2, notify=told.append),
        ):
            pass
        # Other readers are let in meanwhile.
        with charts_lock(layout).shared("validate", wait=0):
            pass
        # A note that a killed writer left does not name the holder: the kernel's table does.
        layout.charts_lock.write_text('{"pid": 1, "purpose": "charts.sync"}\n')
        with (
            pytest.raises(LockBusyError, match=f"in use by pid {pid} "),
            charts_lock(layout).exclusive("charts.add", wait=0),
        ):
            pass
    assert told == [f"charts.sync: waiting for pid {pid} reading charts/external to finish..."]
    assert str(caught.value) == (
        f"charts/external is in use by pid {pid} (.cache/charts.lock); gave up after 0.2s: "
        "try again when it ends, or wait longer with ASTRAGO_LOCK_WAIT=SECONDS"
    )


# --- readers of charts/external, as a user runs them --------------------------------------------


def task_env(root: Path, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CHARTS_MIRROR", "ASTRAGO_ROOT", "ASTRAGO_LOCK_WAIT")}
    return {**environ, **GIT_ENV, "ASTRAGO_ROOT": str(root), "NO_COLOR": "1", **extra}


def run_task(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*INV, *args], cwd=root, env=task_env(root, **extra), capture_output=True, text=True, timeout=300
    )


def test_render_waits_for_a_running_sync_says_so_and_then_renders(synced_project: RepoLayout) -> None:
    root = synced_project.root
    with charts_lock_held(root, "exclusive", "charts.sync") as pid:
        render = subprocess.Popen(
            [*INV, "render", "--env", "dev"], cwd=root, env=task_env(root), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        said = read_until(render.stderr, "waiting for")
        assert said.splitlines()[-1] == f"render: waiting for charts.sync (pid {pid}) to finish..."
        # Blocked on the lock, it has not started: nothing is rendered yet.
        assert not synced_project.rendered_dir.exists()
    out, err = render.communicate(timeout=300)

    assert render.returncode == 0, err
    assert out.startswith("dev ")
    assert (synced_project.rendered_dir / "dev" / "harbor.yaml").is_file()


READERS = {
    "render": ["render", "--env", "dev"],
    "validate": ["validate", "--env", "dev"],
    "diff": ["diff", "--base", "HEAD", "--env", "dev"],
    "deploy": ["deploy", "--env", "dev", "--dry-run"],
    "destroy": ["destroy", "--env", "dev", "--dry-run"],
    "charts.verify": ["charts.verify"],
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_of_the_charts_gives_up_on_a_sync_in_one_line_and_changes_nothing(
    synced_project: RepoLayout, reader: str
) -> None:
    root = synced_project.root
    if reader == "validate":
        assert run_task(root, "render", "--env", "dev").returncode == 0
    before = snapshot(root)

    with charts_lock_held(root, "exclusive", "charts.sync") as pid:
        done = run_task(root, *READERS[reader], ASTRAGO_LOCK_WAIT="0")

    assert done.returncode == 1, done.stdout
    assert done.stderr.splitlines()[-1] == (
        f"error: charts/external is in use by charts.sync (pid {pid}) (.cache/charts.lock); gave up after 0s: "
        "try again when it ends, or wait longer with ASTRAGO_LOCK_WAIT=SECONDS"
    )
    assert "Traceback" not in done.stderr
    assert snapshot(root) == before


def test_a_sync_gives_up_on_a_reader_in_one_line(synced_project: RepoLayout, mirror: Path) -> None:
    values = synced_project.chart_dir("harbor", "1.14.2") / "values.yaml"
    values.write_text(values.read_text() + "# edit\n")
    before = snapshot(synced_project.root)

    with charts_lock_held(synced_project.root, "shared", "render") as pid:
        done = run_task(synced_project.root, "charts.sync", CHARTS_MIRROR=str(mirror), ASTRAGO_LOCK_WAIT="0")

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"reading upstream charts through the mirror {mirror}",
        f"error: charts/external is in use by pid {pid} (.cache/charts.lock); gave up after 0s: "
        "try again when it ends, or wait longer with ASTRAGO_LOCK_WAIT=SECONDS",
    ]
    assert snapshot(synced_project.root) == before


# Loaded by every Python process that finds it on PYTHONPATH: stops an `inv render` right before
# it moves a tree onto PAUSE_RENAME_TO (whichever way the code renames), until told to go on.
PAUSE_BEFORE_RENAME = """
import os, sys
_target = os.environ.get("PAUSE_RENAME_TO")
def _hook(event, args):
    global _target
    if _target and event in ("os.rename", "astrago_deploy.renameat2") and os.fspath(args[1]) == _target:
        _target = None
        print("paused before moving the render into place", file=sys.stderr, flush=True)
        sys.stdin.readline()
sys.addaudithook(_hook)
"""


def test_two_renders_of_one_environment_at_once_both_succeed(synced_project: RepoLayout, tmp_path: Path) -> None:
    root = synced_project.root
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(PAUSE_BEFORE_RENAME)
    out_dir = synced_project.rendered_dir / "dev"
    argv = [*INV, "render", "--env", "dev", "--no-cache"]
    assert run_task(root, *argv[3:]).returncode == 0  # an earlier render is there to be replaced

    first = subprocess.Popen(
        argv, cwd=root, env=task_env(root, PYTHONPATH=str(hooks), PAUSE_RENAME_TO=str(out_dir)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    said = read_until(first.stderr, "paused")
    assert said.endswith("paused before moving the render into place\n"), said + first.communicate("\n")[1]
    # The first render stands right before its swap; a second render of dev runs whole meanwhile.
    second = run_task(root, *argv[3:])
    assert second.returncode == 0, second.stderr
    _, err = first.communicate("\n", timeout=300)

    assert first.returncode == 0, err
    # One whole render is left, the same as a render on its own; no staging folder remains.
    alone = run_task(root, *argv[3:], "--out", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr
    release_files = {k: v for k, v in snapshot(out_dir).items() if k.endswith(".yaml")}
    assert release_files == {k: v for k, v in snapshot(tmp_path / "alone" / "dev").items() if k.endswith(".yaml")}
    assert sorted(p.name for p in synced_project.rendered_dir.iterdir()) == ["dev"]


# --- a sync killed in the middle of its swaps ----------------------------------------------------

def kill_points(events: list[str]) -> list[int]:
    """The steps (1-based) to kill at: every one but the middle of a run of file removals, where
    one removal is like the next; the first, second and last of each run are kept."""
    removal = {"os.remove", "os.rmdir"}
    points = []
    for i, event in enumerate(events):
        run_start = event in removal and (i == 0 or events[i - 1] not in removal)
        second = event in removal and i > 0 and events[i - 1] in removal and (i < 2 or events[i - 2] not in removal)
        run_end = event in removal and (i + 1 == len(events) or events[i + 1] not in removal)
        if event not in removal or run_start or second or run_end:
            points.append(i + 1)
    return points


KILLED_SYNC = (
    STEPPING
    + """
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
vendor = ChartVendor(RepoLayout.at(sys.argv[1]), Fetcher(mirror=Mirror(sys.argv[2])))
sys.addaudithook(_hook)
vendor.sync()
_count()
"""
)


def test_a_sync_killed_at_any_step_leaves_each_chart_old_or_new_and_the_next_sync_recovers(
    synced_project: RepoLayout, mirror: Path, tmp_path: Path
) -> None:
    layout = synced_project
    lock = VersionsLock.load(layout.lock_file)
    charts = {c.name: c for c in lock.charts()}
    lock_text = layout.lock_file.read_text()
    # A hand edit, so the sync re-vendors the chart: its swap replaces an existing tree. The
    # smallest chart: every file the sync deletes is a step to be killed at.
    folder = layout.chart_dir("csi-driver-nfs", charts["csi-driver-nfs"].version)
    with (folder / "values.yaml").open("a") as handle:
        handle.write("# hand edit\n")
    edited = {"csi-driver-nfs": tree_digest(folder)}
    edited_external = tmp_path / "edited-external"
    shutil.copytree(layout.external_dir, edited_external, symlinks=True)
    run = [sys.executable, "-c", KILLED_SYNC, str(layout.root), str(mirror)]
    counted = subprocess.run(run, env={**os.environ, "STEP_MODE": "count", "STEP_AT": "0"}, capture_output=True,
                             text=True, check=True)  # fmt: skip
    events = counted.stdout.split()[1:]
    assert events.count("astrago_deploy.renameat2") >= 1 and "os.remove" in events  # the swap, the old tree's removal

    for step in kill_points(events):
        # Back to the hand-edited state the campaign starts from.
        shutil.rmtree(layout.external_dir)
        shutil.copytree(edited_external, layout.external_dir, symlinks=True)
        killed = subprocess.run(run, env={**os.environ, "STEP_MODE": "kill", "STEP_AT": str(step)}, capture_output=True,
                                text=True)  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)

        for name, chart in charts.items():
            folder = layout.chart_dir(name, chart.version)
            assert folder.is_dir(), f"step {step}: {folder.name} is missing"
            assert tree_digest(folder) in (chart.tree, edited.get(name)), f"step {step}: {folder.name} is mixed"
        assert layout.lock_file.read_text() == lock_text

        ChartVendor(layout, Fetcher(mirror=Mirror(str(mirror)))).sync()
        for name, chart in charts.items():
            assert tree_digest(layout.chart_dir(name, chart.version)) == chart.tree
        assert sorted(p.name for p in layout.external_dir.iterdir()) == sorted(c.dirname for c in charts.values())
        assert layout.lock_file.read_text() == lock_text


def test_lint_gives_up_on_a_sync_before_reading_any_chart(synced_project: RepoLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    """`nox -s lint` runs helm lint and the override check over charts/external: it holds the
    charts lock shared like every other reader, so a sync cannot swap a tree under it."""
    from astrago_deploy.lint import checks

    monkeypatch.setenv("ASTRAGO_LOCK_WAIT", "0")
    lines: list[str] = []
    with charts_lock_held(synced_project.root, "exclusive", "charts.sync"), pytest.raises(LockBusyError):
        checks.run_lint(lines.append, [], synced_project)
    assert lines == []  # no check ran
