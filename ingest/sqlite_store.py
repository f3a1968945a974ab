"""The embedded time-series store: SQLite, for laptops, demos and small sites with no InfluxDB.

One row per (device, field, time).  A write of many batches is one transaction together with
the record of which (gateway, seq) it applied, so a redelivered batch is recognised and skipped,
and a crash leaves either all or nothing.  The work runs on a worker thread with a connection
of its own: one thread hop per write, not one per statement.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path

from firewatch.contract import ReadingBatch
from ingest.store import HistoryPoint

SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS points (
    device_id TEXT NOT NULL, field TEXT NOT NULL, ts REAL NOT NULL, value REAL NOT NULL,
    kind TEXT NOT NULL, institution_id TEXT NOT NULL, gateway_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS points_by_series ON points (device_id, field, ts);
CREATE TABLE IF NOT EXISTS applied (
    gateway_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (gateway_id, seq)
) WITHOUT ROWID;
"""


class SqliteTimeSeries:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                self._db.close()
                self._db = None

    async def write(self, batches: list[ReadingBatch]) -> int:
        """Store batches; returns how many were new (the rest were redeliveries)."""
        assert self._db is not None, "store not open"
        async with self._lock:
            return await asyncio.to_thread(self._write, self._db, batches)

    @staticmethod
    def _write(db: sqlite3.Connection, batches: list[ReadingBatch]) -> int:
        rows = []
        new = 0
        db.execute("BEGIN")
        try:
            for b in batches:
                if db.execute("INSERT OR IGNORE INTO applied VALUES (?, ?)",
                              (b.gateway_id, b.seq)).rowcount == 0:
                    continue
                new += 1
                ts, kind = b.ts.timestamp(), b.kind.value
                rows.extend((b.device_id, f, ts, v, kind, b.institution_id, b.gateway_id)
                            for f, v in b.readings.items())
                rows.extend((b.device_id, f, ts, float(v), kind, b.institution_id, b.gateway_id)
                            for f, v in b.flags.items())
            db.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new

    async def history(
        self, device_id: str, field: str, start: datetime, end: datetime, every_s: float
    ) -> list[HistoryPoint]:
        assert self._db is not None, "store not open"
        query = """
            SELECT CAST(ts / :every AS INTEGER) * :every AS bucket,
                   avg(value), min(value), max(value), count(*)
            FROM points
            WHERE device_id = :device AND field = :field AND ts >= :start AND ts < :end
            GROUP BY bucket ORDER BY bucket
        """
        params = {"every": every_s, "device": device_id, "field": field,
                  "start": start.timestamp(), "end": end.timestamp()}
        async with self._lock:
            rows = await asyncio.to_thread(lambda: self._db.execute(query, params).fetchall())
        return [HistoryPoint.from_epoch(*row) for row in rows]

    async def count(self) -> int:
        assert self._db is not None, "store not open"
        async with self._lock:
            return self._db.execute("SELECT count(*) FROM points").fetchone()[0]
