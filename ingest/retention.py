"""Retention and downsampling for the embedded SQLite time-series store.

Raw points are kept for a while (a week by default); older ones are rolled up into aggregate
tiers (per minute for 90 days, per hour for two years by default) and then deleted, and each
tier's rows are deleted once they are older than that tier keeps them.

A tier row holds the sum, minimum, maximum and count of one field of one device over one
interval.  The sum rather than the mean is stored so that merging is addition: readings that
arrive late for an interval already rolled up are added to its row at the next compaction, and
a trend interval spanning raw points and tier rows gets the exact count-weighted mean.

Every tier is computed from the raw points themselves (not the hour from the minutes), one
transaction per window: an hour of compressed blocks (``ingest.sqlite_store``: every series'
block of that hour, decoded here), or for a file's legacy row-per-reading table one interval of
the finest tier.  The window's aggregates are added to every tier and its raw points deleted in
the same commit.  Blocks go whole, so raw points are kept until the hour that holds the raw
retention's cutoff is over.  A crash halfway leaves whole windows done and the rest still raw,
so a rerun ends with the same aggregates; a rerun with nothing left to do changes nothing.
Compaction runs on a connection of its own (WAL lets readers go on), holding the write lock
for one window at a time, so ingest's writes wait at most that long.

``rollup_tiers`` records, per tier, from when on it is complete (``covers_from``: its expiry
cutoff, or when the tier was added to an existing store).  History reads each time range from
the finest source that covers it; see ``SqliteTimeSeries.history``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from firewatch.settings import Settings
from ingest import chunks
from ingest.sqlite_store import (
    CHUNK_MS,
    SqliteTimeSeries,
    bucket_points,
    has_legacy_points,
    seal,
)
from ingest.store import TimeSeriesStore

log = logging.getLogger(__name__)

DAY_S = 86400.0
#: compaction window when no aggregate tier is configured (raw rows are only deleted)
DEFAULT_WINDOW_S = 3600


@dataclass(frozen=True)
class Rollup:
    """One aggregate tier: one row per device field and ``every_s`` interval, kept ``keep_s``."""

    every_s: int
    keep_s: float


@dataclass(frozen=True)
class RetentionPolicy:
    raw_s: float
    rollups: tuple[Rollup, ...]
    compact_every_s: float

    def __post_init__(self) -> None:
        tiers = sorted(self.rollups, key=lambda r: r.every_s)
        object.__setattr__(self, "rollups", tuple(tiers))
        if self.raw_s <= 0 or self.compact_every_s <= 0:
            raise ValueError("raw retention and compaction interval must be positive")
        for tier in tiers:
            if tier.every_s <= 0 or self.align_s % tier.every_s:
                raise ValueError(
                    f"FIREWATCH_TIMESERIES_ROLLUPS: interval {tier.every_s} s must "
                    f"be positive and divide the coarsest ({self.align_s} s)"
                )
            if tier.keep_s < self.raw_s:
                raise ValueError(
                    f"FIREWATCH_TIMESERIES_ROLLUPS: the {tier.every_s} s tier is "
                    "kept for less time than raw rows (FIREWATCH_TIMESERIES_RAW_DAYS)"
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            raw_s=settings.timeseries_raw_days * DAY_S,
            rollups=tuple(
                Rollup(every, days * DAY_S) for every, days in settings.timeseries_rollups.items()
            ),
            compact_every_s=settings.timeseries_compact_every_s,
        )

    @property
    def window_s(self) -> int:
        """Raw rows are rolled up window by window: one finest-tier interval per transaction."""
        return self.rollups[0].every_s if self.rollups else DEFAULT_WINDOW_S

    @property
    def align_s(self) -> int:
        """Tier boundaries fall on multiples of the coarsest interval, so no coarse interval is
        read partly from one tier and partly from another."""
        return max((r.every_s for r in self.rollups), default=DEFAULT_WINDOW_S)


@dataclass(frozen=True)
class Compaction:
    """What one compaction run did."""

    windows: int
    raw_rows_rolled_up: int
    aggregates_expired: int


ROLL_UP = """
    INSERT INTO rollups (device_id, field, every_s, ts, total, low, high, n)
    SELECT device_id, field, :every, CAST(ts / :every AS INTEGER) * :every AS bucket,
           sum(value), min(value), max(value), count(*)
    FROM points WHERE ts >= :start AND ts < :end
    GROUP BY device_id, field, bucket
    ON CONFLICT (device_id, field, every_s, ts) DO UPDATE SET
        total = total + excluded.total, low = min(low, excluded.low),
        high = max(high, excluded.high), n = n + excluded.n
