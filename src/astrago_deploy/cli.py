"""Where errors become one-line user messages, and how tasks find the repository.

`user_errors` wraps every task: an `AstragoError` ends the task with `invoke.Exit` carrying
its message (exit 1), and so does an `OSError` escaping a task (permission denied, disk full),
as one line naming the file; anything else is a bug and keeps its traceback. While a task runs,
Ctrl-C and SIGTERM first stop the process group of every tool it is running (worker threads'
too). With invoke's `--debug` (or `ASTRAGO_DEBUG=1`) the traceback of a user error is printed
too.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit

from astrago_deploy.core.command import stop_commands_on_signals
from astrago_deploy.core.errors import AstragoError, file_error
from astrago_deploy.core.layout import RepoLayout

P = ParamSpec("P")
R = TypeVar("R")


def debug_enabled() -> bool:
    return os.environ.get("ASTRAGO_DEBUG") == "1" or logging.getLogger().isEnabledFor(logging.DEBUG)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if debug_enabled():
            # The post-renderer runs under helm, in its own process: tell it too.
            os.environ["ASTRAGO_DEBUG"] = "1"
        try:
            with stop_commands_on_signals():
                return func(*args, **kwargs)
        except AstragoError as exc:
            if debug_enabled():
                traceback.print_exc()
            raise Exit(f"error: {exc}", code=1) from None
        except OSError as exc:
            if debug_enabled():
                traceback.print_exc()
            raise Exit(f"error: {file_error(exc)}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def layout_of(ctx: Context) -> RepoLayout:
    """The repository the task runs on: `tasks.py`'s folder, or `ASTRAGO_ROOT`."""
    root: Any = os.environ.get("ASTRAGO_ROOT") or ctx.config.get("astrago", {}).get("root")
    if not root:
        root = Path.cwd()
    return RepoLayout.at(root)


def say(message: str) -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
