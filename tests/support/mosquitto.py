"""A real Mosquitto broker on a free loopback port, for the tests that need one."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from firewatch.mqtt import free_port


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError(
                "mosquitto is not installed: scripts/test.sh installs it (apt-get install mosquitto)"
            )
        self.binary = binary
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # started as root, mosquitto would drop to user mosquitto and lose the work dir
            f"user {getpass.getuser()}\n"
            f"persistence true\npersistence_location {workdir}/\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            # as in production: the defaults (1,000 queued, 20 in flight per client) drop
            # messages for a consumer that falls behind, and cap its batches at 20
            "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
