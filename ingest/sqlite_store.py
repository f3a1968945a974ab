"""The embedded time-series store: SQLite, for laptops, demos and small sites with no InfluxDB.

The layout (measured in docs/timeseries-store.md; ``firewatch bench storage`` repeats it):

- ``series`` names each (device, field) once and gives it an integer key;
- ``chunks`` holds one row per series per hour: the hour's points as one compressed block
  (``ingest.chunks``: time deltas, decimal values as integer deltas, zlib), keyed by
  (series, hour) in a ``WITHOUT ROWID`` table, so a series' hours lie together in key order;
- ``head`` holds the points of hours not sealed yet, one small row each (a second reading of a
  series at the same millisecond replaces the first: the same poll); the writer seals an
  hour into a block once it is over (plus ``SEAL_AFTER_S`` for stragglers), a few series per
  write so that no write holds the lock long.  A point arriving for a sealed hour goes to the
  head too and is merged into that hour's block at the next sealing.

Measured on the demo's readings (1 s polls, values at the profile's resolution with its
noise, on the shared 2-core machine under load): 1.93 bytes per point against 142 for the
layout before it (a row per point with the device, institution and gateway ids as text and two
indexes), 30 kB per idle device-day (a heartbeat a minute), and the 24 h trend of one field in
a file of 1,000 devices × 7 days in 21.5 ms (p50; p99 39 ms).  Alternatives measured: Gorilla
XOR floats (the ``gorillacompression`` package) take 6-7 bytes per point on decimal readings
such as 32.1 °C, whose binary mantissas differ in most bits, and decode ~40 times slower per
point in pure Python; a row per point with integer series keys (the head's shape) takes 24
bytes, the row and key overhead alone.  Why SQLite still: one writer (ingest) and several
readers in other processes (the web app's trends, ``firewatch backup``) is exactly what WAL mode
serves, the online backup API gives a consistent copy while ingest writes, and no server or new
dependency is needed.

A write of many batches is one transaction together with the record of which (gateway, outbox
incarnation, seq) it applied, kept as ranges of numbers per stream (``mark_applied``), so a
redelivered batch is recognised and skipped, and a crash leaves either all or nothing.  The
work runs on a worker thread with a connection of its own: one thread hop per write, not one
per statement.

A file written by the layout before (a ``points`` table of a row per reading) is read side by
side: its rows still answer trends and are rolled up and deleted by ``ingest.retention`` as
before, so the old table empties itself within the raw retention; new points go to the new
layout.  Older readings are rolled up into aggregate tiers (``rollups``); history reads raw
points and tier rows together (see ``history``).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from bisect import bisect_left
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from firewatch.contract import ReadingBatch
from ingest import chunks
from ingest.store import HistoryPoint

#: one block per series per this much time
CHUNK_MS = 3_600_000
#: an hour is sealed this long after it ended, so that points arriving a little late join it
SEAL_AFTER_S = 120.0
#: series sealed per write at most: each costs an encode, under the write lock
SEAL_SERIES_PER_WRITE = 64
#: how long the writer waits before looking for hours to seal again, once none were left
SEAL_CHECK_EVERY_S = 10.0

SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, field TEXT NOT NULL,
    UNIQUE (device_id, field)
);
CREATE TABLE IF NOT EXISTS head (
    series_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (series_id, ts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    series_id INTEGER NOT NULL, start_ms INTEGER NOT NULL, n INTEGER NOT NULL,
    block BLOB NOT NULL,
    PRIMARY KEY (series_id, start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_time ON chunks (start_ms);
CREATE TABLE IF NOT EXISTS rollups (
    device_id TEXT NOT NULL, field TEXT NOT NULL, every_s INTEGER NOT NULL, ts REAL NOT NULL,
    total REAL NOT NULL, low REAL NOT NULL, high REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (device_id, field, every_s, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_age ON rollups (every_s, ts);
CREATE TABLE IF NOT EXISTS rollup_tiers (every_s INTEGER PRIMARY KEY, covers_from REAL);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY, gateway_id TEXT NOT NULL, incarnation TEXT NOT NULL,
    UNIQUE (gateway_id, incarnation)
);
CREATE TABLE IF NOT EXISTS applied_seqs (
    stream_id INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (stream_id, first)
) WITHOUT ROWID;
"""
#: the layout before this one: a row per reading.  Read side by side (see the docstring); made
#: here only by ``firewatch bench storage`` and the tests, to measure and read it.
LEGACY_POINTS = """
CREATE TABLE IF NOT EXISTS points (
    device_id TEXT NOT NULL, field TEXT NOT NULL, ts REAL NOT NULL, value REAL NOT NULL,
    kind TEXT NOT NULL, institution_id TEXT NOT NULL, gateway_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS points_by_series ON points (device_id, field, ts);
CREATE INDEX IF NOT EXISTS points_by_time ON points (ts);
"""

