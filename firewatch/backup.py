"""``firewatch backup`` / ``firewatch restore``: the state worth keeping, copied while it runs.

What a backup holds:

- the relational database (alarms, the hazard ledger, accounts, devices, notices): SQLite's
  file, copied by SQLite's online backup API (one step, under a read lock, so the copy is one
  consistent moment even while the stack writes); on PostgreSQL a ``pg_dump -Fc`` archive;
- the embedded time series (``timeseries.db``), by the same API, when the data dir has one.

What it leaves out, on purpose: the gateways' outboxes (``outbox-*.db``) and ingest's spools
(``ingest-spool*.db``).  They are queues of messages on their way, numbered by a per-file
sequence that consumers use to drop redeliveries.  A restored outbox would start numbering
again from where its copy stopped, while the restored database may already hold later numbers
(the two are never copied at the same instant): the gateway's next alarms would be dropped as
redeliveries.  A fresh outbox draws a new incarnation, a new stream nobody mistakes for a
replay.  The site file is the operator's (version it beside the deployment), not state.

``manifest.json`` says what was copied, when, by which Firewatch, at which Alembic revision.
A restore goes into a fresh or empty data dir (``--force`` replaces one that has data; stop the
stack first); the services upgrade the restored database on start, as always.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL, make_url

import firewatch
from firewatch import db, migrations
from firewatch.settings import Settings

MANIFEST = "manifest.json"
RELATIONAL = "firewatch.db"
PG_ARCHIVE = "firewatch.pgdump"
TIMESERIES = "timeseries.db"

Progress = Callable[[str], None]


class BackupError(Exception):
    """What was wrong, said so that the operator knows what to do."""


@dataclass
class Manifest:
    firewatch_version: str
    alembic_revision: str | None
    taken_at: str
    database: str  # "sqlite" or "postgresql"
    files: dict[str, str] = field(default_factory=dict)  # file in the backup: what it is

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        try:
            return cls(**json.loads((directory / MANIFEST).read_text()))
        except FileNotFoundError:
            raise BackupError(f"{directory} holds no {MANIFEST}: not a Firewatch backup") from None
        except (ValueError, TypeError) as exc:
            raise BackupError(f"{directory / MANIFEST} is damaged: {exc}") from None


def _url(settings: Settings) -> URL:
    return make_url(settings.effective_database_url)


def _libpq(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection options for pg_dump / pg_restore; the password in the environment, not in
    the command line every user of the machine can read."""
    args = ["-h", url.host or "localhost", "-p", str(url.port or 5432), "-d", url.database or ""]
    if url.username:
        args += ["-U", url.username]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run_pg(program: str, args: list[str], env: dict[str, str]) -> None:
    if shutil.which(program) is None:
        raise BackupError(
            f"{program} not found: install PostgreSQL's client programs "
            "(Debian: apt-get install postgresql-client), the same major version "
            "as the server or newer"
        )
    done = subprocess.run([program, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{program} failed: {done.stderr.strip()}")


def sqlite_copy(source: Path, target: Path) -> None:
    """``source`` copied to ``target`` by SQLite's online backup API: one consistent moment,
    whatever other connections write meanwhile (WAL readers do not block them)."""
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # pages=-1: all in one step, so it never restarts on a busy database
    finally:
        dst.close()
        src.close()


def _sqlite_revision(path: Path) -> str | None:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:  # a database from before migrations
            return None
    return row[0] if row else None


async def _pg_revision(url: URL) -> str | None:
    engine = db.create_engine(url.render_as_string(hide_password=False))
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(
                lambda c: sqlalchemy.inspect(c).has_table("alembic_version")
            ):
                return None
            return await conn.scalar(sqlalchemy.text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()


def backup(settings: Settings, dest: Path, progress: Progress) -> Manifest:
    """The data dir's state (and the database at ``settings``' URL) copied into ``dest``."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: give a new directory for the backup")
    url = _url(settings)
    if url.get_backend_name() == "sqlite":
        source = Path(url.database or "")
        if not source.is_file():
            raise BackupError(
                f"no database at {source}: give the stack's --data-dir (or FIREWATCH_DATABASE_URL)"
            )
    dest.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        firewatch.__version__, None, datetime.now(UTC).isoformat(), url.get_backend_name()
    )
    if manifest.database == "sqlite":
        progress(f"copying the relational database {source}…")
        sqlite_copy(source, dest / RELATIONAL)
        manifest.files[RELATIONAL] = "relational database (SQLite)"
        manifest.alembic_revision = _sqlite_revision(dest / RELATIONAL)
    elif manifest.database == "postgresql":
        progress(f"dumping PostgreSQL database {url.database} (pg_dump -Fc)…")
        manifest.alembic_revision = asyncio.run(_pg_revision(url))
        args, env = _libpq(url)
        _run_pg("pg_dump", ["-Fc", "--no-owner", "-f", str(dest / PG_ARCHIVE), *args], env)
        manifest.files[PG_ARCHIVE] = "relational database (pg_dump custom format)"
    else:
        raise BackupError(f"cannot back up a {manifest.database} database")
    series = settings.data_dir / TIMESERIES
    if settings.influx_url:
        progress("time series in InfluxDB: back them up with `influx backup`")
    elif series.is_file():
        progress(f"copying the time series {series}…")
        sqlite_copy(series, dest / TIMESERIES)
        manifest.files[TIMESERIES] = "time series (SQLite)"
    (dest / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, ensure_ascii=False))
    progress(f"backup in {dest} (revision {manifest.alembic_revision})")
    return manifest


def _check_revision(revision: str | None) -> None:
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(migrations.config()).get_revision(revision)
    except CommandError:
        raise BackupError(
            f"the backup is at database revision {revision}, which this Firewatch "
            f"({firewatch.__version__}) does not know: restore it with the "
            "version that took it, or a newer one"
        ) from None


async def _pg_has_tables(url: URL) -> bool:
    engine = db.create_engine(url.render_as_string(hide_password=False))
    try:
        async with engine.connect() as conn:
            return bool(await conn.run_sync(lambda c: sqlalchemy.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def restore(settings: Settings, source: Path, force: bool, progress: Progress) -> Manifest:
    """The backup in ``source`` put where ``settings`` keep their state."""
    manifest = Manifest.read(source)
    _check_revision(manifest.alembic_revision)
    url = _url(settings)
    if manifest.database != url.get_backend_name():
        raise BackupError(
            f"the backup holds a {manifest.database} database, and this "
            f"configuration uses {url.get_backend_name()}: set "
            "FIREWATCH_DATABASE_URL to match"
        )
    targets = {TIMESERIES: settings.data_dir / TIMESERIES}
    if manifest.database == "sqlite":
        targets[RELATIONAL] = Path(url.database or "")
    present = [
        str(targets[name]) for name in manifest.files if name in targets and targets[name].exists()
    ]
    if manifest.database == "postgresql" and asyncio.run(_pg_has_tables(url)):
        present.append(f"PostgreSQL database {url.database}")
    if present and not force:
        raise BackupError(
            f"{', '.join(present)} already hold data: restore into a fresh data "
            "dir (--data-dir), or stop the stack and give --force to replace it"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in manifest.files:
        if name == PG_ARCHIVE:
            progress(f"restoring PostgreSQL database {url.database} (pg_restore)…")
            args, env = _libpq(url)
            _run_pg(
                "pg_restore",
                [
                    "--no-owner",
                    "--exit-on-error",
                    "--single-transaction",
                    *(["--clean", "--if-exists"] if force else []),
                    *args,
                    str(source / PG_ARCHIVE),
                ],
                env,
            )
            continue
        target = targets[name]
        progress(f"restoring {target}…")
        for stale in (
            target,
            target.with_name(target.name + "-wal"),
            target.with_name(target.name + "-shm"),
        ):
            stale.unlink(missing_ok=True)  # a WAL left beside the old file would be replayed
        target.parent.mkdir(parents=True, exist_ok=True)
        sqlite_copy(source / name, target)
    progress(
        f"restored the backup of {manifest.taken_at} (revision "
        f"{manifest.alembic_revision}); start the stack: it upgrades the database"
    )
    return manifest
