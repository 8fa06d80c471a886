"""Kill campaigns: `inv charts.upgrade` and `inv charts.sync` ended by SIGKILL at random moments.

A crash can come at any instant (the OOM killer, a cancelled CI job, a closed laptop). After
each kill the checkout must be one a person can trust without reading code:
- upgrade: a `chart/*` branch exists only when it points at the finished upgrade commit (one
  commit on the starting one, holding the new lock and the report); the starting branch, HEAD,
  the working tree and the vendored charts are untouched; `git fsck --strict` finds no error;
- sync: each vendored chart is the tree it was before the run or the locked one, never a mix,
  and the lock is untouched.
The next complete run then succeeds and prunes what the killed runs left: no worktree is
registered but the main one, and no temporary folder or file of the suite remains.

The moments come from a seeded RNG (the seed is printed; `ASTRAGO_KILL_SEED=N` replays the
choice of moments) and are spread over the duration of a complete run that the test measures
first: one moment in each of N equal slices of it, in random order, so every phase of the run
is hit. Later runs may be faster (their renders are cached); a run that finishes before its
moment is checked like the calibration run and the remaining moments are spread over its
duration instead. A kill ends the run's whole process tree, as a crash does: the command
gateway starts each tool in a session of its own, so a SIGKILL to the run's group alone would
leave helmfile and helm running as orphans; the tree is frozen (SIGSTOP) first so that no
process escapes while it is collected.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.markers import read_marker
from astrago_deploy.model.lock import VersionsLock

from .conftest import GIT_ENV, PROJECT, git, snapshot

pytestmark = pytest.mark.tools

INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]
RUN_LIMIT = 900.0  # seconds a complete run may take before the test gives up on it
EARLIEST = 0.2  # no moment before this: the interpreter has not even started
UPGRADE_KILLS = 10
SYNC_KILLS = 20  # a sync is short (about a second, mostly start-up): more kills to hit its swaps
UPGRADE = ["charts.upgrade", "gpu-operator", "--to", "v25.10.1", "--no-pr"]
BRANCH = "chart/gpu-operator-v25.10.1"
REPORT = "reports/upgrades/gpu-operator-v25.3.4-to-v25.10.1"
# Names the suite gives its temporary folders and files: staging folders, trees renamed aside by
# replace_dir/remove_dir, atomic-write and download temporaries.
TEMPORARY_NAME = re.compile(r"\..+(\.staging|\.(old|del)-\d+|\.tmp|\.part)")


# --- running and killing -------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: count from the last ")".
        children[int(stat.rsplit(")", 1)[-1].split()[1])].append(int(entry.name))
    return children


def process_tree(pid: int) -> set[int]:
    """`pid` and every process descending from it (by parent links), whatever its group."""
    children = _children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo += children.get(current, [])
    return found


def is_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")  # a zombie has ended: nothing is left to run


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run and everything it started, then wait until all of it has ended."""
    stopped: set[int] = set()
    while fresh := process_tree(proc.pid) - stopped:
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= fresh
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while not all(is_gone(pid) for pid in stopped):
        assert time.monotonic() < deadline, f"processes of a killed run still run: {sorted(stopped)}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Run:
    killed: bool
    returncode: int
    seconds: float
    output: str