"""


def _floor(value: float, step: int) -> float:
    return math.floor(value / step) * step


def _register_tiers(db: sqlite3.Connection, policy: RetentionPolicy) -> None:
    """Bring ``rollup_tiers`` in line with the policy: a removed tier's rows go; an added tier
    covers only what is still raw (it was not there when older rows were rolled up)."""
    wanted = {r.every_s for r in policy.rollups}
    db.execute("BEGIN IMMEDIATE")
    try:
        known = {every for (every,) in db.execute("SELECT every_s FROM rollup_tiers")}
        for every in known - wanted:
            log.warning("time-series tier of %d s is no longer configured: deleting it", every)
            db.execute("DELETE FROM rollups WHERE every_s = ?", (every,))
            db.execute("DELETE FROM rollup_tiers WHERE every_s = ?", (every,))
        latest = [
            db.execute(
                "SELECT max(ts) + every_s FROM rollups WHERE every_s = ?", (every,)
            ).fetchone()[0]
            for every in known & wanted
        ]
        rolled_until = max((t for t in latest if t is not None), default=None)
        covers_from = (
            None
            if rolled_until is None
            else math.ceil(rolled_until / policy.align_s) * policy.align_s
        )
        db.executemany(
            "INSERT OR IGNORE INTO rollup_tiers VALUES (?, ?)",
            [(every, covers_from) for every in wanted - known],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _roll_up_window(db: sqlite3.Connection, policy: RetentionPolicy, start: float) -> int:
    """Add one window's raw rows to every tier and delete them, in one transaction."""
    window = {"start": start, "end": start + policy.window_s}
    db.execute("BEGIN IMMEDIATE")
    try:
        for tier in policy.rollups:
            db.execute(ROLL_UP, {**window, "every": tier.every_s})
        deleted = db.execute("DELETE FROM points WHERE ts >= :start AND ts < :end", window).rowcount
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return deleted


UPSERT = """
    INSERT INTO rollups (device_id, field, every_s, ts, total, low, high, n)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (device_id, field, every_s, ts) DO UPDATE SET
        total = total + excluded.total, low = min(low, excluded.low),
        high = max(high, excluded.high), n = n + excluded.n
"""


