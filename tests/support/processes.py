"""Firewatch services as real processes on a real Mosquitto and PostgreSQL, read as an operator
reads them (metrics, log lines); shared by the production-shape and the fault tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.publish
import pytest

from firewatch.bench.servers import Mosquitto
from firewatch.bench.stack_process import SCRAPE_TOKEN, Samples, scrape
from firewatch.mqtt import free_port
from tests.support.wecom import WeComServer


class Service:
    """One `firewatch <service>` process; its log (stderr) and its output (stdout) in files."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.metrics_port = free_port()
        self.port = int(env.get("FIREWATCH_PORT", self.metrics_port))
        self.log = workdir / f"{name}.log"
        env = {
            **os.environ,
            **env,
            "FIREWATCH_METRICS_PORT": str(self.metrics_port),
            "FIREWATCH_LOG_FORMAT": "json",
            "FIREWATCH_METRICS_TOKEN": SCRAPE_TOKEN,
        }
        with self.log.open("wb") as log, (workdir / f"{name}.out").open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "firewatch.cli", *command], env=env, stdout=out, stderr=log
            )

    def metrics(self) -> Samples:
        return scrape(f"http://127.0.0.1:{self.port}/metrics", timeout_s=5)

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for (metric, pairs), value in self.metrics().items()
            if metric == name and set(labels.items()) <= set(pairs)
        )

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def kill_running(services: Iterable[Service]) -> None:
    """What a test leaves running when it ends early."""
    for service in services:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(10)


def until(
    predicate: Callable[[], bool], what: str, services: list[Service], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            if service.process.poll() is not None:
                raise AssertionError(f"{service.name} exited:\n{service.log.read_text()[-3000:]}")
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    logs = "\n".join(f"--- {s.name}\n{s.log.read_text()[-1500:]}" for s in services)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def robot() -> Iterator[WeComServer]:
    with WeComServer() as server:
        yield server


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database(postgres) -> str:
    return postgres.new_database()


def press(broker: Mosquitto, button: str) -> None:
    """What a one-key alarm button itself sends when pressed (its profile's uplink)."""
    paho.mqtt.publish.single(
        f"devices/{button}/up",
        json.dumps({"alarm": 1, "bat": 3.6}),
        qos=1,
        hostname="127.0.0.1",
        port=broker.port,
    )