LEGACY_ROWS = """
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
           sum(total), min(low), max(high), sum(n)
    FROM ({sources}) GROUP BY bucket
"""

#: a trend interval being summed: [total, low, high, count]
Bucket = list[float]


def has_legacy_points(db: sqlite3.Connection) -> bool:
    """Whether the file still has the row-per-reading table of the layout before."""
    return (
        db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'points'"
        ).fetchone()
        is not None
    )


def _key(db: sqlite3.Connection, table: str, first: str, second: str, key: tuple[str, str]) -> int:
    """The integer key of a (name, name) pair in ``table``, added if new."""
    row = db.execute(f"SELECT id FROM {table} WHERE {first} = ? AND {second} = ?", key).fetchone()
    if row is not None:
        return row[0]
    added = db.execute(f"INSERT INTO {table} VALUES (NULL, ?, ?)", key).lastrowid
    assert added is not None
    return added


def mark_applied(db: sqlite3.Connection, stream_id: int, seq: int) -> bool:
    """Record ``seq`` of the stream as applied; False if it already was (a redelivery).

    A stream's applied numbers are kept as ranges (``first`` to ``last``): the numbers of an
    outbox come nearly all in order, so a day of a gateway is a few rows where a row per batch
    cost more than the points themselves (measured: 4 bytes a point at 1 s polls)."""
    below = db.execute(
        "SELECT first, last FROM applied_seqs WHERE stream_id = ? AND first <= ?"
        " ORDER BY first DESC LIMIT 1",
        (stream_id, seq),
    ).fetchone()
    if below is not None and below[1] >= seq:
        return False
    if below is not None and below[1] == seq - 1:
        first = below[0]
        db.execute(
            "UPDATE applied_seqs SET last = ? WHERE stream_id = ? AND first = ?",
            (seq, stream_id, first),
        )
    else:
        first = seq
        db.execute("INSERT INTO applied_seqs VALUES (?, ?, ?)", (stream_id, seq, seq))
    above = db.execute(
        "SELECT last FROM applied_seqs WHERE stream_id = ? AND first = ?", (stream_id, seq + 1)
    ).fetchone()
    if above is not None:  # the gap between two ranges closed: one range now
        db.execute(
            "DELETE FROM applied_seqs WHERE stream_id = ? AND first = ?", (stream_id, seq + 1)
        )
        db.execute(
            "UPDATE applied_seqs SET last = ? WHERE stream_id = ? AND first = ?",
            (above[0], stream_id, first),
        )
    return True


