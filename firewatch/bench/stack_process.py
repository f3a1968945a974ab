"""`firewatch up` in a child process for the benchmarks, so its CPU is not the benchmark's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from firewatch.mqtt import free_port
from firewatch.settings import Settings


@contextlib.contextmanager
def running_stack(site_file: Path, workdir: Path, env: dict[str, str],
                  timeout_s: float = 180) -> Iterator[httpx.Client]:
    """A stack on ``site_file`` without simulators; yields an API client logged in as admin.

    Its output goes to ``workdir/stack.log``, quoted when it fails to start.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per API request
    port = free_port()
    log_path = workdir / "stack.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "firewatch.cli", "up", "--port", str(port),
             "--data-dir", str(workdir / "data"), "--site", str(site_file), "--no-simulate"],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if api.get("/api/health").json()["status"] == "ok":
                    break
            time.sleep(0.1)
        reply = api.post("/api/auth/token",
                         data={"username": "admin", "password": Settings().demo_password})
        reply.raise_for_status()
        api.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
        yield api
    finally:
        api.close()
        process.terminate()
        process.wait(60)


async def wait_until_normal(api: httpx.Client, prefixes: tuple[str, ...],
                            timeout_s: float) -> None:
    """Until every device whose id starts with one of ``prefixes`` reports as normal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        devices = (await asyncio.to_thread(api.get, "/api/devices")).json()
        if all(d["state"] == "normal" for d in devices if d["id"].startswith(prefixes)):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"devices {prefixes} did not all report within {timeout_s:g} s")
