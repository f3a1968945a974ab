"""Real servers from Debian's packages on free loopback ports, for tests and benchmarks.

Mosquitto (MQTT broker), VictoriaMetrics (takes InfluxDB v2 writes), InfluxDB 1.6 (answers
InfluxQL on /query) and PostgreSQL: between them every broker, InfluxDB and database code path
meets a real server (there is no InfluxDB 2 package).  scripts/test.sh installs them.
"""

from __future__ import annotations

import getpass
import glob
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from firewatch.db import SYNCHRONOUS_DRIVERS
from firewatch.mqtt import free_port


class Mosquitto:
    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError(
                "mosquitto is not installed: scripts/test.sh installs it "
                "(apt-get install mosquitto)"
            )
        self.binary = binary
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # started as root, mosquitto would drop to user mosquitto and lose the work dir
            f"user {getpass.getuser()}\n"
            f"persistence true\npersistence_location {workdir}/\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            # as in production (deploy/mosquitto/mosquitto.conf): the defaults (1,000 queued,
            # 20 in flight per client) drop messages for a consumer that falls behind, and cap
            # its batches at 20; and small messages go out at once, not after a delayed ACK
            "max_queued_messages 1000000\nmax_inflight_messages 1000\nset_tcp_nodelay true\n"
            + extra_config
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # e.g. the port taken since it was chosen
                raise RuntimeError(
                    f"mosquitto exited ({self.process.returncode}) on port {self.port}"
                )
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


class _Server:
    binary = ""
    package = ""

    def __init__(self, workdir: Path) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise RuntimeError(
                f"{self.binary} is not installed: scripts/test.sh installs it "
                f"(apt-get install {self.package})"
            )
        self.path = path
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.workdir / f"{self.binary}.log").open("wb")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ping", timeout=0.5).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.binary} did not answer on {self.url}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None


class VictoriaMetrics(_Server):
    binary = "victoria-metrics"
    package = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            self.path,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'vm-data'}",
            "-search.latencyOffset=0s",
            # VictoriaMetrics keeps samples with equal timestamps unless told to dedup;
            # InfluxDB overwrites them. Production VictoriaMetrics needs this flag too.
            "-dedup.minScrapeInterval=1ms",
        ]

    def export(self, match: str) -> list[dict]:
        """Every stored sample of the series matching ``match``, as JSON lines."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10)
        reply = httpx.get(f"{self.url}/api/v1/export", params={"match[]": match}, timeout=10)
        reply.raise_for_status()
        return [json.loads(line) for line in reply.text.splitlines() if line]


class InfluxDB1(_Server):
    binary = "influxd"
    package = "influxdb"

    def command(self) -> list[str]:
        config = self.workdir / "influxdb.conf"
        config.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{self.workdir}/meta"\n'
            f'[data]\n  dir = "{self.workdir}/data"\n  wal-dir = "{self.workdir}/wal"\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
        )
        return [self.path, "run", "-config", str(config)]

    def create_database(self, name: str) -> None:
        httpx.post(
            f"{self.url}/query", data={"q": f'CREATE DATABASE "{name}"'}, timeout=10
        ).raise_for_status()

    def write_lines(self, database: str, lines: list[str]) -> None:
        httpx.post(
            f"{self.url}/write",
            params={"db": database, "precision": "ms"},
            content="\n".join(lines),
            timeout=10,
        ).raise_for_status()


def _postgresql_bin_dir() -> Path:
    """Debian keeps the server programs under /usr/lib/postgresql/<version>/bin, off PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: scripts/test.sh installs it (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


class PostgreSQL:
    """A throwaway PostgreSQL cluster on a free port; a database of its own for each user.

    ``initdb`` and ``postgres`` refuse to run as root, and the tests (like CI) run as root here,
    so as root every server command runs as the ``postgres`` system user that Debian's package
    creates, in a temporary directory that user owns.

    ``durable=False`` (the tests) turns fsync off, which halves their run time: a test database
    need not survive a power cut.  A benchmark keeps PostgreSQL's defaults, as production does.
    """

    def __init__(self, durable: bool = False) -> None:
        self.bin = _postgresql_bin_dir()
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="firewatch-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, program: str, *args: str) -> str:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=60
        ).stdout

    @property
    def version(self) -> str:
        return self._run("postgres", "--version").strip()

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "firewatch",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "start",
        )

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy async URL."""
        name = f"firewatch_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "firewatch", name)
        return f"postgresql+asyncpg://firewatch@127.0.0.1:{self.port}/{name}"

    @staticmethod
    def synchronous(url: str) -> str:
        """The same database for a synchronous SQLAlchemy engine (psycopg), for a test to hold
        locks or count rows while the services under test run."""
        driver, _, rest = url.partition("://")
        return f"{SYNCHRONOUS_DRIVERS[driver]}://{rest}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
