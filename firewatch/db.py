"""The relational store: institutions, device state, alarms, the hazard ledger, notices.

SQLite by default (one file under the data dir), PostgreSQL in production; SQLAlchemy's async
engine either way, and for the alert side's writes a synchronous one on a thread of its own
(:class:`Writer`).  Time series do not live here (see ``ingest``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    orm,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from firewatch import migrations
from firewatch.contract import utc_now

T = TypeVar("T")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in and out, also on SQLite (which stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        # SQLite keeps the wall-clock text without the offset: store UTC, or a deadline given
        # in +08:00 would come back eight hours late (and compare wrongly in SQL)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Institution(Base):
    __tablename__ = "institutions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    township: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(300), default="")
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    head_name: Mapped[str] = mapped_column(String(64))
    head_phone: Mapped[str] = mapped_column(String(32))
    safety_officer_name: Mapped[str] = mapped_column(String(64))
    safety_officer_phone: Mapped[str] = mapped_column(String(32))


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    profile: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16), default="offline")
    state_reason: Mapped[str] = mapped_column(Text, default="no data yet")  # alerts.rules.NO_DATA
    last_readings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_flags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    # where the last message applied stands in its gateway's stream ("gateway/incarnation",
    # seq): what orders a device's messages, not the gateway's clock, which can step back
    last_stream: Mapped[str] = mapped_column(String(100), default="")
    last_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
    # shielded (屏蔽) or in test (测试) until ``mode_until`` (firewatch.device_modes): its
    # alarms are recorded but told to nobody; past ``mode_until`` the mode is over even before
    # the alert service's sweep writes "normal" back
    mode: Mapped[str] = mapped_column(String(16), default="normal")
    mode_until: Mapped[datetime | None] = mapped_column(default=None)
    mode_reason: Mapped[str] = mapped_column(String(16), default="")
    mode_note: Mapped[str] = mapped_column(Text, default="")
    mode_by: Mapped[str] = mapped_column(String(64), default="")


ACTIVE_ALARM = ("active", "acknowledged")


class Alarm(Base):
    """One breach of one rule, or one incident of a ladder's condition (gas low rising to
    high: firewatch.profiles.Ladder), on one device, from raised to closed.

    For a ladder, ``rule``, ``title``, ``severity``, ``category``, ``value`` and ``set_point``
    are those of the highest level reached (they rise, never fall, while it is open); ``level``
    is the level in force now, which may have fallen below it.  The levels reached, each with
    its time, are ``alarm_levels`` rows.
    """

    __tablename__ = "alarms"
    __table_args__ = (
        # at most one open alarm per device and rule
        Index(
            "one_open_alarm",
            "device_id",
            "rule",
            unique=True,
            sqlite_where=text("status IN ('active', 'acknowledged')"),
            postgresql_where=text("status IN ('active', 'acknowledged')"),
        ),
        # and one open link fault per gateway (two alert replicas may both see it silent)
        Index(
            "one_open_link_alarm",
            "gateway_id",
            "rule",
            unique=True,
            sqlite_where=text("status IN ('active', 'acknowledged')"),
            postgresql_where=text("status IN ('active', 'acknowledged')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # a device's alarm names the device; a link fault (alerts.links) names its gateway instead
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id"), index=True, default=None
    )
    gateway_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    # the rule's HazardCategory ("" on an alarm from before ladders): with ``severity``, what
    # a notice's dispatch keys on
    category: Mapped[str] = mapped_column(String(32), default="")
    # the ladder's level in force now (a rule name); None: ``rule`` (a lone rule, or an alarm
    # from before ladders)
    level: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active")
    value: Mapped[float | None] = mapped_column(Float, default=None)
    set_point: Mapped[float | None] = mapped_column(Float, default=None)
    unit: Mapped[str] = mapped_column(String(16), default="")
    raised_at: Mapped[datetime] = mapped_column(default=utc_now)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), default=None)
    ack_note: Mapped[str | None] = mapped_column(Text, default=None)
    # what the person who confirmed it says it was (alerts.confirmation.Classification); NULL
    # for an alarm not yet confirmed, or confirmed before classifications existed (未分类)
    classification: Mapped[str | None] = mapped_column(String(16), default=None)
    cleared_at: Mapped[datetime | None] = mapped_column(default=None)
    # raised while its device was shielded or in test: recorded, told to nobody, no ledger
    # entry; ``released_at``: the mode ended with the alarm still open, so it was told then
    mode: Mapped[str | None] = mapped_column(String(16), default=None)
    released_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def current_level(self) -> str:
        """The rule whose level is in force now."""
        return self.level or self.rule


class AlarmLevel(Base):
    """A level an alarm reached: the one it was raised at, and each it rose to, with when."""

    __tablename__ = "alarm_levels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    set_point: Mapped[float | None] = mapped_column(Float, default=None)
    at: Mapped[datetime] = mapped_column(default=utc_now)


class AlarmEvent(Base):
    """An alarm's lifecycle (raised, acknowledged, cleared, closed): who, when and a note."""

    __tablename__ = "alarm_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    from_status: Mapped[str | None] = mapped_column(String(16), default=None)
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utc_now)


