"""The one gateway for external processes.

Every helm, helmfile, kubectl and pip call is a `Command`: an argv list (never a shell string),
an explicit working directory and environment, the return codes that count as success, the
exception type raised otherwise, and a timeout. The error keeps stdout and stderr. (git runs
through GitPython in `core.git`, with the limits from `Timeouts` and the same `GitError`.)

How a command runs:
- In its own process group (a new session), so that a timeout or an interrupt can end the
  whole tree it started (helmfile -> helm -> the post-renderer -> kubectl), not only the
  process we started: SIGTERM to the group, `kill_grace` seconds for it to exit, then SIGKILL,
  then the process is reaped. Its stdin is /dev/null unless `stdin` is given, since a process
  outside the terminal's foreground group must never read the terminal.
- Within a timeout: every command has one (`Timeouts` holds the default of each kind of work),
  multiplied by `ASTRAGO_TIMEOUT_SCALE` for slow machines. A timeout error names the command,
  the limit and the tail of the output.
- Interrupts: Ctrl-C (SIGINT) or SIGTERM to the task suite end every running command's group,
  also those run by worker threads, and the interrupt is raised again after the cleanup (SIGINT
  as `KeyboardInterrupt`, SIGTERM as `SystemExit(143)`). `stop_commands_on_signals()` installs
  that handling; `Command.run` does it for itself when called from the main thread.
- Output: stdout that the caller reads (`run`) must be UTF-8; anything else is the command's
  typed error naming the offending byte, since parsing half-replaced manifests would make what
  is reviewed differ from what is deployed. stderr, and everything `stream` shows, is for people
  and is decoded with U+FFFD replacing invalid bytes. A binary that cannot be executed (missing,
  not executable, corrupt or built for another machine) is the command's typed error too.
- `stream` shows output line by line while the command runs, keeps the whole output in a log
  file, and puts the log's path and its tail in the error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, BinaryIO, TextIO

from astrago_deploy.core.errors import CommandError, InputError

TIMEOUT_SCALE_ENV = "ASTRAGO_TIMEOUT_SCALE"
KILL_GRACE_SECONDS = 5.0
# Set for every command: a gateway that finds it in its own environment runs inside a tool that
# another gateway manages (the post-renderer's kubectl, under helm, under helmfile). Its own
# tools are in groups of their own, so it must finish stopping them (shorter grace) before the
# outer gateway's SIGKILL ends it and would leave them orphaned.
NESTED_ENV = "ASTRAGO_UNDER_COMMAND"
NESTED_KILL_GRACE_SECONDS = 1.0
_POLL_SECONDS = 0.05
# After the group is killed, output still in the pipes is read for at most this long (a process
# that left the group, e.g. a daemon calling setsid, may hold them open for ever).
_DRAIN_SECONDS = 2.0


class Timeouts:
    """Default limits, in seconds, per kind of work (before `ASTRAGO_TIMEOUT_SCALE`).

    Generous on purpose: they stop a hung tool, not a slow one. Measured here a 10-release
    `helmfile template` takes about 2 s and `helm template` of the largest chart 0.2 s.
    """

    DEFAULT = 600.0
    TOOL_QUERY = 60.0  # `helm version`, `helm plugin list`, `kubectl config current-context`
    GIT_LOCAL = 120.0  # commit, worktree, rev-parse, status
    GIT_NETWORK = 600.0  # push, fetch, pull, clone, ls-remote
    PIP = 900.0  # `pip download` of a tool wheel (tens of MiB)
    HELM = 300.0  # `helm template`, `helm lint`
    KUSTOMIZE = 120.0  # `kubectl kustomize` of one release's patches
    HELMFILE_TEMPLATE = 900.0  # one environment, every release, post-renderer included
    HELMFILE_DEPLOY = 3600.0  # apply / sync / destroy: waits for the cluster


def timeout_scale(environ: Mapping[str, str] | None = None) -> float:
    """`ASTRAGO_TIMEOUT_SCALE` (default 1): every timeout is multiplied by it."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = 0.0
    if not scale > 0 or scale == float("inf"):
        raise InputError(f"{TIMEOUT_SCALE_ENV} must be a positive number (e.g. 2 doubles every timeout), not {raw!r}")
    return scale


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    log: Path | None = None


