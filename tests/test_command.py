"""The command gateway with real processes: process groups under timeouts and interrupts, bad
binaries, non-UTF-8 output, streaming, and the platform check. Nothing is mocked: the tests
start real process trees and look at /proc afterwards."""

from __future__ import annotations

import io
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from astrago_deploy.core.command import Command, Timeouts, timeout_scale
from astrago_deploy.core.errors import CommandError, HelmError, HelmfileError, InputError, ToolNotInstalledError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.toolchain.pinned import PinnedTools, ToolInstaller, machine_platform

from .conftest import PROJECT

# A process tree: top -> child -> grandchild, each writing its pid to PIDS/<level> and then
# waiting for ever. The grandchild ignores SIGTERM, so only the SIGKILL after the grace period
# ends it; the top prints a line first so that errors have output to show.
TREE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    pids, level = sys.argv[1], int(sys.argv[2])
    names = ["top", "child", "grandchild"]
    if level == 0:
        print("tree started", flush=True)
    if level == 2:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(pids, names[level] + ".tmp"), "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(os.path.join(pids, names[level] + ".tmp"), os.path.join(pids, names[level]))
    if level < 2:
        subprocess.Popen([sys.executable, __file__, pids, str(level + 1)])
    while True:
        time.sleep(1)
    """
)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it does not count)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return text[text.rfind(")") + 2] != "Z"


def wait_for(path: Path, limit: float = 120.0) -> None:
    """Poll for a file a process writes (bounded, so a broken test fails instead of hanging)."""
    end = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear within {limit}s")
        time.sleep(0.05)


def tree_pids(pids: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in pids.iterdir() if not p.name.endswith(".tmp")}


def kill_survivors(pids: Iterable[int]) -> None:
    """After a failed test: no process of ours may outlive it."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    pids = tmp_path / "pids"
    pids.mkdir()
    yield [sys.executable, str(script), str(pids), "0"], pids
    kill_survivors(tree_pids(pids).values())


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def gateway(argv: list[str], cwd: Path, **kw: object) -> Command:
    return Command(argv, cwd, dict(os.environ), **kw)  # type: ignore[arg-type]


# --- process groups --------------------------------------------------------------------------


def test_timeout_stops_the_whole_process_tree(tree: tuple[list[str], Path], tmp_path: Path) -> None:
    argv, pids = tree
    with pytest.raises(CommandError) as err:
        gateway(argv, tmp_path, timeout=8, kill_grace=1).run()
    found = tree_pids(pids)
    # Without the whole tree started the test would prove nothing.
    assert set(found) == {"top", "child", "grandchild"}
    assert [name for name, pid in found.items() if alive(pid)] == []
    message = str(err.value)
    assert message.startswith("command timed out after 8s (the whole process group was stopped; ASTRAGO_TIMEOUT_SCALE")
    assert "tree started" in message  # the tail of the output
    assert err.value.returncode == -1


DRIVER = textwrap.dedent(
    """
    import os, sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from astrago_deploy.core.command import Command, stop_commands_on_signals
    mode, grace, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    command = Command(argv, Path.cwd(), dict(os.environ), timeout=600, kill_grace=grace)
    if mode == "main":
        command.run()
    else:  # as `inv render` does: the command runs in a worker thread, the signal hits the main one
        with stop_commands_on_signals(), ThreadPoolExecutor(1) as pool:
            pool.submit(command.run).result()
    """
)


@pytest.mark.parametrize(
    ("signum", "mode", "returncode"),
    [
        (signal.SIGINT, "main", -signal.SIGINT),
        (signal.SIGTERM, "main", 128 + signal.SIGTERM),
        (signal.SIGINT, "worker", -signal.SIGINT),
    ],
)
def test_interrupt_stops_the_whole_process_tree(
    tree: tuple[list[str], Path], tmp_path: Path, signum: int, mode: str, returncode: int
) -> None:
    argv, pids = tree
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(driver), mode, "1", *argv],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the signal goes to the driver only, as for a tool outside the terminal's group
    )
    try:
        wait_for(pids / "grandchild")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    found = tree_pids(pids)
    assert set(found) == {"top", "child", "grandchild"}
    assert [name for name, pid in found.items() if alive(pid)] == []
    # The interrupt is raised again after the cleanup: Python's own exit for SIGINT, 143 for TERM.
    assert proc.returncode == returncode, stderr
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr


def test_a_gateway_inside_a_stopped_tool_stops_its_own_tools_first(tree: tuple[list[str], Path], tmp_path: Path) -> None:
    """As the post-renderer's kubectl under helmfile: the inner gateway's tool runs in a group of
    its own, so the inner gateway must finish stopping it before the outer one's SIGKILL."""
    argv, pids = tree
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    inner = [sys.executable, str(driver), "main", "5", *argv]  # 5 s: the production grace
    proc = subprocess.Popen(
        [sys.executable, str(driver), "main", "3", *inner], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        wait_for(pids / "grandchild")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    found = tree_pids(pids)
    assert set(found) == {"top", "child", "grandchild"}
    assert [name for name, pid in found.items() if alive(pid)] == [], stderr


def test_a_signal_while_the_gateway_holds_its_registry_lock_still_stops_and_exits(tmp_path: Path) -> None:
    """A second SIGTERM a microsecond after the first (an outer gateway's interrupt, then its stop)
    can run the handler while the main thread is inside the registry of running commands. That
    deadlocked once and left the tools running; the handler must still finish and exit."""
    code = textwrap.dedent(
        """
        import os, signal
        from astrago_deploy.core import command
        with command.stop_commands_on_signals():
            with command._LIVE._lock:  # as inside `track`, when the signal lands
                os.kill(os.getpid(), signal.SIGTERM)
                signal.sigtimedwait([], 0)  # give the handler its bytecode boundary
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr


# --- bad binaries and output -----------------------------------------------------------------


def test_non_utf8_stdout_is_the_commands_typed_error(tmp_path: Path) -> None:
    argv = python("import sys; sys.stdout.buffer.write(b'kind: ConfigMap\\nname: caf\\xe9\\n')")
    with pytest.raises(HelmError, match=r"^helm printed output that is not UTF-8 \(byte 0xe9 on line 2 of stdout\)"):
        gateway(argv, tmp_path, error=HelmError).run()


def test_non_utf8_stderr_of_a_failure_is_shown_with_replacement(tmp_path: Path) -> None:
    argv = python("import sys; sys.stderr.buffer.write(b'bad \\xff byte\\n'); sys.exit(2)")
    with pytest.raises(HelmError) as err:
        gateway(argv, tmp_path, error=HelmError).run()
    assert err.value.returncode == 2
    assert "bad \ufffd byte" in str(err.value)


def test_stdin_reaches_the_command(tmp_path: Path) -> None:
    argv = python("import sys; sys.stdout.write(sys.stdin.read().upper())")
    assert gateway(argv, tmp_path, stdin="héllo\n").run().stdout == "HÉLLO\n"


def test_garbage_binary_is_the_commands_typed_error(tmp_path: Path) -> None:
    binary = tmp_path / "helm"
    binary.write_bytes(bytes(range(256)) * 4)
    binary.chmod(0o755)
    with pytest.raises(HelmError) as err:
        gateway([str(binary), "version"], tmp_path, error=HelmError).run()
    assert str(err.value).startswith(
        f"helm could not start: {binary} is no executable for this machine (corrupt, or built for another platform)"
    )


def test_binary_for_another_architecture_is_the_commands_typed_error(tmp_path: Path) -> None:
    # A 64-bit little-endian ELF header for RISC-V (e_machine 243): the kernel refuses it.
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (2).to_bytes(2, "little") + (243).to_bytes(2, "little")
    binary = tmp_path / "kubectl"
    binary.write_bytes(header + b"\0" * 200)
    binary.chmod(0o755)
    with pytest.raises(CommandError, match="is no executable for this machine"):
        gateway([str(binary)], tmp_path).run()


def test_binary_without_exec_permission_is_the_commands_typed_error(tmp_path: Path) -> None:
    binary = tmp_path / "helmfile"
    binary.write_text("#!/bin/sh\necho hi\n")
    binary.chmod(0o644)
    if os.geteuid() == 0:  # root may run anything that has an x bit; the file has none
        assert not binary.stat().st_mode & stat.S_IXUSR
    with pytest.raises(HelmfileError, match="^" + re.escape(f"helmfile could not start: permission denied executing {binary}")):
        gateway([str(binary)], tmp_path, error=HelmfileError).run()


def test_missing_tool_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"could not start: executable not found: .*/nope"):
        gateway([str(tmp_path / "nope")], tmp_path).run()
    with pytest.raises(CommandError, match=re.escape(f"working directory {tmp_path / 'gone'} does not exist")):
        gateway(["true"], tmp_path / "gone").run()


# --- timeouts --------------------------------------------------------------------------------


def test_timeout_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert timeout_scale({}) == 1.0
    assert timeout_scale({"ASTRAGO_TIMEOUT_SCALE": "2.5"}) == 2.5
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(InputError, match="ASTRAGO_TIMEOUT_SCALE must be a positive number"):
            timeout_scale({"ASTRAGO_TIMEOUT_SCALE": bad})
    monkeypatch.setenv("ASTRAGO_TIMEOUT_SCALE", "0.25")
    with pytest.raises(CommandError, match=r"timed out after 0\.5s"):
        gateway(python("import time; time.sleep(60)"), tmp_path, timeout=2, kill_grace=0.5).run()


def test_every_pinned_tool_call_gets_a_timeout(project: RepoLayout) -> None:
    tools = PinnedTools(project)
    assert tools.command("helm", ["lint"]).timeout == Timeouts.HELM
    assert tools.command("helmfile", ["template"]).timeout == Timeouts.HELMFILE_TEMPLATE
    assert tools.command("kubectl", ["kustomize"]).timeout == Timeouts.KUSTOMIZE
    assert tools.command("helm", ["version"], timeout=5).timeout == 5


def test_git_network_commands_get_the_longer_timeout(project: RepoLayout) -> None:
    from astrago_deploy.core.git import GitRepo

    repo = GitRepo(project.root)
    assert repo.timeout_for("push", "origin", "main") == Timeouts.GIT_NETWORK
    assert repo.timeout_for("status") == Timeouts.GIT_LOCAL


# --- streaming -------------------------------------------------------------------------------


class Recorder(io.StringIO):
    """A caller's stream that writes a marker file when it sees a trigger line: the process waits
    for that file, so the test proves the line arrived while the process was still running."""

    def __init__(self, markers: dict[str, Path]) -> None:
        super().__init__()
        self.markers = markers

    def write(self, text: str) -> int:
        for trigger, marker in self.markers.items():
            if trigger in text:
                marker.write_text("seen")
        return super().write(text)


STREAMED = """
import os, sys, time
print("step 1: started", flush=True)
end = time.monotonic() + 120
while not os.path.exists(sys.argv[1]) and time.monotonic() < end:
    time.sleep(0.05)
print("marker seen" if os.path.exists(sys.argv[1]) else "marker never seen", flush=True)
for n in range(30):
    print(f"line {n}", flush=True)
# stdout and stderr are read by two threads: write stderr once the caller has seen all of stdout,
# so the tail's order is fixed.
while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
    time.sleep(0.05)
print("upgrade failed: boom", file=sys.stderr, flush=True)
sys.exit(3)
"""


def test_stream_shows_lines_live_keeps_a_log_and_puts_its_tail_in_the_error(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    all_out = tmp_path / "all-stdout-seen"
    out = Recorder({"step 1: started": marker, "line 29": all_out})
    err = io.StringIO()
    log = tmp_path / "logs" / "run-helmfile.log"
    argv = [*python(STREAMED), str(marker), str(all_out)]
    with pytest.raises(HelmfileError) as failure:
        gateway(argv, tmp_path, error=HelmfileError).stream(log, out, err)
    assert out.getvalue().splitlines()[:2] == ["step 1: started", "marker seen"]
    assert err.getvalue() == "upgrade failed: boom\n"
    text = log.read_text()
    assert text.startswith(f"$ {sys.executable} -c")
    for line in ["step 1: started", "marker seen", *(f"line {n}" for n in range(30)), "upgrade failed: boom"]:
        assert f"\n{line}\n" in text
    assert text.endswith("# exit 3\n")
    message = str(failure.value)
    assert message.startswith("helmfile failed (exit 3): ")
    assert message.endswith(f"line 29\nupgrade failed: boom\nfull output: {log}")
    assert "line 10" not in message  # only the tail
    assert failure.value.log == log


def test_stream_success_returns_the_output_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "ok.log"
    out = io.StringIO()
    argv = python("import sys; print('one'); sys.stdout.buffer.write(b'caf\\xe9\\n')")
    result = gateway(argv, tmp_path).stream(log, out, io.StringIO())
    assert result.log == log
    assert out.getvalue() == "one\ncaf\ufffd\n"  # shown to people: replaced, not an error
    assert b"\ncaf\xe9\n" in log.read_bytes()  # the log keeps the bytes as printed
    assert log.read_text(errors="replace").endswith("# exit 0\n")


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("the reader went away")


def test_stream_keeps_reading_when_the_callers_stream_is_closed(tmp_path: Path) -> None:
    """`inv deploy | head`: the tool must not block on a full pipe; the log still gets it all."""
    log = tmp_path / "closed.log"
    argv = python("for n in range(20000): print(f'line {n:05d} ' + 'x' * 40)")
    result = gateway(argv, tmp_path, timeout=120).stream(log, ClosedPipe(), ClosedPipe())
    assert result.returncode == 0
    assert log.read_text().count("\nline ") == 20000


def test_stream_timeout_stops_the_tree_and_says_where_the_log_is(tree: tuple[list[str], Path], tmp_path: Path) -> None:
    argv, pids = tree
    log = tmp_path / "tree.log"
    with pytest.raises(CommandError) as err:
        gateway(argv, tmp_path, timeout=8, kill_grace=1).stream(log, io.StringIO(), io.StringIO())
    found = tree_pids(pids)
    assert set(found) == {"top", "child", "grandchild"}
    assert [name for name, pid in found.items() if alive(pid)] == []
    assert "timed out after 8s" in str(err.value)
    assert str(err.value).endswith(f"tree started\nfull output: {log}")
    assert log.read_text().endswith("# command timed out after 8s (the whole process group was stopped; "
                                    "ASTRAGO_TIMEOUT_SCALE scales every limit)\n")


# --- platform --------------------------------------------------------------------------------


def test_tools_pinned_for_another_platform_are_refused(project: RepoLayout) -> None:
    here = machine_platform()
    other = "linux-arm64" if here != "linux-arm64" else "linux-amd64"
    manifest = project.toolchain_manifest
    manifest.write_text(manifest.read_text().replace("platform: linux-amd64", f"platform: {other}"))
    expected = f"toolchain.yaml pins tools for {other}, but this machine is {here}: the pinned binaries cannot run here"
    with pytest.raises(ToolNotInstalledError, match=re.escape(expected)):
        PinnedTools(project).path("helm")
    installer = ToolInstaller(project, fetcher=None, environ={})  # type: ignore[arg-type]
    with pytest.raises(ToolNotInstalledError, match=re.escape(expected)):
        installer.install()


def test_the_committed_toolchain_matches_this_machine() -> None:
    assert PinnedTools(RepoLayout.at(PROJECT)).path("helm").is_file()


# --- acceptance: `inv render` interrupted or timed out leaves no tool behind ---------------------

# A post-renderer that never finishes: it reads the manifests helm gives it, then waits on a
# real kubectl that waits on its stdin. The pid file names the post-renderer and kubectl's pid,
# written once kubectl is forked; it becomes kubectl when the fork execs it, a moment later.
HANGING_POST_RENDER = """#!/usr/bin/env bash
set -u
cat > /dev/null
sleep 600 | "$ASTRAGO_TOOLS_BIN/kubectl" create --dry-run=client -o yaml -f - &
echo "$$ $!" > "$ASTRAGO_TEST_PIDS/post-render-$$"
wait
"""


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (process group, command line) of every running process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_text = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat_text[stat_text.rfind(")") + 2 :].split()
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[2]), cmdline)
    return found


def kubectl_started(pids: Path) -> bool:
    """Whether a hanging post-renderer wrote its pid file and its kubectl runs (forked and exec'd)."""
    for written in pids.glob("post-render-*"):
        if written.suffix:
            continue
        fields = written.read_text().split()
        if len(fields) == 2:  # the file is complete
            cmdline = processes().get(int(fields[1]), (0, ""))[1]
            return "/.tools/bin/kubectl " in cmdline
    return False


@pytest.mark.parametrize("how", ["interrupt", "timeout"])
def test_a_stopped_render_leaves_no_helm_helmfile_kubectl_or_post_render_behind(
    synced_project: RepoLayout, tmp_path: Path, how: str
) -> None:
    root = synced_project.root
    (root / "scripts" / "post-render").write_text(HANGING_POST_RENDER)
    (root / "tasks.py").write_text((PROJECT / "tasks.py").read_text())
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {
        **os.environ,
        "ASTRAGO_ROOT": str(root),
        "ASTRAGO_TEST_PIDS": str(pids),
        # Tools see only an allowlisted environment: name the test's variable for the post-renderer.
        "ASTRAGO_TOOL_ENV": "ASTRAGO_TEST_PIDS",
        # A timeout that fires well after the tree is up, a few seconds in (helmfile template
        # allows 900 s): 13.5 s, not longer, since the test waits it out.
        "ASTRAGO_TIMEOUT_SCALE": "0.015" if how == "timeout" else "1",
    }
    inv = subprocess.Popen(
        [str(PROJECT / ".venv" / "bin" / "inv"), "render", "--env", "dev", "--no-cache"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # like a terminal's Ctrl-C, SIGINT reaches inv only, not the tools
    )
    try:
        end = time.monotonic() + 120
        while not kubectl_started(pids):
            assert time.monotonic() < end and inv.poll() is None, "the render never reached the post-renderer"
            time.sleep(0.1)
        helmfiles = [pid for pid, (_, cmd) in processes().items() if cmd.startswith(f"{root}/.tools/bin/helmfile ")]
        assert len(helmfiles) == 1
        group = processes()[helmfiles[0]][0]
        tree = {pid: cmd for pid, (pgid, cmd) in processes().items() if pgid == group}
        kinds = {kind for kind in ("helmfile", "helm", "kubectl", "post-render") if any(
            f"/.tools/bin/{kind} " in cmd or f"scripts/{kind}" in cmd for cmd in tree.values())}
        assert kinds == {"helmfile", "helm", "kubectl", "post-render"}, tree
        if how == "interrupt":
            inv.send_signal(signal.SIGINT)
        _, stderr = inv.communicate(timeout=300)
    finally:
        inv.kill()
        kill_survivors(pid for pid, (_, cmd) in processes().items() if str(root) in cmd)
    assert [cmd for pid, cmd in tree.items() if alive(pid)] == []
    assert [cmd for _, cmd in processes().values() if str(root) in cmd] == []
    assert inv.returncode == (130 if how == "interrupt" else 1), stderr
    if how == "interrupt":
        assert stderr.strip().endswith("interrupted")
    else:
        assert "helmfile timed out after 13.5s (the whole process group was stopped" in stderr
