"""Retention and downsampling of the embedded SQLite store, on real SQLite files.

Readings every 7 s from 7 days 2.5 h ago to 6 days 23 h ago (the raw retention, 7 days, cuts
through the middle), compacted as of a chosen "now" under the default policy: raw for 7 days,
per-minute aggregates for 90 days, per-hour for 2 years.  Raw points are kept in hourly blocks,
which go whole: the hour that holds the cutoff stays raw until it is over.
"""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firewatch.contract import ReadingBatch
from firewatch.settings import Settings
from ingest.retention import Compaction, RetentionPolicy, SqliteCompactor, compact
from ingest.sqlite_store import SqliteTimeSeries

NOW = datetime(2026, 11, 22, 12, 20, tzinfo=UTC)  # not on the hour: a raw/minute-tier hour
BOUNDARY = NOW - timedelta(days=7)  # the raw retention's cutoff
BOUNDARY_HOUR = BOUNDARY.replace(minute=0)  # raw points from the hour that holds it on stay
FIRST = BOUNDARY - timedelta(hours=2, minutes=30)
LAST = BOUNDARY + timedelta(hours=1)
FIELD = "gas_concentration"
DEVICES = ("dev-1", "dev-2")
POLICY = RetentionPolicy.from_settings(Settings())


def readings() -> list[ReadingBatch]:
    values = random.Random(4)
    batches = []
    for d, device in enumerate(DEVICES):
        t = FIRST + timedelta(seconds=d)
        while t < LAST:
            batches.append(
                ReadingBatch(
                    gateway_id="gw-1",
                    seq=len(batches) + 1,
                    device_id=device,
                    institution_id="inst-1",
                    kind="gas_detector",
                    ts=t,
                    profile="generic-gas-lel",
                    readings={FIELD: values.uniform(0, 60)},
                )
            )
            t += timedelta(seconds=7)
    return batches


