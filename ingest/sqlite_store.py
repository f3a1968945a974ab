"""The embedded time-series store: SQLite, for laptops, demos and small sites with no InfluxDB.

One row per (device, field, time).  A batch and the record that it was applied commit in one
transaction, so a redelivered batch is recognised and skipped, and a crash leaves either both
or neither.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiosqlite

from firewatch.contract import ReadingBatch
from ingest.store import HistoryPoint


class SqliteTimeSeries:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.executescript(
            """
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS points (
                device_id TEXT NOT NULL, field TEXT NOT NULL, ts REAL NOT NULL,
                value REAL NOT NULL, kind TEXT NOT NULL, institution_id TEXT NOT NULL,
                gateway_id TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS points_by_series ON points (device_id, field, ts);
            CREATE TABLE IF NOT EXISTS applied (
                gateway_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (gateway_id, seq)
            ) WITHOUT ROWID;
            """
        )
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def write(self, batch: ReadingBatch) -> bool:
        """Store a batch; False if it was stored before (a redelivery)."""
        assert self._db is not None, "store not open"
        cur = await self._db.execute(
            "INSERT OR IGNORE INTO applied (gateway_id, seq) VALUES (?, ?)",
            (batch.gateway_id, batch.seq),
        )
        if cur.rowcount == 0:
            await self._db.rollback()
            return False
        ts = batch.ts.timestamp()
        values = {**batch.readings, **{k: float(v) for k, v in batch.flags.items()}}
        await self._db.executemany(
            "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (batch.device_id, field, ts, value, batch.kind.value, batch.institution_id,
                 batch.gateway_id)
                for field, value in values.items()
            ],
        )
        await self._db.commit()
        return True

    async def history(
        self, device_id: str, field: str, start: datetime, end: datetime, every_s: float
    ) -> list[HistoryPoint]:
        assert self._db is not None, "store not open"
        async with self._db.execute(
            """
            SELECT CAST(ts / :every AS INTEGER) * :every AS bucket,
                   avg(value), min(value), max(value), count(*)
            FROM points
            WHERE device_id = :device AND field = :field AND ts >= :start AND ts < :end
            GROUP BY bucket ORDER BY bucket
            """,
            {"every": every_s, "device": device_id, "field": field,
             "start": start.timestamp(), "end": end.timestamp()},
        ) as cur:
            rows = await cur.fetchall()
        return [HistoryPoint.from_epoch(*row) for row in rows]

    async def count(self) -> int:
        assert self._db is not None, "store not open"
        async with self._db.execute("SELECT count(*) FROM points") as cur:
            return (await cur.fetchone())[0]
