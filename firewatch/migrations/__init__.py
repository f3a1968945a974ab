"""The relational schema's history: Alembic migrations, run by every process on start.

``versions/`` holds one migration per change of the models in :mod:`firewatch.db`; the first
(:data:`BASELINE`) is the schema as ``create_all`` made it before Firewatch had migrations.
`firewatch up`, each service and ``firewatch user`` upgrade the database to the newest revision
before they use it (:func:`upgrade`), in one transaction that also holds the schema lock:

- PostgreSQL: an advisory lock, so services started together against one database take turns,
  and the second finds the work done instead of running a migration twice; DDL is
  transactional there, so a migration that fails leaves the database as it was.
- SQLite: the database's write lock, taken by ``BEGIN IMMEDIATE`` on a connection whose driver
  does not commit by itself before DDL (pysqlite's default), for the same two reasons.  Foreign
  keys are off on that connection, as SQLite's rebuild of a table in batch mode needs (dropping
  a referenced table would delete through them), and checked once the migrations have run.

A database made before migrations existed (tables, no ``alembic_version``) is recognised,
checked against the baseline and stamped at it, then upgraded like any other.

The configuration is made here, not read from a file, so that an installed wheel migrates with
what it ships; the repository's alembic.ini is only for developers writing the next migration.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

#: the first revision: the schema of the models before Firewatch had migrations
BASELINE = "0001"

#: any constant; PostgreSQL advisory locks are named by a number
SCHEMA_LOCK = 0x46697265


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for migrations run on ``connection`` (see ``env.py``)."""
    cfg = Config()
    cfg.set_main_option("script_location", "firewatch:migrations")
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The newest revision."""
    return ScriptDirectory.from_config(config()).get_current_head()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # no implicit BEGIN (nor COMMIT) from the driver: ours below, around the DDL too
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.asynccontextmanager
async def locked(url: URL) -> AsyncIterator[AsyncConnection]:
    """A connection to ``url``, in a transaction that holds the schema lock; commits on exit.

    On an engine of its own, so that the SQLite settings above stay off the application's.
    """
    if url.drivername.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise ValueError(
            "an in-memory SQLite database is private to one connection; "
            "migrations need a database file"
        )
    engine = create_async_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            yield conn
    finally:
        await engine.dispose()


async def upgrade(url: URL) -> None:
    """The database at ``url`` brought to the newest revision (see the module's docstring).

    Alembic keeps the migration under way in module globals (``alembic.context``, ``op``):
    a process upgrades one database at a time, as Firewatch's processes do at start.
    """
    async with locked(url) as conn:
        await conn.run_sync(_upgrade)


def _upgrade(conn: Connection) -> None:
    if MigrationContext.configure(conn).get_current_revision() == head():
        return
    cfg = config(conn)
    tables = set(sqlalchemy.inspect(conn).get_table_names())
    if "alembic_version" not in tables and tables & set(baseline := baseline_columns()):
        log.info(
            "the database was made before migrations: checking it against revision %s "
            "and marking it as that revision",
            BASELINE,
        )
        _adopt(conn, baseline)
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(
                f"the migrations left rows whose foreign keys point nowhere "
                f"(table, rowid, parent, key): {broken[:10]}"
            )


def baseline_columns() -> dict[str, set[str]]:
    """Each table of the baseline revision and its columns' names.

    Read from the baseline migration itself, run on a throwaway in-memory SQLite database.
    """
    with sqlalchemy.create_engine("sqlite://").connect() as conn:
        command.upgrade(config(conn), BASELINE)
        inspector = sqlalchemy.inspect(conn)
        return {
            table: {column["name"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names()
            if table != "alembic_version"
        }


def _adopt(conn: Connection, baseline: dict[str, set[str]]) -> None:
    """Refuse a database without a revision unless it has the baseline's tables and columns.

    Such a database was made by ``create_all`` before migrations existed, which made every
    table it lacked; anything missing means it is something else, and stamping it would let
    the next migrations fail half-way or, worse, run on the wrong data.
    """
    inspector = sqlalchemy.inspect(conn)
    tables = set(inspector.get_table_names())
    missing = [table for table in sorted(baseline) if table not in tables]
    missing += [
        f"{table}.{column}"
        for table in sorted(baseline)
        if table in tables
        for column in sorted(baseline[table] - {c["name"] for c in inspector.get_columns(table)})
    ]
    if missing:
        raise RuntimeError(
            f"the database has Firewatch's tables but no migration revision, and "
            f"lacks {', '.join(missing)} of the first revision: not upgrading it"
        )
