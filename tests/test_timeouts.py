"""The suite's own guard: a hanging test fails on its deadline instead of stalling the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT

HANGING = '''
import threading


def test_waits_for_what_never_comes():
    threading.Event().wait()
'''


def test_every_test_has_a_deadline(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert float(pytestconfig.getini("timeout")) == 600


def test_a_hanging_test_is_stopped_and_fails(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGING)
    environ = {**os.environ, "PYTEST_TIMEOUT": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(PROJECT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "-q", str(tmp_path / "test_hang.py")],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout (>2.0s) from pytest-timeout" in done.stdout
    assert "1 failed" in done.stdout
