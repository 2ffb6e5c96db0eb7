"""The code stays ruff-clean: CI runs this with the rest of the suite."""

from __future__ import annotations

import subprocess
import sys

from orchestration.settings import PROJECT_ROOT


def test_ruff_finds_nothing() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