class AppliedTails:
    """Each stream's highest range of applied numbers, kept by the one writer between writes.

    An outbox numbers in order, so nearly every batch extends its stream's highest range: that
    is done here in memory and written once per stream per write (``flush``), where
    ``mark_applied`` costs three statements a batch (measured: most of a write's time at 1 s
    polls).  Anything else (a redelivery, a gap filled) goes through ``mark_applied`` after a
    flush.  ``forget`` after a rollback: the memory may hold what the database no longer does.
    """

    def __init__(self) -> None:
        self._tails: dict[int, list[int]] = {}  # stream id: [first, last] of its highest range
        self._changed: set[int] = set()

    def _tail(self, db: sqlite3.Connection, stream_id: int) -> list[int] | None:
        tail = self._tails.get(stream_id)
        if tail is None:
            row = db.execute(
                "SELECT first, last FROM applied_seqs WHERE stream_id = ?"
                " ORDER BY first DESC LIMIT 1",
                (stream_id,),
            ).fetchone()
            if row is not None:
                tail = self._tails[stream_id] = list(row)
        return tail

    def mark(self, db: sqlite3.Connection, stream_id: int, seq: int) -> bool:
        """As ``mark_applied``."""
        tail = self._tail(db, stream_id)
        if tail is not None and seq == tail[1] + 1:
            tail[1] = seq
            self._changed.add(stream_id)
            return True
        self.flush(db)
        if tail is None or seq > tail[1]:
            db.execute("INSERT INTO applied_seqs VALUES (?, ?, ?)", (stream_id, seq, seq))
            self._tails[stream_id] = [seq, seq]
            return True
        self._tails.pop(stream_id)  # a gap below may close into it: read again when needed
        return mark_applied(db, stream_id, seq)

    def flush(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "UPDATE applied_seqs SET last = ? WHERE stream_id = ? AND first = ?",
            [(self._tails[s][1], s, self._tails[s][0]) for s in self._changed],
        )
        self._changed.clear()

    def forget(self) -> None:
        self._tails.clear()
        self._changed.clear()


def _migrate_applied(db: sqlite3.Connection) -> None:
    """A file's row-per-batch record of applied numbers (``applied``; before incarnations,
    without that column: the legacy stream "") turned into ranges, in one transaction."""
    columns = {c[1] for c in db.execute("PRAGMA table_info(applied)")}
    if not columns:
        return
    incarnation = "incarnation" if "incarnation" in columns else "''"
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            f"SELECT gateway_id, {incarnation}, seq FROM applied ORDER BY 1, 2, 3"
        ).fetchall()
        for (gateway_id, stream), seqs in groupby(rows, key=lambda row: row[:2]):
            sid = _key(db, "streams", "gateway_id", "incarnation", (gateway_id, stream))
            for _, _, seq in seqs:
                mark_applied(db, sid, seq)
        db.execute("DROP TABLE applied")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def chunk_start(ts_ms: int) -> int:
    return ts_ms // CHUNK_MS * CHUNK_MS


def seal(db: sqlite3.Connection, before_ms: int, series_limit: int = -1) -> tuple[int, int]:
    """Move the head's points of every hour that ends by ``before_ms`` into compressed blocks,
    merged with a block already there for the hour; at most ``series_limit`` series (-1: all).
    The caller holds the write transaction.  Returns (series sealed, points moved)."""
    cut = chunk_start(before_ms)
    ids = [
        sid
        for (sid,) in db.execute(
            "SELECT id FROM series WHERE EXISTS"
            " (SELECT 1 FROM head WHERE series_id = series.id AND ts_ms < ?) LIMIT ?",
            (cut, series_limit),
        )
    ]
    moved = 0
    for sid in ids:
        rows = db.execute(
            "SELECT ts_ms, value FROM head WHERE series_id = ? AND ts_ms < ? ORDER BY ts_ms",
            (sid, cut),
        ).fetchall()
        for start, points in groupby(rows, key=lambda row: chunk_start(row[0])):
            times, values = map(list, zip(*points, strict=True))
            moved += len(times)
            old = db.execute(
                "SELECT block FROM chunks WHERE series_id = ? AND start_ms = ?", (sid, start)
            ).fetchone()
            if old is not None:
                old_times, old_values = chunks.decode(old[0])
                merged = sorted(zip(old_times + times, old_values + values, strict=True))
                times, values = map(list, zip(*merged, strict=True))
            db.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)",
                (sid, start, len(times), chunks.encode(times, values)),
            )
        db.execute("DELETE FROM head WHERE series_id = ? AND ts_ms < ?", (sid, cut))
    return len(ids), moved


def _add(buckets: dict[float, Bucket], key: float, total: float, low: float, high: float, n: int):
    known = buckets.get(key)
    if known is None:
        buckets[key] = [total, low, high, n]
    else:
        known[0] += total
        known[1] = min(known[1], low)
        known[2] = max(known[2], high)
        known[3] += n


