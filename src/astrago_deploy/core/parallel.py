"""Running independent jobs (one per environment, one per chart) in a bounded thread pool.

A job's user error is collected, not raised, so one run reports every environment or chart
that failed; an OSError from a job (permission, disk full) is a user error too, translated to
`FileAccessError`. Anything else is a bug: it cancels the jobs not yet started, waits for the
running ones (none is left running unattended) and propagates with its traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from astrago_deploy.core.errors import AstragoError, file_error

T = TypeVar("T")


def run_jobs(
    jobs: Sequence[tuple[str, Callable[[], T]]], workers: int, name: str
) -> tuple[list[T], list[tuple[str, AstragoError]]]:
    """(results of the jobs that succeeded, in job order; (job name, error) of those that failed)."""
    bug = threading.Event()

    def guarded(run: Callable[[], T]) -> T:
        # Set by the failing job itself, so no worker starts another job after a bug, however
        # quickly it picks up the next one.
        if bug.is_set():
            raise _NotStarted
        try:
            return run()
        except (AstragoError, OSError):
            raise
        except BaseException:
            bug.set()
            raise

    results: list[T] = []
    failures: list[tuple[str, AstragoError]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
        futures: list[tuple[str, Future[T]]] = [(job, pool.submit(guarded, run)) for job, run in jobs]
        try:
            for job, future in futures:
                try:
                    results.append(future.result())
                except AstragoError as exc:
                    failures.append((job, exc))
                except OSError as exc:
                    failures.append((job, file_error(exc)))
                except _NotStarted:
                    continue
        except BaseException:
            # A bug or Ctrl-C: start nothing more; leaving the `with` waits for what runs.
            bug.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results, failures


class _NotStarted(Exception):
    """A job skipped because another one hit a bug; the bug is what propagates."""
