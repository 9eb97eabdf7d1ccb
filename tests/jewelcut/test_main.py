"""`python -m jewelcut` is the `jewelcut` command where the package is only on the path."""

from __future__ import annotations

import subprocess
import sys

from jewelcut.settings import PROJECT_ROOT


def test_python_m_jewelcut_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jewelcut", "train", "fit", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: jewelcut train fit" in result.stdout
    assert "--time-budget-s" in result.stdout