def bucket_points(
    buckets: dict[float, Bucket],
    times_ms: list[int],
    numbers: list[int] | list[float],
    every_s: float,
    divisor: float = 1.0,
    first: int = 0,
    last: int | None = None,
) -> None:
    """Add points ``first`` to ``last`` (times ascending; values ``numbers / divisor``, see
    ``chunks.decode_numbers``) to their ``every_s`` intervals: one C-level sum, min and max per
    interval, not Python arithmetic per point."""
    every_ms = every_s * 1000
    i, count = first, len(times_ms) if last is None else last
    while i < count:
        index = int(times_ms[i] / every_ms)
        j = max(i + 1, bisect_left(times_ms, (index + 1) * every_ms, i, count))
        part = numbers[i:j]
        _add(
            buckets,
            index * every_s,
            sum(part) / divisor,
            min(part) / divisor,
            max(part) / divisor,
            len(part),
        )
        i = j


def _bucket_minutes(buckets: dict[float, Bucket], summary: chunks.Minutes, every_s: float) -> None:
    """Add a block's minutes to intervals of whole minutes (each minute lies in one)."""
    every_ms, d = every_s * 1000, summary.divisor
    for start, n, total, low, high in zip(
        summary.starts_ms, summary.counts, summary.sums, summary.lows, summary.highs, strict=True
    ):
        _add(buckets, int(start / every_ms) * every_s, total / d, low / d, high / d, n)


