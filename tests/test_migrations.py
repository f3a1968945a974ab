"""Upgrades keep data: the schema's migrations, on real SQLite and PostgreSQL.

A database "made before migrations" is made by the code that made them: firewatch/db.py as it
was at the last commit without migrations, read from the repository's history and run with
``create_all``.  A copy of those models (or a dump of their tables) in tests/ could drift from
what really ran, and would be a second copy of the models to keep; the commit cannot change.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from firewatch import accounts, db, migrations
from firewatch.migrations.options import OPTIONS

#: main's last commit before migrations: its models made every database until then
BEFORE_MIGRATIONS = "5ff3aff"
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "火警-值班-2026"
CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def old_models(tmp_path_factory) -> Iterator[ModuleType]:
    """firewatch/db.py as of :data:`BEFORE_MIGRATIONS`, imported as a module of its own.

    Needs the repository's history (a clone, not a shallow one or an unpacked sdist)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_MIGRATIONS}:firewatch/db.py"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout  # git's complaint, if any, on stderr
    path = tmp_path_factory.mktemp("old") / "db_before_migrations.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("db_before_migrations", path)
    module = importlib.util.module_from_spec(spec)
    # SQLAlchemy resolves the models' annotations through sys.modules
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    yield engine
    await engine.dispose()


async def fill_the_old_way(engine: AsyncEngine, old: ModuleType) -> None:
    """Tables by the old ``create_all``; an alarm, a ledger entry and accounts in them."""
    async with engine.begin() as conn:
        await conn.run_sync(old.Base.metadata.create_all)
    async with old.sessionmaker(engine).begin() as session:
        session.add(
            old.Institution(
                id="rongcheng-eldercare",
                name="荣成敬老院",
                type="eldercare",
                township="荣成镇",
                lat=30.1,
                lon=120.2,
                head_name="王芳",
                head_phone="13800000101",
                safety_officer_name="李强",
                safety_officer_phone="13800000102",
            )
        )
        await session.flush()  # the models have no relationships to order the inserts by
        session.add(
            old.Device(
                id="rc-btn-1",
                institution_id="rongcheng-eldercare",
                gateway_id="gw-rongcheng",
                kind="button",
                profile="alarm-button",
            )
        )
        await session.flush()
        session.add(
            old.Alarm(
                id=7,
                device_id="rc-btn-1",
                institution_id="rongcheng-eldercare",
                rule="button",
                title="一键报警",
                severity="critical",
                status="acknowledged",
                raised_at=datetime(2026, 11, 3, 2, 15, tzinfo=UTC),
                acknowledged_by="duty-rc",
            )
        )
        await session.flush()
        session.add(
            old.Hazard(
                id=3,
                institution_id="rongcheng-eldercare",
                township="荣成镇",
                category="evacuation",
                source="inspection",
                description="二楼安全出口被杂物堵塞",
                responsible_unit="荣成敬老院",
                responsible_person="赵强",
                responsible_phone="13800000202",
                deadline=datetime(2026, 12, 1, tzinfo=CST),
                alarm_id=7,
            )
        )
        password_hash = accounts.PASSWORDS.hash(PASSWORD)
        session.add(
            old.User(
                username="admin",
                display_name="县民政局管理员",
                role="admin",
                password_hash=password_hash,
            )
        )
        session.add(
            old.User(
                username="duty-rc",
                display_name="荣成值班员",
                role="staff",
                institution_id="rongcheng-eldercare",
                password_hash=password_hash,
            )
        )


async def test_a_database_made_before_migrations_keeps_its_alarm_ledger_and_accounts(
    engine,
    old_models,
):
    await fill_the_old_way(engine, old_models)

    await db.create_schema(engine)

    sessions = db.sessionmaker(engine)
    async with sessions() as session:
        alarm = await session.get(db.Alarm, 7)
        hazard = await session.get(db.Hazard, 3)
    assert (alarm.device_id, alarm.status, alarm.acknowledged_by) == (
        "rc-btn-1",
        "acknowledged",
        "duty-rc",
    )
    assert alarm.raised_at == datetime(2026, 11, 3, 2, 15, tzinfo=UTC)
    assert (hazard.description, hazard.alarm_id) == ("二楼安全出口被杂物堵塞", 7)
    assert hazard.deadline == datetime(2026, 12, 1, tzinfo=CST)
    hashing = accounts.PasswordWork()
    duty = await accounts.authenticate(sessions, hashing, "duty-rc", PASSWORD)
    assert (duty.role, duty.institution_id) == ("staff", "rongcheng-eldercare")
    assert await accounts.authenticate(sessions, hashing, "admin", PASSWORD) is not None


