"""Alembic's environment: what every migration command runs on (see firewatch.migrations).

Firewatch's start-up hands the connection over in ``config.attributes["connection"]``, already
in the locked transaction.  A developer's ``alembic`` command has none: it connects to
``FIREWATCH_DATABASE_URL`` (or the data dir's SQLite file) the same locked way.
"""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from firewatch import migrations
from firewatch.migrations.options import OPTIONS
from firewatch.settings import Settings


def run(connection: Connection) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_own_connection() -> None:
    async with migrations.locked(make_url(Settings().effective_database_url)) as conn:
        await conn.run_sync(run)


if context.config.attributes.get("connection") is not None:
    run(context.config.attributes["connection"])
else:
    if context.config.config_file_name is not None:
        logging.config.fileConfig(context.config.config_file_name)
    asyncio.run(run_on_own_connection())
