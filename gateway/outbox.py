"""The gateway's durable outbox: nothing read from a device is lost while the broker is away.

Every message is written to SQLite before it is published and deleted only after the broker
acknowledged it (QoS 1 PUBACK).  The row id is the message's sequence number: AUTOINCREMENT
never reuses an id, even after deletes and restarts, so sequence numbers increase for the life
of the outbox file.  The file also holds its *incarnation*, an id drawn when it is created (or
first opened by a gateway that knows of incarnations): a replaced outbox (new SD card, reflash)
starts again at seq 1 under a new incarnation, and consumers, which drop redeliveries by
(gateway id, incarnation, seq), take it for the new stream it is rather than for a replay.

Writes are group commits.  Every poll that finishes while a commit is under way (or, when
polls come thick and fast, within ``BUSY_COMMIT_WAIT_S`` of the last one) joins the next
commit, and all of them share one future that is resolved only once that transaction is on
disk: nothing is published, or acknowledged to anyone, before it is durable.  The database is
worked on by one thread of its own, one call per commit, and a batch is one multi-row INSERT,
which is a transaction by itself.  Why: Python's sqlite3 gives up and takes back the
interpreter lock around every statement step, and each time the writer wants it back while the
polling thread is busy it waits through a string of context switches; with a step per row, or
a commit per poll, that cost several times the insert itself.

The outbox is bounded.  At the bound routine messages are shed, oldest first, each drop
counted by kind and logged: after a long broker outage the freshest readings matter most to
duty staff.  What is never shed is what an alarm may hang on: device events, and reading
batches that carry a raised status bit (a pressed button, the device's own alarm or fault) or a
reading at an alarm rule's set point (see :class:`Keep`).  Whether a row is such a one is
worked out only when the outbox is full (a ``keep`` column, NULL until then), so a poll costs
no more while the broker is there.  An outbox holding nothing but such messages grows past its
bound rather than lose one; that is logged.  Messages the publisher has in flight are not
dropped either (they may be acknowledged a moment later, and would then be counted dropped yet
delivered), so the outbox can exceed its bound by one publish batch.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from firewatch.contract import (
    EVENTS_PREFIX,
    HEARTBEATS_PREFIX,
    READINGS_PREFIX,
    DeviceEvent,
    GatewayHeartbeat,
    ReadingBatch,
    message_topic,
)

log = logging.getLogger(__name__)

Message = ReadingBatch | DeviceEvent | GatewayHeartbeat
Row = tuple[int, str, bytes]
T = TypeVar("T")

#: rows per INSERT statement: 3 parameters each, far below SQLite's 32,766 per statement
ROWS_PER_INSERT = 1000
#: A commit of this many messages or more means polls are coming thick and fast (catching up,
#: or polling flat out): the next commit then waits ``BUSY_COMMIT_WAIT_S`` to take more of them
#: at once.  Flat out at 1,000 devices, waiting 0.05 s cost ~6 µs less CPU per poll than
#: 0.02 s.  At the field's pace (1,000 devices at 1 s: a poll a millisecond, a few per commit)
#: no commit waits, so a button press is never held back by it.
BUSY_COMMIT_ROWS = 20
BUSY_COMMIT_WAIT_S = 0.05
#: a commit that fails (disk full, I/O error) is tried again this many times, after 0.1 s,
#: 0.2 s, ...: a full disk may be freed by the log rotation, a bad sector will not heal
COMMIT_RETRIES = 3


@functools.lru_cache(maxsize=ROWS_PER_INSERT)
def _insert_sql(rows: int) -> str:
    return "INSERT INTO outbox (seq, topic, payload) VALUES " + ",".join(["(?,?,?)"] * rows)


def kind_of(topic: str) -> str:
    """What a row is, for counting drops: reading, event or heartbeat."""
    for prefix, kind in (
        (READINGS_PREFIX, "reading"),
        (EVENTS_PREFIX, "event"),
        (HEARTBEATS_PREFIX, "heartbeat"),
    ):
        if topic.startswith(prefix + "/"):
            return kind
    return "other"


class Keep:
    """Which messages a full outbox never sheds: device events, and reading batches carrying a
    raised status bit or a reading at or above the set point (less the hysteresis) of one of
    the device's ``above`` alarm rules, as the site sets them.  Heartbeats and routine readings
    are shed.  A row that cannot be read is kept: not knowing is no reason to lose it."""

    def __init__(self, thresholds: Mapping[str, Mapping[str, float]] | None = None) -> None:
        #: device id -> reading name -> the lowest value that matters to an alarm
        self.thresholds = thresholds or {}

    def __call__(self, topic: str, payload: bytes) -> bool:
        kind = kind_of(topic)
        if kind in ("heartbeat", "reading"):
            try:
                return kind == "reading" and self._matters(
                    topic.rpartition("/")[2], json.loads(payload)
                )
            except Exception:
                return True
        return True

    def _matters(self, device_id: str, batch: dict[str, Any]) -> bool:
        if any(value is True for value in batch.get("flags", {}).values()):
            return True
        readings = batch.get("readings", {})
        return any(
            readings.get(name, -float("inf")) >= low
            for name, low in self.thresholds.get(device_id, {}).items()
        )


class Outbox:
    def __init__(
        self,
        path: Path,
        max_messages: int = 1_000_000,
        keep: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        """``keep(topic, payload)``: whether a message must never be shed (default: Keep())."""
        self.path = path
        self.max_messages = max_messages
        self.keep = keep or Keep()
        #: messages dropped, by kind (reading, heartbeat; "unstored": a commit that failed)
        self.dropped_by_kind: Counter[str] = Counter()
        #: the outbox file's incarnation, known once open
        self.incarnation = ""
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._next_seq = 1
        self._size = 0
        self._in_flight_to = 0  # messages up to this seq are being published
        #: rows from this seq on may not have been judged (keep NULL); None: all were
        self._unjudged_from: int | None = 0
        self._over_bound_logged = False
        self._lock = asyncio.Lock()  # one statement sequence on the connection at a time
        self._has_messages = asyncio.Event()
        #: rows waiting for the next commit, flat (seq, topic, payload, seq, ...): the writer
        #: thread binds them as they are, with no per-row list building while it holds the GIL
        self._pending: list[int | str | bytes] = []
        self._pending_stored: asyncio.Future[None] | None = None  # one for the whole batch
        self._committer: asyncio.Task[None] | None = None

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "outbox not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._next_seq, self._size, self.incarnation = await self._in_thread(self._open)
        log.info(
            "outbox %s: incarnation %s, next seq %d", self.path, self.incarnation, self._next_seq
        )
        if self._size:
            self._has_messages.set()
            log.info("outbox %s: %d messages waiting from before", self.path, self._size)

    def _open(self) -> tuple[int, int, str]:
        db = self._db = sqlite3.connect(self.path, isolation_level=None)  # transactions: ours
        # a new outbox only (an existing one keeps its pages): a 16 KiB page takes ~40 batches,
        # and a group commit of 900 batches cost ~25% less CPU per batch than on 4 KiB pages
        db.execute("PRAGMA page_size=16384")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # keep: 1 never shed, 0 shed first, NULL not judged yet (see Keep)
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,"
            " keep INTEGER)"
        )
        if "keep" not in {column[1] for column in db.execute("PRAGMA table_info(outbox)")}:
            db.execute("ALTER TABLE outbox ADD COLUMN keep INTEGER")  # an outbox from before
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # drawn once per file: a new file (or one from before incarnations) gets its own
        db.execute("INSERT OR IGNORE INTO meta VALUES ('incarnation', ?)", (secrets.token_hex(8),))
        incarnation = db.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()[0]
        db.create_function("keep", 2, self._judge, deterministic=True)
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        size = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return (row[0] if row else 0) + 1, size, incarnation

    def _judge(self, topic: str, payload: bytes) -> int:
        """SQLite's ``keep(topic, payload)``: an exception must not escape into SQLite."""
        try:
            return int(bool(self.keep(topic, payload)))
        except Exception:
            return 1

    async def close(self) -> None:
        if self._committer is not None:  # what was accepted reaches the disk first
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._thread is not None:
            if self._db is not None:
                await self._in_thread(self._db.close)
                self._db = None
            self._thread.shutdown()
            self._thread = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_kind.values())

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest message ever stored (0 if none)."""
        return self._next_seq - 1

    def submit(self, build: Callable[[int], tuple[str, bytes]]) -> asyncio.Future[None]:
        """Queue the (topic, payload) ``build(seq)`` makes with the next sequence number.

        The future is done once the message is committed (or failed to be).  Submissions that
        arrive while a commit is under way are committed together in the next one, and share
        its future: await it through ``asyncio.shield`` so that a cancelled waiter does not
        cancel it for the others.
        """
        assert self._thread is not None, "outbox not open"
        topic, payload = build(self._next_seq)  # what cannot be built takes no number
        self._pending += (self._next_seq, topic, payload)
        self._next_seq += 1
        if self._pending_stored is None:
            self._pending_stored = asyncio.get_running_loop().create_future()
            if self._committer is None or self._committer.done():
                self._committer = asyncio.create_task(self._commit_pending())
        return self._pending_stored

    async def put(self, build: Callable[[int], Message]) -> Message:
        """Store the message ``build(seq)`` makes with the next sequence number; return it
        once it is committed."""
        built: list[Message] = []

        def topic_and_payload(seq: int) -> tuple[str, bytes]:
            built.append(build(seq))
            return message_topic(built[0]), built[0].to_bytes()

        await asyncio.shield(self.submit(topic_and_payload))
        return built[0]

    async def _commit_pending(self) -> None:
        while self._pending:
            batch, stored = self._pending, self._pending_stored
            self._pending, self._pending_stored = [], None
            assert stored is not None
            rows = len(batch) // 3
            try:
                dropped = await self._commit(batch)
            except Exception as exc:
                self.dropped_by_kind["unstored"] += rows
                log.error(
                    "outbox %s: %d messages could not be stored after %d tries, %d lost in all: %s",
                    self.path,
                    rows,
                    COMMIT_RETRIES + 1,
                    self.dropped_by_kind["unstored"],
                    exc,
                )
                if not stored.done():  # done: cancelled by a waiter that did not shield it
                    stored.set_exception(exc)
                continue
            self._size += rows - len(dropped)
            if dropped:
                self._count_dropped(dropped)
            if not stored.done():
                stored.set_result(None)
            self._has_messages.set()
            if rows >= BUSY_COMMIT_ROWS:
                await asyncio.sleep(BUSY_COMMIT_WAIT_S)

    async def _commit(self, batch: list[int | str | bytes]) -> list[str]:
        """Insert ``batch``, shedding what the bound asks; the topics of the rows dropped."""
        attempt = 0
        while True:
            try:
                async with self._lock:
                    overflow = self._size + len(batch) // 3 - self.max_messages
                    return await self._in_thread(
                        self._insert, batch, max(overflow, 0), self._in_flight_to
                    )
            except sqlite3.Error as exc:
                if attempt == COMMIT_RETRIES:
                    raise
                log.warning("outbox %s: commit failed (%s); trying again", self.path, exc)
                await asyncio.sleep(0.1 * 2**attempt)
                attempt += 1

    def _count_dropped(self, topics: list[str]) -> None:
        kinds = Counter(map(kind_of, topics))
        self.dropped_by_kind.update(kinds)
        log.warning(
            "outbox %s full (%d messages): shed the oldest routine messages (%s), %d dropped "
            "in all",
            self.path,
            self.max_messages,
            ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
            self.dropped,
        )

    def _insert(self, batch: list[int | str | bytes], drop: int, in_flight_to: int) -> list[str]:
        """One transaction: add ``batch`` (rows flat: seq, topic, payload, seq, ...) and shed
        up to ``drop`` of the oldest routine messages not in flight; their topics."""
        assert self._db is not None
        if self._unjudged_from is None:
            self._unjudged_from = int(batch[0])
        if not drop and len(batch) <= 3 * ROWS_PER_INSERT:  # one statement: its own transaction
            self._db.execute(_insert_sql(len(batch) // 3), batch)
            return []
        self._db.execute("BEGIN")
        try:
            for at in range(0, len(batch), 3 * ROWS_PER_INSERT):
                values = batch[at : at + 3 * ROWS_PER_INSERT]
                self._db.execute(_insert_sql(len(values) // 3), values)
            dropped: list[str] = []
            if drop:
                dropped = self._shed(drop, in_flight_to, int(batch[0]))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if drop:
            self._unjudged_from = None
        return dropped

    def _shed(self, drop: int, in_flight_to: int, new_from: int) -> list[str]:
        """Judge what was not judged yet, then delete the ``drop`` oldest routine messages
        stored before ``new_from`` (the batch being added: the freshest are not shed)."""
        assert self._db is not None and self._unjudged_from is not None
        self._db.execute(
            "UPDATE outbox SET keep = keep(topic, payload) WHERE seq >= ? AND keep IS NULL",
            (self._unjudged_from,),
        )
        dropped = [
            topic
            for (topic,) in self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
                " WHERE seq > ? AND seq < ? AND keep = 0 ORDER BY seq LIMIT ?) RETURNING topic",
                (in_flight_to, new_from, drop),
            )
        ]
        if len(dropped) < drop and not self._over_bound_logged:
            log.warning(
                "outbox %s holds more than its %d messages: the rest are in flight, "
                "events or alarm-bearing readings, never shed",
                self.path,
                self.max_messages,
            )
        self._over_bound_logged = len(dropped) < drop
        return dropped

    async def wait(self) -> None:
        """Until there is something to publish."""
        await self._has_messages.wait()

    async def oldest(self, limit: int) -> list[Row]:
        async with self._lock:
            rows = await self._in_thread(self._oldest, limit)
            if not rows:
                self._has_messages.clear()
            else:
                self._in_flight_to = rows[-1][0]
            return rows

    def _oldest(self, limit: int) -> list[Row]:
        assert self._db is not None
        return self._db.execute(
            "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()

    def publishing_stopped(self) -> None:
        """The publisher lost the broker: what it had in flight may be dropped again."""
        self._in_flight_to = 0

    async def acknowledge(self, up_to_seq: int) -> None:
        """The broker has acknowledged every message up to and including ``up_to_seq``."""
        async with self._lock:
            self._size -= await self._in_thread(self._delete_up_to, up_to_seq)

    def _delete_up_to(self, seq: int) -> int:
        assert self._db is not None
        return self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount
