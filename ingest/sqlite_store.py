"""The embedded time-series store: SQLite, for laptops, demos and small sites with no InfluxDB.

One row per (device, field, time).  A write of many batches is one transaction together with
the record of which (gateway, outbox incarnation, seq) it applied, so a redelivered batch is
recognised and skipped,
and a crash leaves either all or nothing.  The work runs on a worker thread with a connection
of its own: one thread hop per write, not one per statement.

Older readings are rolled up into aggregate tiers (``rollups``) by ``ingest.retention``;
history reads raw rows and tier rows together (see ``history``).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

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
CREATE INDEX IF NOT EXISTS points_by_time ON points (ts);
CREATE TABLE IF NOT EXISTS rollups (
    device_id TEXT NOT NULL, field TEXT NOT NULL, every_s INTEGER NOT NULL, ts REAL NOT NULL,
    total REAL NOT NULL, low REAL NOT NULL, high REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (device_id, field, every_s, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_age ON rollups (every_s, ts);
CREATE TABLE IF NOT EXISTS rollup_tiers (every_s INTEGER PRIMARY KEY, covers_from REAL);
CREATE TABLE IF NOT EXISTS applied (
    gateway_id TEXT NOT NULL, incarnation TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, incarnation, seq)
) WITHOUT ROWID;
"""
#: a store from before incarnations: its record of applied batches, as the legacy stream ("")
UPGRADE_APPLIED = """
ALTER TABLE applied RENAME TO applied_before_incarnations;
CREATE TABLE applied (
    gateway_id TEXT NOT NULL, incarnation TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, incarnation, seq)
) WITHOUT ROWID;
INSERT INTO applied SELECT gateway_id, '', seq FROM applied_before_incarnations;
DROP TABLE applied_before_incarnations;
"""


RAW_ROWS = """
    SELECT ts, value AS total, value AS low, value AS high, 1 AS n FROM points
    WHERE device_id = :device AND field = :field AND ts >= :start AND ts < :end
"""
TIER_ROWS = """
    SELECT ts, total, low, high, n FROM rollups
    WHERE device_id = :device AND field = :field AND every_s = :every_{i}
      AND ts >= :from_{i} AND ts < :end AND ts <= :last_{i}
"""
HISTORY = """
    SELECT CAST(ts / :every AS INTEGER) * :every AS bucket,
           sum(total) / sum(n), min(low), max(high), sum(n)
    FROM ({sources}) GROUP BY bucket ORDER BY bucket
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
        applied = {c[1] for c in self._db.execute("PRAGMA table_info(applied)")}
        if applied and "incarnation" not in applied:
            self._db.executescript(f"BEGIN; {UPGRADE_APPLIED} COMMIT;")
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
        # (device, field, time, value, kind, institution, gateway): the points table's columns
        rows: list[tuple[str, str, float, float, str, str, str]] = []
        new = 0
        db.execute("BEGIN")
        try:
            for b in batches:
                if (
                    db.execute(
                        "INSERT OR IGNORE INTO applied VALUES (?, ?, ?)",
                        (b.gateway_id, b.incarnation, b.seq),
                    ).rowcount
                    == 0
                ):
                    continue
                new += 1
                ts, kind = b.ts.timestamp(), b.kind.value
                rows.extend(
                    (b.device_id, f, ts, v, kind, b.institution_id, b.gateway_id)
                    for f, v in b.readings.items()
                )
                rows.extend(
                    (b.device_id, f, ts, float(v), kind, b.institution_id, b.gateway_id)
                    for f, v in b.flags.items()
                )
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
        params = {
            "every": every_s,
            "device": device_id,
            "field": field,
            "start": start.timestamp(),
            "end": end.timestamp(),
        }
        async with self._lock:
            rows = await asyncio.to_thread(self._history, self._db, params)
        return [HistoryPoint.from_epoch(*row) for row in rows]

    @staticmethod
    def _history(db: sqlite3.Connection, params: dict[str, Any]) -> list[tuple]:
        """Raw rows wherever they are (they are deleted as they are rolled up, so they never
        overlap a tier), plus each tier's rows where no finer tier covers the time: the finest
        tier from its ``covers_from`` on, the next one below that, and so on.  A tier row counts
        only if its whole interval lies in its range, so no reading is counted twice.  One read
        transaction: a compaction committing meanwhile is seen entirely or not at all."""
        db.execute("BEGIN")
        try:
            sources = [RAW_ROWS]
            below = math.inf
            for i, (every, covers_from) in enumerate(
                db.execute(
                    "SELECT every_s, covers_from FROM rollup_tiers ORDER BY every_s"
                ).fetchall()
            ):
                covers_from = -math.inf if covers_from is None else covers_from
                if covers_from < below:
                    sources.append(TIER_ROWS.format(i=i))
                    params |= {
                        f"every_{i}": every,
                        f"from_{i}": max(params["start"], covers_from),
                        f"last_{i}": below - every,
                    }
                below = min(below, covers_from)
            query = HISTORY.format(sources=" UNION ALL ".join(sources))
            return db.execute(query, params).fetchall()
        finally:
            db.execute("COMMIT")

    async def count(self) -> int:
        assert self._db is not None, "store not open"
        async with self._lock:
            return self._db.execute("SELECT count(*) FROM points").fetchone()[0]