class DeviceModeEvent(Base):
    """The audit log of shielding and test mode: each start, end and early cancel, by whom."""

    __tablename__ = "device_mode_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    action: Mapped[str] = mapped_column(String(16), doc="start | end | cancel")
    mode: Mapped[str] = mapped_column(String(16), doc="shielded | test")
    reason: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    until: Mapped[datetime | None] = mapped_column(default=None)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utc_now)


class RuleState(Base):
    """A rule's memory between readings (running on/off delay, rate-of-rise samples).

    Kept in the database, in the transaction of the message that changed it, so a restart of
    the alert service neither restarts a delay nor forgets the history a rate is measured on.
    """

    __tablename__ = "rule_states"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    memory: Mapped[dict[str, Any]] = mapped_column()


class Hazard(Base):
    """An entry of the major-accident-hazard ledger (重大事故隐患台账)."""

    __tablename__ = "hazards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    township: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    responsible_unit: Mapped[str] = mapped_column(String(200))
    responsible_person: Mapped[str] = mapped_column(String(64))
    responsible_phone: Mapped[str] = mapped_column(String(32))
    deadline: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(32), default="reported")
    device_id: Mapped[str | None] = mapped_column(String(64), default=None)
    rule: Mapped[str | None] = mapped_column(String(64), default=None)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class HazardEvent(Base):
    """The audit trail of a ledger entry: every change, who made it, when, and why."""

    __tablename__ = "hazard_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hazard_id: Mapped[int] = mapped_column(ForeignKey("hazards.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    from_status: Mapped[str | None] = mapped_column(String(32), default=None)
    to_status: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(default=utc_now)


class EscalationStep(Base):
    """An escalation or reminder step taken (alarm to head or bureau, overdue, re-check due).

    One row per (subject, step, round), unique: what makes each step happen once, whether the
    scheduler fires it, a sweep catches it up after a restart, or two replicas race for it.
    """

    __tablename__ = "escalation_steps"
    __table_args__ = (UniqueConstraint("subject", "subject_id", "step", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(16), doc="alarm | hazard")
    subject_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime]
    taken_at: Mapped[datetime] = mapped_column(default=utc_now)