@dataclass(frozen=True)
class Command:
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    error: type[CommandError] = CommandError
    ok_codes: frozenset[int] = field(default_factory=lambda: frozenset({0}))
    stdin: str | None = None
    timeout: float = Timeouts.DEFAULT
    kill_grace: float = KILL_GRACE_SECONDS

    def run(self) -> CommandResult:
        """Run the command, capturing its output; raise `self.error` on a return code outside
        `ok_codes`, a timeout, an interrupt, non-UTF-8 stdout or a binary that cannot run."""
        outcome = self._execute(None, None)
        stdout = _decoded(outcome.stdout)
        stderr = _decoded(outcome.stderr)
        if outcome.returncode not in self.ok_codes:
            raise self.error(self._argv(), outcome.returncode, stdout, stderr)
        try:
            stdout = outcome.stdout.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = outcome.stdout.count(b"\n", 0, exc.start) + 1
            problem = (
                f"printed output that is not UTF-8 (byte 0x{outcome.stdout[exc.start]:02x} on line {line} of stdout)"
            )
            raise self.error(self._argv(), outcome.returncode, stdout, stderr, problem=problem) from None
        return CommandResult(self._argv(), outcome.returncode, stdout, stderr)

    def stream(self, log: Path, out: TextIO | None = None, err: TextIO | None = None) -> CommandResult:
        """Run the command showing its output live: stdout lines on `out`, stderr lines on `err`
        (default: this process's), as they come. `log` receives everything (both streams, in the
        order read, as raw bytes) plus a header and the exit status. On failure the error carries
        the log's path and the tail of the output."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("xb") as handle:
            sink = _LineSink(handle, out or sys.stdout, err or sys.stderr)
            handle.write(f"$ {' '.join(self._argv())}\n# cwd: {self.cwd}\n".encode())
            handle.flush()
            try:
                outcome = self._execute(sink, log)
            except CommandError as exc:
                sink.footer(exc.headline())
                raise
            except BaseException:
                sink.footer("interrupted")
                raise
            sink.footer(f"exit {outcome.returncode}")
        stdout = _decoded(outcome.stdout)
        stderr = _decoded(outcome.stderr)
        if outcome.returncode not in self.ok_codes:
            raise self.error(self._argv(), outcome.returncode, stdout, stderr, log=log, output=sink.combined())
        return CommandResult(self._argv(), outcome.returncode, stdout, stderr, log)

    # --- one execution ----------------------------------------------------------------------

    def _argv(self) -> list[str]:
        return [str(a) for a in self.argv]

    def _execute(self, sink: _LineSink | None, log: Path | None) -> _Outcome:
        argv = self._argv()
        limit = self.timeout * timeout_scale()
        grace = self.kill_grace
        if NESTED_ENV in os.environ:
            grace = min(grace, NESTED_KILL_GRACE_SECONDS)
        with stop_commands_on_signals():
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    env={**self.env, NESTED_ENV: "1"},
                    stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                problem = _cannot_start(exc, argv[0], self.cwd)
                raise self.error(argv, 127, "", "", problem=problem, log=log) from exc
            running = _Running(proc, grace)
            with _LIVE.track(running):
                pumps = running.start_pumps(self.stdin, sink)
                try:
                    state = running.wait(pumps, time.monotonic() + limit)
                except BaseException:
                    running.stop(pumps)
                    raise
            stdout, stderr = running.output()
        if state != "done":
            problem = _timed_out(limit) if state == "timeout" else "was interrupted"
            # Which stream matters is unknown when a tool hangs: show the tail of both.
            shown = sink.combined() if sink else "\n".join(t for t in (_decoded(stdout), _decoded(stderr)) if t.strip())
            raise self.error(argv, -1, _decoded(stdout), _decoded(stderr), problem=problem, log=log, output=shown)
        return _Outcome(running.returncode, stdout, stderr)


@dataclass(frozen=True)
class _Outcome:
    returncode: int
    stdout: bytes
    stderr: bytes


def _decoded(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _timed_out(limit: float) -> str:
    return f"timed out after {limit:g}s (the whole process group was stopped; {TIMEOUT_SCALE_ENV} scales every limit)"


def _cannot_start(exc: OSError, program: str, cwd: Path) -> str:
    if isinstance(exc, FileNotFoundError) and str(exc.filename) == str(cwd):
        return f"could not start: working directory {cwd} does not exist"
    if exc.errno == errno.ENOENT:
        return f"could not start: executable not found: {program} (or its #! interpreter is missing)"
    if exc.errno == errno.ENOEXEC:
        return f"could not start: {program} is no executable for this machine (corrupt, or built for another platform)"
    if exc.errno == errno.EACCES:
        return f"could not start: permission denied executing {program} (not executable, or a noexec filesystem)"
    return f"could not start: {program}: {exc.strerror or exc}"


# --- the running process -------------------------------------------------------------------------


class _LineSink:
    """Where `stream` sends lines: the caller's text streams (decoded) and the log (raw bytes)."""

    def __init__(self, log: BinaryIO, out: TextIO, err: TextIO) -> None:
        self._log = log
        self._targets = {"stdout": out, "stderr": err}
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def line(self, name: str, raw: bytes) -> None:
        text = _decoded(raw).rstrip("\r\n")
        with self._lock:
            self._log.write(raw if raw.endswith(b"\n") else raw + b"\n")
            self._log.flush()
            self._lines.append(text)
            # A closed terminal or pipe (`inv deploy | head`) must not stop the reading: the tool
            # would block on a full pipe. The log still gets every line.
            with contextlib.suppress(OSError, ValueError):
                target = self._targets[name]
                target.write(text + "\n")
                target.flush()

    def footer(self, text: str) -> None:
        with self._lock:
            self._log.write(f"# {text}\n".encode())
            self._log.flush()

    def combined(self) -> str:
        with self._lock:
            return "\n".join(self._lines)


