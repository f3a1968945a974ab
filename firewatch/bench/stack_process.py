"""The system under test in child processes, so its CPU is not the benchmark's.

Two shapes: `firewatch up` (everything in one process, as on a laptop) and the production
shape, `firewatch alerts`, `ingest` and `gateway` each in a process of its own on the shared
broker, as docker-compose runs them.  Either way the benchmark reads the services' counts from
their Prometheus ``/metrics``, as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from firewatch.mqtt import free_port
from firewatch.settings import Settings

SERVICES = ("alerts", "ingest", "gateway")
#: the children's FIREWATCH_METRICS_TOKEN: the web port's /metrics is for admins or this token
SCRAPE_TOKEN = secrets.token_urlsafe(32)


@contextlib.contextmanager
def _child(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """``firewatch <args>`` with its output in ``log_path``; SIGTERM (a clean stop) at the end.

    One that stopped by itself meanwhile is reported with the end of its output, which the
    benchmark's temporary directory would otherwise take with it.
    """
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "firewatch.cli", *args],
            env={**os.environ, "FIREWATCH_METRICS_TOKEN": SCRAPE_TOKEN, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stopped = process.poll()
        process.terminate()
        process.wait(60)
        if stopped is not None:
            raise RuntimeError(
                f"firewatch {args[0]} stopped by itself (exit code {stopped}):\n"
                f"{log_path.read_text(errors='replace')[-3000:]}"
            )


def _answers(url: str) -> bool:
    # the web app's /metrics wants the token; the other services' ignore it
    return httpx.get(url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).is_success


def _until_up(
    process: subprocess.Popen, ready: Callable[[], bool], log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log_path.stem} did not start:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if ready():
                return
        time.sleep(0.1)


@contextlib.contextmanager
def running_stack(
    site_file: Path, workdir: Path, env: dict[str, str], timeout_s: float = 180
) -> Iterator[httpx.Client]:
    """A stack on ``site_file`` without simulators; yields an API client logged in as admin.

    Its output goes to ``workdir/stack.log``, quoted when it fails to start.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per API request
    port = free_port()
    log_path = workdir / "stack.log"
    args = [
        "up",
        "--port",
        str(port),
        "--data-dir",
        str(workdir / "data"),
        "--site",
        str(site_file),
        "--no-simulate",
    ]
    with (
        _child(args, env, log_path) as process,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
    ):
        _until_up(
            process, lambda: api.get("/api/health").json()["status"] == "ok", log_path, timeout_s
        )
        reply = api.post(
            "/api/auth/token", data={"username": "admin", "password": Settings().demo_password}
        )
        reply.raise_for_status()
        api.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
        yield api


@contextlib.contextmanager
def running_services(
    site_file: Path,
    workdir: Path,
    env: dict[str, str],
    timeout_s: float = 180,
    services: Sequence[tuple[str, str, dict[str, str]]] = tuple((s, s, {}) for s in SERVICES),
) -> Iterator[dict[str, str]]:
    """The production shape on ``site_file`` (no simulators, a broker in ``env``); yields each
    service's ``/metrics`` URL by name once every one of them serves its metrics.

    ``services``: (name, `firewatch` command, environment of its own) of each process, started
    in that order (the alert service first: it writes the site into the database).  They share
    the data dir, so the alert service and ingest's dead letters share one SQLite database, as
    they share PostgreSQL in production.  The web app serves its metrics on its own port.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name, command, own_env in services:
            port, log_path = free_port(), workdir / f"{name}.log"
            process = stack.enter_context(
                _child(
                    [command],
                    {
                        **env,
                        **own_env,
                        "FIREWATCH_METRICS_PORT": str(port),
                        "FIREWATCH_PORT": str(port),
                        "FIREWATCH_INSTANCE": f"bench-{name}",
                        "FIREWATCH_SITE_FILE": str(site_file),
                        "FIREWATCH_DATA_DIR": str(workdir / "data"),
                        "FIREWATCH_SIMULATE": "false",
                    },
                    log_path,
                )
            )
            url = f"http://127.0.0.1:{port}/metrics"
            _until_up(process, partial(_answers, url), log_path, timeout_s)
            urls[name] = url
        yield urls


#: a ``/metrics`` page: each sample's value by (name, its labels sorted)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout_s: float = 30) -> Samples:
    """What one ``/metrics`` gives, for the benchmarks and the tests that read a service as an
    operator would (with the scrape token Prometheus would give the web port)."""
    reply = httpx.get(url, timeout=timeout_s, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    reply.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


async def wait_until_normal(api: httpx.Client, prefixes: tuple[str, ...], timeout_s: float) -> None:
    """Until every device whose id starts with one of ``prefixes`` reports as normal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        devices = (await asyncio.to_thread(api.get, "/api/devices")).json()
        if all(d["state"] == "normal" for d in devices if d["id"].startswith(prefixes)):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"devices {prefixes} did not all report within {timeout_s:g} s")