async def test_the_migrations_make_what_the_models_say(engine):
    """A model changed without a migration fails here: write the migration (see alembic.ini)."""
    await db.create_schema(engine)

    def differences(conn: sqlalchemy.Connection) -> list:
        return compare_metadata(MigrationContext.configure(conn, opts=OPTIONS), db.Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_services_starting_together_upgrade_the_database_once(engine):
    await asyncio.gather(*(db.create_schema(engine) for _ in range(3)))

    async with engine.connect() as conn:
        versions = (
            (await conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")))
            .scalars()
            .all()
        )
    assert versions == [migrations.head()]


async def test_a_database_that_is_not_the_old_schema_is_refused_and_left_alone(
    engine,
    old_models,
):
    await fill_the_old_way(engine, old_models)
    async with engine.begin() as conn:
        await conn.execute(sqlalchemy.text("ALTER TABLE users DROP COLUMN demo"))

    with pytest.raises(RuntimeError, match=r"lacks users\.demo of the first revision"):
        await db.create_schema(engine)

    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: sqlalchemy.inspect(c).get_table_names())
    assert "alembic_version" not in tables
    async with db.sessionmaker(engine)() as session:
        assert await session.scalar(select(db.Alarm.title).where(db.Alarm.id == 7)) == "一键报警"


def insert_at_the_first_revision(conn: sqlalchemy.Connection) -> None:
    """An alarm, its ledger entry, an account and a processed message, in the tables as the
    first revision made them (reflected from the database, not today's models)."""
    tables = sqlalchemy.MetaData()
    tables.reflect(conn)
    at = datetime(2026, 11, 3, 2, 15, tzinfo=UTC)
    rows = {
        "institutions": {
            "id": "rongcheng-eldercare",
            "name": "荣成敬老院",
            "type": "eldercare",
            "township": "荣成镇",
            "address": "荣成镇东街1号",
            "lat": 30.1,
            "lon": 120.2,
            "head_name": "王芳",
            "head_phone": "13800000101",
            "safety_officer_name": "李强",
            "safety_officer_phone": "13800000102",
        },
        "devices": {
            "id": "rc-btn-1",
            "institution_id": "rongcheng-eldercare",
            "gateway_id": "gw-rongcheng",
            "kind": "button",
            "profile": "alarm-button",
            "location": "一楼值班室",
            "state": "alarm",
            "state_reason": "按下",
            "last_readings": {},
            "last_flags": {"pressed": True},
            "last_seen": at,
            "updated_at": at,
        },
        "alarms": {
            "id": 7,
            "device_id": "rc-btn-1",
            "institution_id": "rongcheng-eldercare",
            "rule": "button",
            "title": "一键报警",
            "severity": "critical",
            "status": "acknowledged",
            "value": None,
            "set_point": None,
            "unit": "",
            "raised_at": at,
            "acknowledged_at": at,
            "acknowledged_by": "duty-rc",
            "ack_note": "已到场",
            "cleared_at": None,
        },
        "hazards": {
            "id": 3,
            "institution_id": "rongcheng-eldercare",
            "township": "荣成镇",
            "category": "evacuation",
            "source": "iot",
            "description": "二楼安全出口被杂物堵塞",
            "responsible_unit": "荣成敬老院",
            "responsible_person": "赵强",
            "responsible_phone": "13800000202",
            "deadline": datetime(2026, 12, 1, tzinfo=UTC),
            "status": "open",
            "device_id": "rc-btn-1",
            "rule": "button",
            "alarm_id": 7,
            "created_at": at,
            "updated_at": at,
        },
        "users": {
            "username": "duty-rc",
            "display_name": "荣成值班员",
            "role": "staff",
            "institution_id": "rongcheng-eldercare",
            "password_hash": accounts.PASSWORDS.hash(PASSWORD),
            "demo": False,
            "created_at": at,
        },
        "processed_messages": {
            "consumer": "alerts",
            "gateway_id": "gw-rongcheng",
            "seq": 41,
            "processed_at": at,
        },
    }
    for table, row in rows.items():
        conn.execute(tables.tables[table].insert(), row)


async def walked_from_the_first_revision(url: str) -> AsyncEngine:
    """The database at ``url`` made by the first migration, given data, then brought to the
    head as every service does on start; an engine on it, for the caller to dispose of."""
    async with migrations.locked(make_url(url)) as conn:
        await conn.run_sync(lambda c: command.upgrade(migrations.config(c), migrations.BASELINE))
        await conn.run_sync(insert_at_the_first_revision)
    engine = db.create_engine(url)
    await db.create_schema(engine)
    return engine


async def test_a_database_walked_from_the_first_migration_to_the_last_keeps_its_data(
    database_url,
):
    engine = await walked_from_the_first_revision(database_url)
    try:
        sessions = db.sessionmaker(engine)
        async with sessions() as session:
            alarm = await session.get(db.Alarm, 7)
            hazard = await session.get(db.Hazard, 3)
            device = await session.get(db.Device, "rc-btn-1")
            processed = (await session.scalars(select(db.ProcessedMessage))).all()
            version = await session.scalar(
                sqlalchemy.text("SELECT version_num FROM alembic_version")
            )
        duty = await accounts.authenticate(sessions, accounts.PasswordWork(), "duty-rc", PASSWORD)
    finally:
        await engine.dispose()
    assert version == migrations.head()
    assert (alarm.device_id, alarm.gateway_id, alarm.status, alarm.ack_note) == (
        "rc-btn-1",
        None,
        "acknowledged",
        "已到场",
    )
    assert alarm.raised_at == datetime(2026, 11, 3, 2, 15, tzinfo=UTC)
    assert (hazard.description, hazard.alarm_id, hazard.status) == (
        "二楼安全出口被杂物堵塞",
        7,
        "open",
    )
    assert (device.last_flags, device.last_stream, device.last_seq) == ({"pressed": True}, "", None)
    assert [(m.consumer, m.gateway_id, m.incarnation, m.seq) for m in processed] == [
        ("alerts", "gw-rongcheng", "", 41)
    ]
    assert (duty.role, duty.institution_id, duty.disabled) == (
        "staff",
        "rongcheng-eldercare",
        False,
    )