class Runner:
    """Runs one `inv` task again and again on a checkout, each output kept in its own log."""

    def __init__(self, root: Path, logs: Path, args: list[str], **env: str) -> None:
        self.root = root
        self.logs = logs
        self.args = args
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ASTRAGO_", "GITHUB_", "CHARTS_"))}
        self.env.update(GIT_ENV)
        self.env.update({"ASTRAGO_ROOT": str(root), "NO_COLOR": "1", "HOME": str(root.parent), **env})
        self.count = 0
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, kill_at: float | None = None) -> Run:
        """Run the task to its end, or kill it `kill_at` seconds after its start if it still runs."""
        self.count += 1
        log = self.logs / f"run-{self.count}.log"
        with log.open("wb") as sink:
            started = time.monotonic()
            proc = subprocess.Popen(
                [*INV, *self.args], cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                returncode = proc.wait(timeout=RUN_LIMIT if kill_at is None else kill_at)
                killed = False
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                if kill_at is None:
                    raise
                returncode, killed = proc.returncode, True
            seconds = time.monotonic() - started
        return Run(killed, returncode, seconds, log.read_text(encoding="utf-8", errors="replace"))


def spread(rng: random.Random, duration: float, count: int) -> list[float]:
    """`count` moments in [EARLIEST, duration]: one at a random place in each equal slice, shuffled."""
    width = max(duration - EARLIEST, 0.0) / count
    moments = [EARLIEST + (i + rng.random()) * width for i in range(count)]
    rng.shuffle(moments)
    return moments


@pytest.fixture
def kill_rng() -> random.Random:
    seed = int(os.environ.get("ASTRAGO_KILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill campaign seed: {seed} (replay the moments with ASTRAGO_KILL_SEED={seed})")
    return random.Random(seed)


@dataclass
class Campaign:
    """The moments still to kill at, re-spread over the latest complete run's duration."""

    rng: random.Random
    kills: int
    duration: float
    done: int = 0
    finished_early: int = 0

    def __post_init__(self) -> None:
        self.pending = spread(self.rng, self.duration, self.kills)

    def moments(self) -> Iterator[float]:
        while self.done < self.kills:
            assert self.finished_early <= self.kills, "runs keep finishing before their moment: nothing is killed"
            yield self.pending.pop()

    def record(self, run: Run) -> None:
        lines = run.output.strip().splitlines()
        said = f" (last output: {lines[-1].strip()!r})" if lines else ""
        print(f"  {'killed' if run.killed else 'finished'} after {run.seconds:.2f}s{said}")
        if run.killed:
            self.done += 1
        else:
            self.finished_early += 1
            self.duration = run.seconds
            self.pending = spread(self.rng, self.duration, self.kills - self.done)


def temporary_leftovers(root: Path) -> list[str]:
    """Temporary folders and files of the suite anywhere in the checkout (git's own store aside),
    and whatever is left in the folders of temporary worktrees and of the tools' temporary files."""
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs.remove(".git")
        found += [str((here / n).relative_to(root)) for n in dirs + files if TEMPORARY_NAME.fullmatch(n)]
    for parent in (root / ".cache" / "worktrees", root / ".tools" / "state" / "tmp"):
        if parent.is_dir():
            found += [str(p.relative_to(root)) for p in parent.iterdir() if not _owner_alive(p)]
    return sorted(found)


def _owner_alive(entry: Path) -> bool:
    """A marked folder of a process still running (`.tools` may be the checkout's, shared with
    whatever runs the suite: nox renders in its own process), not a leftover of the campaign's
    runs, which are all over by the time this is asked."""
    marker = read_marker(entry) if entry.is_dir() else None
    return marker is not None and marker.owner_alive()


def registered_worktrees(root: Path) -> list[str]:
    listing = git(root, "worktree", "list", "--porcelain").splitlines()
    return [line.removeprefix("worktree ") for line in listing if line.startswith("worktree ")]


def assert_fsck_clean(root: Path) -> None:
    env = {**os.environ, **GIT_ENV, "HOME": str(root.parent)}
    fsck = subprocess.run(
        ["git", "fsck", "--strict", "--no-progress"], cwd=root, env=env, capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "error" not in (fsck.stdout + fsck.stderr).lower(), fsck.stdout + fsck.stderr


# --- charts.upgrade ----------------------------------------------------------------------------------


def chart_branches(root: Path) -> list[str]:
    return git(root, "for-each-ref", "--format=%(refname)", "refs/heads/chart/").split()


def assert_finished_upgrade(root: Path, ref: str, start: str) -> str:
    """`ref` points at the complete upgrade commit on `start`; its id."""
    tip = git(root, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    assert git(root, "rev-parse", f"{tip}^@").split() == [start], f"{ref} is not one commit on the start"
    changed = sorted(git(root, "diff-tree", "--no-commit-id", "--name-only", "-r", tip).split())
    assert changed == ["charts/versions.lock", f"{REPORT}.json", f"{REPORT}.md"], f"{ref} holds {changed}"
    locked = yaml.safe_load(git(root, "show", f"{tip}:charts/versions.lock"))["charts"]["gpu-operator"]
    assert locked["version"] == "v25.10.1"
    assert all(str(locked.get(key, "")).startswith(("https://", "sha256:")) for key in ("url", "digest", "tree"))
    report = json.loads(git(root, "show", f"{tip}:{REPORT}.json"))
    assert (report["chart"], report["from"], report["to"]) == ("gpu-operator", "v25.3.4", "v25.10.1")
    assert git(root, "show", f"{tip}:{REPORT}.md").startswith("# Upgrade gpu-operator: v25.3.4 -> v25.10.1\n")
    return tip


def assert_checkout_untouched(layout: RepoLayout, start: str, external: dict[str, bytes]) -> None:
    root = layout.root
    assert git(root, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(root, "rev-parse", "refs/heads/main").strip() == start
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    assert snapshot(layout.external_dir) == external


def delete_branch(root: Path, ref: str, tip: str) -> None:
    """What a person does before running the upgrade again: delete the branch (it must still hold `tip`)."""
    git(root, "update-ref", "-d", ref, tip)


@pytest.fixture
def gpu_project(tmp_path: Path, synced_template: RepoLayout) -> RepoLayout:
    """The synced monorepo, committed, with only the releases of the chart under upgrade enabled
    and no customer site: what a crash can break does not depend on how many releases are
    rendered, and a run takes a fraction of the time (every chart is still vendored and copied)."""
    root = tmp_path / "repo"
    shutil.copytree(synced_template.root, root, symlinks=True)
    base = root / "environments" / "base" / "values.yaml"
    text = base.read_text()
    for release in ("csi-driver-nfs", "harbor", "ingress-nginx", "prometheus", "gpu-process-exporter", "gpu-monitoring",
                    "keycloak-addons", "keycloak-postgresql", "keycloak", "astrago-mariadb", "astrago"):
        assert f"  {release}: {{enabled: true}}\n" in text
        text = text.replace(f"  {release}: {{enabled: true}}\n", f"  {release}: {{enabled: false}}\n")
    base.write_text(text)
    customers = root / "environments" / "customers"
    shutil.rmtree(customers)
    customers.mkdir()
    (customers / ".gitkeep").write_text("")  # the helmfile reads the folder: git keeps no empty one
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return RepoLayout.at(root)


@pytest.mark.timeout(1500)  # ~60 s idle, ~260 s at load 14: a busy machine must not fail it
def test_charts_upgrade_killed_at_random_moments_leaves_no_unfinished_branch_and_the_next_run_prunes(
    gpu_project: RepoLayout, mirror: Path, kill_rng: random.Random, tmp_path: Path
) -> None:
    layout = gpu_project
    root = layout.root
    start = git(root, "rev-parse", "HEAD").strip()
    external = snapshot(layout.external_dir)
    runner = Runner(root, tmp_path / "logs", UPGRADE, CHARTS_MIRROR=str(mirror))

    calibration = runner.run()
    assert calibration.returncode == 0, calibration.output
    delete_branch(root, f"refs/heads/{BRANCH}", assert_finished_upgrade(root, BRANCH, start))
    campaign = Campaign(kill_rng, UPGRADE_KILLS, calibration.seconds)
    print(f"a complete upgrade took {calibration.seconds:.1f}s")

    for moment in campaign.moments():
        print(f"kill at {moment:.2f}s")
        run = runner.run(kill_at=moment)
        campaign.record(run)
        if not run.killed:
            assert run.returncode == 0, run.output
        worktrees = git(root, "worktree", "list", "--porcelain")
        print(f"  left: {worktrees.count('worktree ') - 1} worktree(s), {worktrees.count('locked')} locked, "
              f"{len(temporary_leftovers(root))} temporary folder(s), branches {chart_branches(root)}")  # fmt: skip
        # After a kill: a chart branch only as a finished upgrade; nothing else moved or changed.
        assert_checkout_untouched(layout, start, external)
        for ref in chart_branches(root):
            assert ref == f"refs/heads/{BRANCH}", ref
            delete_branch(root, ref, assert_finished_upgrade(root, ref, start))
        assert_fsck_clean(root)

    final = runner.run()
    assert final.returncode == 0, final.output
    assert_finished_upgrade(root, BRANCH, start)
    assert_checkout_untouched(layout, start, external)
    assert registered_worktrees(root) == [str(root)]
    assert not any((root / ".git" / "worktrees").glob("*"))
    assert temporary_leftovers(root) == []
    assert_fsck_clean(root)


# --- charts.sync -------------------------------------------------------------------------------------


def tamper(layout: RepoLayout, pristine: dict[str, dict[str, bytes]]) -> None:
    """Give every vendored chart something for the sync to do: drop the first, edit the others."""
    for i, dirname in enumerate(sorted(pristine)):
        folder = layout.external_dir / dirname
        if i == 0:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            with (folder / "Chart.yaml").open("a", encoding="utf-8") as chart_yaml:
                chart_yaml.write("# edited by hand\n")


def vendored_state(layout: RepoLayout, names: list[str]) -> dict[str, dict[str, bytes] | None]:
    return {
        name: snapshot(layout.external_dir / name) if (layout.external_dir / name).is_dir() else None for name in names
    }


def test_charts_sync_killed_at_random_moments_leaves_each_chart_old_or_new_and_the_next_run_prunes(
    synced_project: RepoLayout, mirror: Path, kill_rng: random.Random, tmp_path: Path
) -> None:
    layout = synced_project
    root = layout.root
    lock = layout.lock_file.read_bytes()
    names = sorted(p.name for p in layout.external_dir.iterdir() if not p.name.startswith("."))
    assert len(names) == len(VersionsLock.load(layout.lock_file).names())
    pristine = {name: snapshot(layout.external_dir / name) for name in names}
    runner = Runner(root, tmp_path / "logs", ["charts.sync"], CHARTS_MIRROR=str(mirror))

    tamper(layout, pristine)
    calibration = runner.run()
    assert calibration.returncode == 0, calibration.output
    assert vendored_state(layout, names) == pristine
    campaign = Campaign(kill_rng, SYNC_KILLS, calibration.seconds)
    print(f"a complete sync took {calibration.seconds:.2f}s")

    for moment in campaign.moments():
        tamper(layout, pristine)
        before = vendored_state(layout, names)
        print(f"kill at {moment:.2f}s")
        run = runner.run(kill_at=moment)
        campaign.record(run)
        if not run.killed:
            assert run.returncode == 0, run.output
        after = vendored_state(layout, names)
        for name in names:
            assert after[name] in (before[name], pristine[name]), f"{name} is neither its old tree nor the locked one"
        assert layout.lock_file.read_bytes() == lock
        assert git(root, "status", "--porcelain", "--untracked-files=all") == ""

    final = runner.run()
    assert final.returncode == 0, final.output
    assert vendored_state(layout, names) == pristine
    verify = Runner(root, tmp_path / "verify-logs", ["charts.verify"]).run()
    assert verify.returncode == 0, verify.output
    assert layout.lock_file.read_bytes() == lock
    assert temporary_leftovers(root) == []


# --- env.promote ---------------------------------------------------------------------------------

PROMOTE_KILLS = 10
PROMOTE = ["env.promote", "stage", "--no-pr"]


def ls_remote(root: Path, *patterns: str) -> dict[str, str]:
    out = git(root, "ls-remote", "origin", *patterns)
    return {name: oid for oid, name in (line.split("\t") for line in out.splitlines())}


def new_dev_commit(root: Path, n: int) -> str:
    """A commit on origin's dev (made in a side worktree, so the checkout stays as it is)."""
    work = root.parent / f"dev-edit-{n}"
    git(root, "fetch", "-q", "origin")
    git(root, "worktree", "add", "-q", "--detach", str(work), "origin/dev")
    with (work / "environments" / "stage" / "values.yaml").open("a", encoding="utf-8") as handle:
        handle.write(f"# change {n}\n")
    git(work, "commit", "-qam", f"dev: change {n}")
    sha = git(work, "rev-parse", "HEAD").strip()
    git(work, "push", "-q", "origin", "HEAD:refs/heads/dev")
    git(root, "worktree", "remove", "--force", str(work))
    return sha


def assert_promotion_all_or_nothing(root: Path, old: str, candidate: str) -> str:
    """origin's stage is where it was or at the candidate, with its tag exactly when it moved;
    no local promotion tag that origin lacks; containment holds. What stage holds now."""
    remote = ls_remote(root, "refs/heads/*", "refs/tags/stage/*")
    stage = remote["refs/heads/stage"]
    assert stage in (old, candidate), f"origin's stage is at {stage}, neither {old} nor {candidate}"
    tagged = {name for name, oid in remote.items() if name.endswith("^{}") and oid == candidate}
    assert bool(tagged) == (stage == candidate), f"stage at {stage[:12]}, tags at the candidate: {tagged}"
    local = git(root, "for-each-ref", "--format=%(refname)", "refs/tags/stage/").split()
    assert set(local) <= set(remote), f"local promotion tags origin lacks: {set(local) - set(remote)}"
    for later, earlier in (("stage", "dev"), ("prod", "stage")):
        git(root, "merge-base", "--is-ancestor", remote[f"refs/heads/{later}"], remote[f"refs/heads/{earlier}"])
    return stage


@pytest.mark.timeout(1500)
def test_env_promote_killed_at_random_moments_leaves_the_promotion_complete_or_absent(
    gpu_project: RepoLayout, kill_rng: random.Random, tmp_path: Path
) -> None:
    root = gpu_project.root
    shutil.rmtree(root / "patches" / "harbor")  # harbor is off here: its patches would be stale
    git(root, "commit", "-qam", "no harbor patches")
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(root, "remote", "add", "origin", str(bare))
    for stage in ("dev", "stage", "prod"):
        git(root, "push", "-q", "origin", f"HEAD:refs/heads/{stage}")
    start = git(root, "rev-parse", "HEAD").strip()
    runner = Runner(root, tmp_path / "logs", PROMOTE)
    changes = 0

    changes += 1
    candidate = new_dev_commit(root, changes)
    calibration = runner.run()
    assert calibration.returncode == 0, calibration.output
    old = assert_promotion_all_or_nothing(root, start, candidate)
    assert old == candidate
    campaign = Campaign(kill_rng, PROMOTE_KILLS, calibration.seconds)
    print(f"a complete promotion took {calibration.seconds:.1f}s")

    for moment in campaign.moments():
        if ls_remote(root, "refs/heads/stage")["refs/heads/stage"] == candidate:
            old = candidate
            changes += 1
            candidate = new_dev_commit(root, changes)  # something to promote again
        print(f"kill at {moment:.2f}s")
        run = runner.run(kill_at=moment)
        campaign.record(run)
        if not run.killed:
            assert run.returncode == 0, run.output
        assert_promotion_all_or_nothing(root, old, candidate)
        assert git(root, "rev-parse", "HEAD").strip() == start  # the checkout never moves
        assert_fsck_clean(root)

    final = runner.run()
    assert final.returncode == 0, final.output
    assert assert_promotion_all_or_nothing(root, old, candidate) == candidate
    assert registered_worktrees(root) == [str(root)]
    assert temporary_leftovers(root) == []
    assert_fsck_clean(root)
