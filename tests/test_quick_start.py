"""The README's first quick-start command, as a user types it."""

from __future__ import annotations

import subprocess

from tests.support.deploy import ROOT


def test_scripts_up_passes_its_arguments_to_firewatch_up():
    """`scripts/up.sh --port 8001 --data-dir ...` as the README shows: the arguments reach
    `firewatch up`, not the virtualenv script it sources first."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "up.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: firewatch up" in done.stdout and "--data-dir" in done.stdout
