"""The gateway's durable outbox: nothing read from a device is lost while the broker is away.

Every message is written to SQLite before it is published and deleted only after the broker
acknowledged it (QoS 1 PUBACK).  The row id is the message's sequence number: AUTOINCREMENT
never reuses an id, even after deletes and restarts, so sequence numbers increase for the life
of the outbox file and consumers can drop redeliveries by (gateway id, seq).

The outbox is bounded.  At the bound the *oldest* messages are dropped, each drop counted and
logged: after a long broker outage the freshest readings matter most to duty staff.  Messages
the publisher has in flight are not dropped (they may be acknowledged a moment later, and would
then be counted dropped yet delivered), so the outbox can exceed its bound by one publish batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiosqlite

from firewatch.contract import DeviceEvent, ReadingBatch, message_topic

log = logging.getLogger(__name__)

Message = ReadingBatch | DeviceEvent


class Outbox:
    def __init__(self, path: Path, max_messages: int = 1_000_000) -> None:
        self.path = path
        self.max_messages = max_messages
        self.dropped = 0
        self._db: aiosqlite.Connection | None = None
        self._next_seq = 1
        self._size = 0
        self._in_flight_to = 0  # messages up to this seq are being published
        self._lock = asyncio.Lock()  # one statement sequence on the connection at a time
        self._has_messages = asyncio.Event()
        self._pending: list[tuple[int, str, bytes, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        await self._db.commit()
        async with self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
        ) as cur:
            row = await cur.fetchone()
        self._next_seq = (row[0] if row else 0) + 1
        async with self._db.execute("SELECT count(*) FROM outbox") as cur:
            self._size = (await cur.fetchone())[0]
        if self._size:
            self._has_messages.set()
            log.info("outbox %s: %d messages waiting from before", self.path, self._size)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest message ever stored (0 if none)."""
        return self._next_seq - 1

    async def put(self, build: Callable[[int], Message]) -> Message:
        """Store the message ``build(seq)`` makes with the next sequence number.

        Returns once the message is committed.  Puts that arrive while a commit is under way
        are committed together in the next one (group commit): one transaction for many
        devices' batches instead of one each.
        """
        assert self._db is not None, "outbox not open"
        seq = self._next_seq
        self._next_seq += 1
        message = build(seq)
        stored = asyncio.get_running_loop().create_future()
        self._pending.append((seq, message_topic(message), message.to_bytes(), stored))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        await stored
        return message

    async def _commit_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._lock:
                    overflow = self._size + len(batch) - self.max_messages
                    if overflow > 0:
                        await self._drop_oldest(overflow)
                    await self._db.executemany(
                        "INSERT INTO outbox (seq, topic, payload) VALUES (?, ?, ?)",
                        [row[:3] for row in batch],
                    )
                    await self._db.commit()
                    self._size += len(batch)
            except Exception as exc:
                for *_, stored in batch:
                    if not stored.done():  # done: its poller was cancelled meanwhile
                        stored.set_exception(exc)
                continue
            for *_, stored in batch:
                if not stored.done():
                    stored.set_result(None)
            self._has_messages.set()

    async def _drop_oldest(self, count: int) -> None:
        cur = await self._db.execute(
            "DELETE FROM outbox WHERE seq IN"
            " (SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?)",
            (self._in_flight_to, count),
        )
        count = cur.rowcount
        if not count:
            return
        self._size -= count
        self.dropped += count
        log.warning(
            "outbox %s full (%d messages): dropped the %d oldest, %d dropped in all",
            self.path, self.max_messages, count, self.dropped,
        )

    async def wait(self) -> None:
        """Until there is something to publish."""
        await self._has_messages.wait()

    async def oldest(self, limit: int) -> list[tuple[int, str, bytes]]:
        assert self._db is not None, "outbox not open"
        async with self._lock:
            async with self._db.execute(
                "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                self._has_messages.clear()
            else:
                self._in_flight_to = rows[-1][0]
            return rows

    def publishing_stopped(self) -> None:
        """The publisher lost the broker: what it had in flight may be dropped again."""
        self._in_flight_to = 0

    async def acknowledge(self, up_to_seq: int) -> None:
        """The broker has acknowledged every message up to and including ``up_to_seq``."""
        assert self._db is not None, "outbox not open"
        async with self._lock:
            cur = await self._db.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))
            await self._db.commit()
            self._size -= cur.rowcount
