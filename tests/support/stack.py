"""A whole Firewatch stack (`firewatch up`) in a child process, as a user would start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from firewatch.mqtt import free_port
from tests.support.auth import login


class Stack:
    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, "FIREWATCH_MQTT_EMBEDDED_PORT": str(free_port()), **(env or {})}
        self.args = args  # more `firewatch up` arguments (--site, --no-simulate)
        self.process: subprocess.Popen | None = None
        self.log = data_dir / "stack.log"
        self.api = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 120, status: str = "ok") -> None:
        """Start ``firewatch up`` and wait until its health says ``status`` (``degraded``: a
        stack started with a part broken on purpose)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "firewatch.cli",
                    "up",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_until(
            lambda: self.get("/api/health")["status"] == status,
            timeout,
            "the stack to answer /api/health",
        )
        login(self.api, "admin")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(30)
        self.process = None
        return code

    def get(self, path: str, **params: Any) -> Any:
        reply = self.api.get(path, params=params)
        reply.raise_for_status()
        return reply.json()

    def simulate(self, device_id: str, scenario: str) -> subprocess.CompletedProcess:
        """Drive a simulator through the CLI, as a tester does."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "firewatch.cli",
                "simulate",
                "trigger",
                device_id,
                scenario,
                "--port",
                str(self.port),
            ],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
        )

    def wait_until(self, predicate, timeout: float, what: str) -> float:
        """Poll ``predicate`` until true; returns the seconds it took."""
        start = time.monotonic()
        last_error: Exception | None = None
        while time.monotonic() - start < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the stack exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            try:
                if predicate():
                    return time.monotonic() - start
            except (httpx.HTTPError, KeyError, IndexError) as exc:
                last_error = exc
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what} "
            f"(last error: {last_error})\n{self.log.read_text()[-3000:]}"
        )

    def device(self, device_id: str) -> dict[str, Any]:
        return next(d for d in self.get("/api/devices") if d["id"] == device_id)