class _Running:
    """One started process: its output pumps, its wait, and how its group is stopped."""

    def __init__(self, proc: subprocess.Popen[bytes], kill_grace: float) -> None:
        self.proc = proc
        # start_new_session makes the child the leader of a new group whose id is its pid. The
        # leader is reaped last, so that id cannot be reused while we may still signal it.
        self.pgid = proc.pid
        self.kill_grace = kill_grace
        self.interrupted = threading.Event()
        self._chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    def start_pumps(self, stdin: str | None, sink: _LineSink | None) -> list[threading.Thread]:
        pumps = []
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            assert pipe is not None
            pumps.append(threading.Thread(target=self._pump, args=(name, pipe, sink), daemon=True))
        if stdin is not None:
            assert self.proc.stdin is not None
            pumps.append(threading.Thread(target=_feed, args=(self.proc.stdin, stdin.encode()), daemon=True))
        for pump in pumps:
            pump.start()
        return pumps

    def _pump(self, name: str, pipe: IO[bytes], sink: _LineSink | None) -> None:
        chunks = self._chunks[name]
        with contextlib.suppress(OSError, ValueError):
            if sink is None:
                for block in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
                    chunks.append(block)
            else:
                for line in iter(pipe.readline, b""):
                    chunks.append(line)
                    sink.line(name, line)

    def leader_exited(self) -> bool:
        # WNOWAIT: see whether it ended without reaping it (the group id stays reserved).
        try:
            state = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return state is not None

    def wait(self, pumps: list[threading.Thread], deadline: float) -> str:
        """Until the process has exited and its output is read: "done", "timeout" or "interrupted"."""
        while True:
            for pump in pumps:
                pump.join(timeout=_POLL_SECONDS)
            if not any(p.is_alive() for p in pumps) and self.leader_exited():
                self.proc.wait()
                self._close_pipes(pumps)
                return "done"
            if self.interrupted.is_set():
                self.stop(pumps)
                return "interrupted"
            if time.monotonic() >= deadline:
                self.stop(pumps)
                return "timeout"

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def stop(self, pumps: list[threading.Thread]) -> None:
        """SIGTERM to the whole group, a grace period, SIGKILL, then reap."""
        self.signal_group(signal.SIGTERM)
        end = time.monotonic() + self.kill_grace
        try:
            while time.monotonic() < end and _group_alive(self.pgid, self):
                time.sleep(_POLL_SECONDS)
        finally:
            # Also when a second Ctrl-C cuts the grace period short.
            self.signal_group(signal.SIGKILL)
        drain_end = time.monotonic() + _DRAIN_SECONDS
        # SIGKILL takes effect when each process is next scheduled (late on a loaded machine):
        # return only once the group is gone, so a caller may remove what its tools were using.
        while time.monotonic() < drain_end and _group_alive(self.pgid, self):
            time.sleep(_POLL_SECONDS)
        for pump in pumps:
            pump.join(timeout=max(0.0, drain_end - time.monotonic()))
        self.proc.wait()
        self._close_pipes(pumps)

    def _close_pipes(self, pumps: list[threading.Thread]) -> None:
        # A pipe still being read (held open by a process that left the group) is left to the
        # daemon thread reading it: closing it under a blocked read would wait for that read.
        if any(p.is_alive() for p in pumps):
            return
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    @property
    def returncode(self) -> int:
        return self.proc.returncode

    def output(self) -> tuple[bytes, bytes]:
        return b"".join(self._chunks["stdout"]), b"".join(self._chunks["stderr"])


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.close()