class Notice(Base):
    """A message to people, stored before it is sent and marked sent on the provider's OK."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"), default=None)
    institution_id: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(Text)
    body: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utc_now)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    #: what the provider calls the message (a voice call's CallId): its result is asked by it
    provider_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    #: a voice call's result: answered, unanswered (or no result in time), as the provider said
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    #: a voice call's place on the institution's call list (0: the duty person; past the list:
    #: the bureau), so an unanswered call goes to the next
    call_rank: Mapped[int | None] = mapped_column(Integer, default=None)


class DeadLetter(Base):
    """A message a consumer could not use, kept with the reason and the raw bytes."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(Text)
    #: the first 64 KiB of the payload (firewatch.consumer.MAX_STORED_PAYLOAD)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: the payload's length as received; more than ``len(payload)`` when it was cut
    payload_size: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text)
    #: "contract" for a payload refused at the door, else the exception type that set it aside
    reason_class: Mapped[str] = mapped_column(String(32), default="contract")
    # indexed for the retention's chunked deletes
    received_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)


class User(Base):
    """A person who logs in to the console; duty staff belong to one institution.

    ``demo`` marks the accounts `firewatch up` creates with the published demo password, which
    production mode refuses to run with.  A ``disabled`` account cannot log in, and the tokens
    it was given stop working (every request reads the account), as do those given before
    its password last changed (``token_generation``).
    """

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    institution_id: Mapped[str | None] = mapped_column(ForeignKey("institutions.id"), default=None)
    password_hash: Mapped[str] = mapped_column(String(256))
    demo: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # carried by each login token; a new password moves it on, which ends the older logins
    token_generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Marker(Base):
    """A decision about this installation that must outlive restarts, by name: e.g.
    ``demo-accounts-removed``, so that `firewatch up` never creates them again."""

    __tablename__ = "markers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utc_now)


class GatewayLink(Base):
    """What the alert service last heard of a gateway (巡检): the link's watch, for operators.

    ``last_heard_at``: receipt of its last message of any kind; ``last_heartbeat_at``: of its
    last heartbeat, whose ``ts`` (the gateway's clock) and ``outbox`` depth are kept too;
    ``clock_offset_s``: received - ts, least over a minute (positive: its clock is behind).
    ``state``: ``up``, ``down`` (a link fault alarm is open) or ``unknown`` (never heard).
    """

    __tablename__ = "gateway_links"

    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    last_heard_at: Mapped[datetime | None] = mapped_column(default=None)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    last_ts: Mapped[datetime | None] = mapped_column(default=None)
    clock_offset_s: Mapped[float | None] = mapped_column(Float, default=None)
    outbox: Mapped[int | None] = mapped_column(BigInteger, default=None)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    down_since: Mapped[datetime | None] = mapped_column(default=None)


class ServiceHeartbeat(Base):
    """An alert service replica saying it is alive, every few seconds: what the web process
    watches to tell the bureau that monitoring itself has stopped."""

    __tablename__ = "service_heartbeats"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(index=True)
    last_applied_at: Mapped[datetime | None] = mapped_column(default=None)
    notifier_looked_at: Mapped[datetime | None] = mapped_column(default=None)
    messages_applied: Mapped[int] = mapped_column(BigInteger, default=0)


class ProcessedMessage(Base):
    """(gateway, incarnation, seq) a consumer has applied: what makes redelivery harmless.

    A set, not a high-water mark: while the partition count changes, the old and the new
    partitions both hand a gateway's messages to the consumer, interleaved, and a high-water
    mark would then drop the late-comers.  The incarnation of the gateway's outbox is part of
    the key: a replaced outbox starts again at seq 1, a new stream whose numbers were never
    applied.
    """

    __tablename__ = "processed_messages"

    consumer: Mapped[str] = mapped_column(String(32), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "" for a gateway from before incarnations
    incarnation: Mapped[str] = mapped_column(String(16), primary_key=True, default="")
    # 64-bit: a busy gateway's sequence passes PostgreSQL's 32-bit INTEGER within months
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)


