"""The `firewatch` command run as a user runs it: a process of its own, output captured."""

from __future__ import annotations

import os
import subprocess
import sys


def firewatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``firewatch ARGS`` with the test's environment and ``env`` on top; never raises on a
    failure, which is what several tests look at."""
    return subprocess.run(
        [sys.executable, "-m", "firewatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        env={**os.environ, **(env or {})},
    )