class SqliteTimeSeries:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._series: dict[tuple[str, str], int] = {}  # (device, field): series id
        self._streams: dict[tuple[str, str], int] = {}  # (gateway, incarnation): stream id
        self._applied = AppliedTails()
        self._next_seal = 0.0  # time.monotonic() of the writer's next look for hours to seal

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        _migrate_applied(self._db)

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                self._db.close()
                self._db = None

    def _open_db(self) -> sqlite3.Connection:
        assert self._db is not None, "store not open"
        return self._db

    async def write(self, batches: list[ReadingBatch]) -> int:
        """Store batches; returns how many were new (the rest were redeliveries)."""
        db = self._open_db()
        async with self._lock:
            return await asyncio.to_thread(self._write, db, batches)

    def _series_id(self, db: sqlite3.Connection, device_id: str, field: str) -> int:
        key = (device_id, field)
        sid = self._series.get(key)
        if sid is None:
            sid = self._series[key] = _key(db, "series", "device_id", "field", key)
        return sid

    def _stream_id(self, db: sqlite3.Connection, gateway_id: str, incarnation: str) -> int:
        key = (gateway_id, incarnation)
        sid = self._streams.get(key)
        if sid is None:
            sid = self._streams[key] = _key(db, "streams", "gateway_id", "incarnation", key)
        return sid

    def _write(self, db: sqlite3.Connection, batches: list[ReadingBatch]) -> int:
        rows: list[tuple[int, int, float]] = []  # (series, time in ms, value): head's columns
        new = 0
        db.execute("BEGIN")
        try:
            for b in batches:
                stream = self._stream_id(db, b.gateway_id, b.incarnation)
                if not self._applied.mark(db, stream, b.seq):
                    continue
                new += 1
                ts_ms = round(b.ts.timestamp() * 1000)
                rows.extend(
                    (self._series_id(db, b.device_id, f), ts_ms, v) for f, v in b.readings.items()
                )
                rows.extend(
                    (self._series_id(db, b.device_id, f), ts_ms, float(v))
                    for f, v in b.flags.items()
                )
            db.executemany("INSERT OR REPLACE INTO head VALUES (?, ?, ?)", rows)
            self._applied.flush(db)
            if time.monotonic() >= self._next_seal:
                before = round((time.time() - SEAL_AFTER_S) * 1000)
                sealed, _ = seal(db, before, SEAL_SERIES_PER_WRITE)
                if sealed < SEAL_SERIES_PER_WRITE:  # none left: look again a while later
                    self._next_seal = time.monotonic() + SEAL_CHECK_EVERY_S
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._series.clear()  # ids it added are gone with the transaction
            self._streams.clear()
            self._applied.forget()
            raise
        return new

    async def seal(self, before: datetime) -> int:
        """Seal every hour that ends by ``before`` now, whatever the writer's pace; returns the
        points moved into blocks (for the benchmark and tests; the writer seals on its own)."""
        db = self._open_db()

        def run() -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                _, moved = seal(db, round(before.timestamp() * 1000))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return moved

        async with self._lock:
            return await asyncio.to_thread(run)

    async def history(
        self, device_id: str, field: str, start: datetime, end: datetime, every_s: float
    ) -> list[HistoryPoint]:
        db = self._open_db()
        params = {
            "every": every_s,
            "device": device_id,
            "field": field,
            "start": start.timestamp(),
            "end": end.timestamp(),
        }
        async with self._lock:
            buckets = await asyncio.to_thread(self._history, db, params)
        return [
            HistoryPoint.from_epoch(key, total / n, low, high, int(n))
            for key, (total, low, high, n) in sorted(buckets.items())
        ]

    @staticmethod
    def _bucket_raw(
        buckets: dict[float, Bucket],
        db: sqlite3.Connection,
        sid: int,
        start_ms: float,
        end_ms: float,
        every_s: float,
    ) -> None:
        """Add the series' points in [start, end) to the intervals, block by block and then
        the head's (sums, minima and maxima add up, so order across sources does not matter).
        A block wholly in the range, for intervals of whole minutes, is read from its summary
        per minute where it has one."""
        whole_minutes = every_s % 60 == 0
        for start, block in db.execute(
            "SELECT start_ms, block FROM chunks WHERE series_id = ? AND start_ms > ?"
            " AND start_ms < ?",
            (sid, start_ms - CHUNK_MS, end_ms),
        ):
            summary = chunks.minutes(block) if whole_minutes else None
            if summary is not None and start_ms <= start and start + CHUNK_MS <= end_ms:
                _bucket_minutes(buckets, summary, every_s)
                continue
            times, numbers, divisor = chunks.decode_numbers(block)
            first, last = bisect_left(times, start_ms), bisect_left(times, end_ms)
            bucket_points(buckets, times, numbers, every_s, divisor, first, last)
        head = db.execute(
            "SELECT ts_ms, value FROM head WHERE series_id = ? AND ts_ms >= ? AND ts_ms < ?"
            " ORDER BY ts_ms",
            (sid, math.ceil(start_ms), end_ms),
        ).fetchall()
        bucket_points(buckets, [t for t, _ in head], [v for _, v in head], every_s)

    @classmethod
    def _history(cls, db: sqlite3.Connection, params: dict[str, Any]) -> dict[float, Bucket]:
        """Raw points wherever they are (blocks, head, a legacy ``points`` table: they are
        deleted as they are rolled up, so they never overlap a tier), plus each tier's rows
        where no finer tier covers the time: the finest tier from its ``covers_from`` on, the
        next one below that, and so on.  A tier row counts only if its whole interval lies in
        its range, so no reading is counted twice.  One read transaction: a compaction
        committing meanwhile is seen entirely or not at all."""
        buckets: dict[float, Bucket] = {}
        db.execute("BEGIN")
        try:
            row = db.execute(
                "SELECT id FROM series WHERE device_id = ? AND field = ?",
                (params["device"], params["field"]),
            ).fetchone()
            if row is not None:
                cls._bucket_raw(
                    buckets,
                    db,
                    row[0],
                    params["start"] * 1000,
                    params["end"] * 1000,
                    params["every"],
                )
            sources = [LEGACY_ROWS] if has_legacy_points(db) else []
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
            if sources:
                query = HISTORY.format(sources=" UNION ALL ".join(sources))
                for key, total, low, high, n in db.execute(query, params):
                    _add(buckets, key, total, low, high, n)
        finally:
            db.execute("COMMIT")
        return buckets

    async def count(self) -> int:
        """Points stored raw (blocks, head and a legacy table), not yet rolled up."""
        db = self._open_db()
        async with self._lock:
            head = db.execute("SELECT count(*) FROM head").fetchone()[0]
            sealed = db.execute("SELECT coalesce(sum(n), 0) FROM chunks").fetchone()[0]
            legacy = (
                db.execute("SELECT count(*) FROM points").fetchone()[0]
                if has_legacy_points(db)
                else 0
            )
            return head + sealed + legacy