def expected(batches: list[ReadingBatch], device: str, every_s: int):
    """Mean, min, max and count per interval, computed here from what was written."""
    groups: dict[int, list[float]] = defaultdict(list)
    for b in batches:
        if b.device_id == device:
            epoch = b.ts.timestamp()
            groups[int(epoch // every_s) * every_s].append(b.readings[FIELD])
    return [
        (datetime.fromtimestamp(start, UTC), sum(v) / len(v), min(v), max(v), len(v))
        for start, v in sorted(groups.items())
    ]


def as_tuples(points):
    return [(p.time, pytest.approx(p.mean, rel=1e-12), p.min, p.max, p.count) for p in points]


async def trend(store: SqliteTimeSeries, device: str, every_s: int):
    return await store.history(
        device, FIELD, FIRST - timedelta(hours=1), LAST + timedelta(hours=1), every_s
    )


@pytest.fixture
async def store(tmp_path):
    ts = SqliteTimeSeries(tmp_path / "timeseries.db")
    await ts.open()
    yield ts
    await ts.close()


@pytest.fixture
def batches() -> list[ReadingBatch]:
    return readings()


def tables(path: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(path)) as db:
        return {
            name: sorted(db.execute(f"SELECT * FROM {name}").fetchall())
            for name in ("chunks", "head", "rollups", "rollup_tiers")
        }


async def test_compaction_keeps_each_minutes_exact_mean_min_max_and_count(store, batches):
    await store.write(batches)
    await SqliteCompactor(store.path, POLICY).compact(NOW)
    for device in DEVICES:
        rolled_up = await store.history(device, FIELD, FIRST - timedelta(minutes=1), BOUNDARY, 60)
        assert as_tuples(rolled_up) == [e for e in expected(batches, device, 60) if e[0] < BOUNDARY]


async def test_raw_hours_past_the_retention_are_gone_and_newer_ones_stay(store, batches):
    await store.write(batches)
    done = await SqliteCompactor(store.path, POLICY).compact(NOW)
    older = sum(1 for b in batches if b.ts < BOUNDARY_HOUR)
    assert (done.windows, done.raw_rows_rolled_up) == (3, older)  # 09:00, 10:00 and 11:00
    assert await store.count() == len(batches) - older
    with closing(sqlite3.connect(store.path)) as db:
        oldest = db.execute("SELECT min(start_ms) FROM chunks").fetchone()[0]
        assert oldest == BOUNDARY_HOUR.timestamp() * 1000


@pytest.mark.parametrize("every_s", [60, 300, 3600])
async def test_a_trend_across_the_raw_and_rolled_up_boundary_is_what_it_was(
    store, batches, every_s
):
    await store.write(batches)
    before = {device: await trend(store, device, every_s) for device in DEVICES}
    plain = {device: [tuple(vars(p).values()) for p in points] for device, points in before.items()}
    await SqliteCompactor(store.path, POLICY).compact(NOW)
    for device in DEVICES:
        assert as_tuples(await trend(store, device, every_s)) == plain[device]
        assert as_tuples(before[device]) == expected(batches, device, every_s)


async def test_compacting_again_changes_nothing(store, batches):
    await store.write(batches)
    compactor = SqliteCompactor(store.path, POLICY)
    await compactor.compact(NOW)
    once = tables(store.path)
    assert await compactor.compact(NOW) == Compaction(0, 0, 0)
    assert tables(store.path) == once


async def test_a_compaction_stopped_halfway_and_rerun_gives_the_same_aggregates(
    store, batches, tmp_path
):
    await store.write(batches)
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(store.path)) as db, closing(sqlite3.connect(copy)) as backup:
        db.backup(backup)
    windows = 0

    def stop_after_2_windows() -> bool:
        nonlocal windows
        windows += 1
        return windows > 2

    with closing(sqlite3.connect(store.path, isolation_level=None)) as db:
        assert compact(db, POLICY, NOW.timestamp(), stop_after_2_windows).windows == 2
    await SqliteCompactor(store.path, POLICY).compact(NOW)
    await SqliteCompactor(copy, POLICY).compact(NOW)
    assert tables(store.path) == tables(copy)


async def test_aggregates_past_their_retention_are_removed(store, batches):
    await store.write(batches)
    compactor = SqliteCompactor(store.path, POLICY)
    await compactor.compact(NOW)

    done = await compactor.compact(NOW + timedelta(days=91))  # the minutes are gone
    assert done.aggregates_expired == sum(len(expected(batches, d, 60)) for d in DEVICES)
    assert await store.count() == 0
    for device in DEVICES:
        assert as_tuples(await trend(store, device, 3600)) == expected(batches, device, 3600)
        hours = len(expected(batches, device, 3600))
        assert len(await trend(store, device, 60)) == hours  # one point per hour now

    await compactor.compact(NOW + timedelta(days=731))  # and then the hours
    assert tables(store.path)["rollups"] == []
    assert await trend(store, "dev-1", 3600) == []


async def test_a_30_day_trend_reads_raw_days_and_rolled_up_weeks(store):
    week_ago = [
        ReadingBatch(
            gateway_id="gw-1",
            seq=day + 1,
            device_id="dev-1",
            institution_id="inst-1",
            kind="gas_detector",
            ts=NOW - timedelta(days=day, minutes=30),
            profile="generic-gas-lel",
            readings={FIELD: float(day)},
        )
        for day in range(30)
    ]
    await store.write(week_ago)
    await SqliteCompactor(store.path, POLICY).compact(NOW)
    points = await store.history("dev-1", FIELD, NOW - timedelta(days=30), NOW, 86400)
    assert sorted(p.mean for p in points) == [float(day) for day in range(30)]
    assert await store.count() == 7  # days 0-6 are still raw


def test_a_tier_that_does_not_divide_the_coarsest_is_refused():
    with pytest.raises(ValueError, match="interval 700 s must be positive and divide"):
        RetentionPolicy.from_settings(Settings(timeseries_rollups={700: 90, 3600: 730}))


def test_settings_read_the_tiers_from_json(monkeypatch):
    monkeypatch.setenv("FIREWATCH_TIMESERIES_ROLLUPS", '{"300": 30, "86400": 3650}')
    policy = RetentionPolicy.from_settings(Settings())
    assert [(r.every_s, r.keep_s / 86400) for r in policy.rollups] == [(300, 30), (86400, 3650)]
    assert policy.window_s == 300