def _group_alive(pgid: int, running: _Running) -> bool:
    """Whether any process of the group still runs (zombies do not count)."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return not running.leader_exited()
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


# --- interrupts ------------------------------------------------------------------------------------


class _LiveGroups:
    """Every command running in this process, so a signal can stop them all (any thread's)."""

    def __init__(self) -> None:
        # Reentrant: a second signal can run its handler inside the first one's, or inside
        # `track` in the main thread, while this lock is held there (a plain Lock deadlocked the
        # handler and left the tool's group running: two SIGTERMs a microsecond apart, as an
        # outer gateway's interrupt and stop send them).
        self._lock = threading.RLock()
        self._running: set[_Running] = set()
        self.handling_signal = False
        # How deep `stop_commands_on_signals` is nested (main thread only).
        self.handlers_depth = 0

    @contextlib.contextmanager
    def track(self, running: _Running) -> Iterator[None]:
        with self._lock:
            self._running.add(running)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(running)

    def interrupt_all(self) -> None:
        with self._lock:
            running = list(self._running)
        for item in running:
            item.interrupted.set()
            item.signal_group(signal.SIGTERM)


_LIVE = _LiveGroups()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _LIVE.handling_signal:
        return  # the handler this one interrupted stops the groups and raises
    _LIVE.handling_signal = True
    try:
        _LIVE.interrupt_all()
    finally:
        _LIVE.handling_signal = False
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stop_commands_on_signals() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM first stop every running command's process group.

    Only the main thread can install signal handlers; elsewhere, and where the program has its
    own handler for a signal, this changes nothing. Nested use is free.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    if _LIVE.handlers_depth == 0:
        defaults: dict[int, object] = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for signum, default in defaults.items():
            current = signal.getsignal(signum)
            if current is default:
                previous[signum] = current
                signal.signal(signum, _on_signal)
    _LIVE.handlers_depth += 1
    try:
        yield
    finally:
        _LIVE.handlers_depth -= 1
        for signum, handler in previous.items():
            signal.signal(signum, handler)
