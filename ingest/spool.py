"""Ingest's disk buffer: batches taken from the broker while the time-series store is down.

The broker cannot hold an outage's worth of readings (Mosquitto queues 1,000 messages per
client by default and then drops), so ingest acknowledges them into this SQLite file and drains
it into the store, oldest first, once the store answers again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from firewatch.contract import ReadingBatch


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, batch BLOB NOT NULL);"
        )
        self.size = self._db.execute("SELECT count(*) FROM spool").fetchone()[0]

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                self._db.close()
                self._db = None

    def _open_db(self) -> sqlite3.Connection:
        assert self._db is not None, "spool not open"
        return self._db

    async def put(self, batches: list[ReadingBatch]) -> None:
        db = self._open_db()
        rows = [(b.to_bytes(),) for b in batches]

        def insert() -> None:
            with db:  # one transaction
                db.executemany("INSERT INTO spool (batch) VALUES (?)", rows)

        async with self._lock:
            await asyncio.to_thread(insert)
            self.size += len(rows)

    async def oldest(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest rows as stored (id, the batch's JSON): read by the caller, who sets aside
        a row that no longer reads (a spool written by another version, a damaged file)."""
        db = self._open_db()
        async with self._lock:
            return await asyncio.to_thread(
                lambda: db.execute(
                    "SELECT id, batch FROM spool ORDER BY id LIMIT ?", (limit,)
                ).fetchall()
            )

    async def remove_through(self, last_id: int) -> None:
        db = self._open_db()

        def delete() -> int:
            with db:
                return db.execute("DELETE FROM spool WHERE id <= ?", (last_id,)).rowcount

        async with self._lock:
            self.size -= await asyncio.to_thread(delete)
