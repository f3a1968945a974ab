"""A throwaway PostgreSQL cluster from Debian's packages, on a free port, for the tests.

``initdb`` and ``postgres`` refuse to run as root, and the tests (like CI) run as root here, so
as root every server command runs as the ``postgres`` system user that Debian's package
creates, in a temporary directory that user owns.  Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from firewatch.mqtt import free_port


def _bin_dir() -> Path:
    """Debian keeps the server programs under /usr/lib/postgresql/<version>/bin, off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: scripts/test.sh installs it "
                           "(apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="firewatch-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "firewatch", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        # fsync off: a test database need not survive a power cut, and it halves the run time
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.dir / "server.log"), "-w", "start")

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy async URL."""
        name = f"test_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "firewatch", name)
        return f"postgresql+asyncpg://firewatch@127.0.0.1:{self.port}/{name}"

    @staticmethod
    def synchronous(url: str) -> str:
        """The same database for a synchronous SQLAlchemy engine (psycopg), for a test to hold
        locks or count rows while the services under test run."""
        return url.replace("postgresql+asyncpg://", "postgresql+psycopg://", 1)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