def _roll_up_hour(db: sqlite3.Connection, policy: RetentionPolicy, start_ms: int) -> int:
    """Add every series' block of one hour to every tier and delete the blocks, in one
    transaction; returns the points rolled up."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rolled = 0
        for device, field, block in db.execute(
            "SELECT device_id, field, block FROM chunks JOIN series ON series.id = series_id"
            " WHERE start_ms = ?",
            (start_ms,),
        ).fetchall():
            times, numbers, divisor = chunks.decode_numbers(block)
            rolled += len(times)
            for tier in policy.rollups:
                buckets: dict[float, list[float]] = {}
                bucket_points(buckets, times, numbers, tier.every_s, divisor)
                db.executemany(
                    UPSERT,
                    [(device, field, tier.every_s, key, *agg) for key, agg in buckets.items()],
                )
        db.execute("DELETE FROM chunks WHERE start_ms = ?", (start_ms,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return rolled


def _expire(db: sqlite3.Connection, policy: RetentionPolicy, now: float) -> int:
    """Delete tier rows past their retention; the tier now covers only from the cutoff on."""
    expired = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for tier in policy.rollups:
            cutoff = _floor(now - tier.keep_s, policy.align_s)
            expired += db.execute(
                "DELETE FROM rollups WHERE every_s = ? AND ts < ?", (tier.every_s, cutoff)
            ).rowcount
            db.execute(
                "UPDATE rollup_tiers"
                " SET covers_from = max(coalesce(covers_from, :cut), :cut)"
                " WHERE every_s = :every",
                {"cut": cutoff, "every": tier.every_s},
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return expired


def compact(
    db: sqlite3.Connection,
    policy: RetentionPolicy,
    now: float,
    stopping: Callable[[], bool] = lambda: False,
) -> Compaction:
    """Roll up raw points older than the raw retention, then expire old tier rows.

    ``db`` is in autocommit mode (``isolation_level=None``); each step opens its own
    transaction.  ``stopping`` is asked between windows, so a shutdown need not wait for a
    long backlog.
    """
    _register_tiers(db, policy)
    windows = rolled = 0
    if has_legacy_points(db):
        cutoff = _floor(now - policy.raw_s, policy.window_s)
        oldest = db.execute("SELECT min(ts) FROM points").fetchone()[0]
        while oldest is not None and oldest < cutoff and not stopping():
            start = _floor(oldest, policy.window_s)
            rolled += _roll_up_window(db, policy, start)
            windows += 1
            oldest = db.execute(
                "SELECT min(ts) FROM points WHERE ts >= ?", (start + policy.window_s,)
            ).fetchone()[0]
    # hours wholly before the cutoff: the head's stragglers of those hours sealed first
    cutoff_ms = math.floor((now - policy.raw_s) * 1000 / CHUNK_MS) * CHUNK_MS
    db.execute("BEGIN IMMEDIATE")
    try:
        seal(db, cutoff_ms)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    oldest = db.execute("SELECT min(start_ms) FROM chunks").fetchone()[0]
    while oldest is not None and oldest < cutoff_ms and not stopping():
        rolled += _roll_up_hour(db, policy, oldest)
        windows += 1
        oldest = db.execute(
            "SELECT min(start_ms) FROM chunks WHERE start_ms > ?", (oldest,)
        ).fetchone()[0]
    return Compaction(windows, rolled, _expire(db, policy, now))


class SqliteCompactor:
    """Compaction of one SQLite store file: periodic under ingest (``run``), or one ``compact``."""

    def __init__(
        self,
        path: Path,
        policy: RetentionPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = path
        self.policy = policy
        self.clock = clock
        self.last: Compaction | None = None
        self._stopping = threading.Event()

    async def compact(self, now: datetime | None = None) -> Compaction:
        """One compaction as of ``now`` (default: the clock); the store must have been opened."""
        at = (now or self.clock()).timestamp()
        self.last = await asyncio.to_thread(self._compact, at)
        return self.last

    def _compact(self, now: float) -> Compaction:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            return compact(db, self.policy, now, self._stopping.is_set)
        finally:
            db.close()

    async def run(self) -> None:
        """Compact every ``compact_every_s`` until cancelled; a failed run is logged and retried
        at the next one (compaction only ever commits whole windows)."""
        try:
            while True:
                try:
                    done = await self.compact()
                    if done.windows or done.aggregates_expired:
                        log.info(
                            "time series compacted: %d raw rows rolled up in %d windows, "
                            "%d aggregates expired",
                            done.raw_rows_rolled_up,
                            done.windows,
                            done.aggregates_expired,
                        )
                except sqlite3.Error as exc:
                    log.warning(
                        "time-series compaction failed (%s); retrying in %.0f s",
                        exc,
                        self.policy.compact_every_s,
                    )
                await asyncio.sleep(self.policy.compact_every_s)
        except asyncio.CancelledError:
            self._stopping.set()
            raise


def compactor_for(store: TimeSeriesStore, settings: Settings) -> SqliteCompactor | None:
    """The SQLite store's compactor under the configured policy; InfluxDB keeps its own
    retention (the bucket's), so it gets none."""
    if not isinstance(store, SqliteTimeSeries):
        return None
    return SqliteCompactor(store.path, RetentionPolicy.from_settings(settings))