class ConsumerLease(Base):
    """Who holds a piece of a consumer's work (an alert partition, the escalation duty): the
    lease that lets replicas take over from one that went away (firewatch.leases).

    ``epoch`` grows by one with every new holder (the fencing token); ``renewals`` with every
    renewal, so that a contender sees a lease go stale on its own clock, not the holder's;
    ``wanted_by``: the replica whose home partition this is, asking for it back.
    """

    __tablename__ = "consumer_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), default=None)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    renewals: Mapped[int] = mapped_column(BigInteger, default=0)
    wanted_by: Mapped[str | None] = mapped_column(String(128), default=None)
    renewed_at: Mapped[datetime | None] = mapped_column(default=None)


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    # WAL lets the web app read while alerts write; NORMAL is durable in WAL mode against
    # process crashes, which is what a kill -9 test checks.
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def create_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


#: the synchronous driver for each async one, on the same database
SYNCHRONOUS_DRIVERS = {
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def synchronous_engine(engine: AsyncEngine) -> Engine:
    """The database of ``engine`` through a synchronous driver, for :class:`Writer`."""
    url = engine.url
    driver = SYNCHRONOUS_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"database URL {url.render_as_string(hide_password=True)}: no "
            f"synchronous driver known for {url.drivername!r}; use one of "
            f"{', '.join(SYNCHRONOUS_DRIVERS)}"
        )
    if url.drivername.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise ValueError(
            "an in-memory SQLite database is private to one connection; the "
            "alert service's writer needs a database file"
        )
    sync = sqlalchemy.create_engine(url.set(drivername=driver), pool_size=1)
    if sync.dialect.name == "sqlite":
        event.listen(sync, "connect", _sqlite_pragmas)
    return sync


class Writer:
    """A thread of its own, with a synchronous session on the database of ``sessions``.

    Through the async drivers every call into the database is a trip to another thread or a
    round of the event loop: aiosqlite runs each cursor step (open, execute, fetch, close) on
    its thread, ~50 hand-offs for the alert service's transaction of a few messages, and those
    hand-offs, not SQLite, were most of its CPU.  A transaction run here is one hand-off: 5.3
    -> 2.2 ms of CPU for a message applied alone on SQLite, 7.1 -> 3.1 ms for five.

    It is also the one writer of its process: on SQLite a second connection that wants to
    write while this one holds the lock polls for it (1, 2, 5, ... 100 ms sleeps) and, with
    the alert service's transactions back to back, the notifier's status writes waited
    15 ms at the median and up to a quarter of a second, holding up the next notice to the
    same robot.  Queued here, they wait for one transaction at most.

    The sessions are of the class the async sessions are configured with (read when the
    first transaction runs, after the services are wired), so that a change hub watching
    those sees these commits too (it hands them to its event loop: see firewatch.hub).
    """

    def __init__(self, sessions: async_sessionmaker, name: str) -> None:
        self._async_sessions = sessions
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._sessions: orm.sessionmaker | None = None
        self._closed = False

    async def run(self, work: Callable[[orm.Session], T]) -> T:
        """``work(session)`` in one transaction on the writer's thread; what it returns."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_thread, work)

    def _in_thread(self, work: Callable[[orm.Session], T]) -> T:
        if self._sessions is None:
            self._sessions = orm.sessionmaker(
                synchronous_engine(self._async_sessions.kw["bind"]),
                expire_on_commit=False,
                class_=self._async_sessions.kw.get("sync_session_class", orm.Session),
            )
        with self._sessions.begin() as session:
            return work(session)

    async def close(self) -> None:
        """Wait for the transaction under way, then close the connection and the thread."""
        if self._closed:
            return
        self._closed = True

        def dispose() -> None:
            if self._sessions is not None:
                self._sessions.kw["bind"].dispose()
                self._sessions = None

        await asyncio.get_running_loop().run_in_executor(self._thread, dispose)
        self._thread.shutdown(wait=False)

    async def __aenter__(self) -> Writer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


async def create_schema(engine: AsyncEngine) -> None:
    """The database of ``engine`` upgraded to the models' schema by its migrations.

    Every process runs this before it uses the database: serialised between processes and in
    one transaction (see :mod:`firewatch.migrations`), so start order does not matter.
    """
    await migrations.upgrade(engine.url)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
