"""The embedded time-series store: what ingest writes and the trend charts read."""

import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from firewatch.backup import sqlite_copy
from firewatch.contract import ReadingBatch, utc_now
from firewatch.settings import Settings
from ingest.retention import RetentionPolicy, SqliteCompactor
from ingest.sqlite_store import LEGACY_POINTS, SqliteTimeSeries
from tests.support.auth import login_async
from tests.support.webapp import demo_app

T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)


def approx(value: float):
    """Equal to the profile's resolution (a decimal comes back as the float nearest it)."""
    return pytest.approx(value, abs=1e-9)


def batch(seq: int, seconds: float, value: float) -> ReadingBatch:
    return ReadingBatch(
        gateway_id="gw-1",
        seq=seq,
        device_id="dev-1",
        institution_id="inst-1",
        kind="gas_detector",
        ts=T0 + timedelta(seconds=seconds),
        profile="generic-gas-lel",
        readings={"gas_concentration": value},
        flags={"sensor_fault": False},
    )


async def test_a_redelivered_batch_is_stored_once(tmp_path):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    assert await store.write([batch(1, 0, 1.0)]) == 1
    assert await store.write([batch(1, 0, 1.0), batch(2, 1, 2.0)]) == 1
    assert await store.count() == 4  # a reading and a flag per batch, once each
    await store.close()


async def test_batches_redelivered_out_of_order_are_each_stored_once(tmp_path):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    assert await store.write([batch(5, 5, 1.0), batch(1, 1, 1.0), batch(3, 3, 1.0)]) == 3
    assert await store.write([batch(4, 4, 1.0), batch(2, 2, 1.0)]) == 2  # the gaps close
    assert await store.write([batch(seq, seq, 1.0) for seq in range(1, 7)]) == 1  # only 6
    assert await store.count() == 12
    await store.close()


async def test_a_gateway_with_a_new_outbox_numbering_from_1_again_is_stored(tmp_path):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    assert await store.write([batch(1, 0, 1.0)]) == 1
    reflashed = batch(1, 5, 2.0).model_copy(update={"incarnation": "0123456789abcdef"})
    assert await store.write([reflashed]) == 1
    assert await store.write([reflashed]) == 0  # and its own redelivery is still recognised
    await store.close()


async def test_a_store_from_before_incarnations_still_recognises_its_redeliveries(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "ts.db")
    old.executescript(
        "CREATE TABLE applied (gateway_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " PRIMARY KEY (gateway_id, seq)) WITHOUT ROWID;"
        "INSERT INTO applied VALUES ('gw-1', 1);"
    )
    old.close()
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    assert await store.write([batch(1, 0, 1.0), batch(2, 1, 2.0)]) == 1
    await store.close()


async def test_history_averages_each_interval_and_keeps_min_and_max(tmp_path):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    await store.write(
        [
            batch(seq, seconds, value)
            for seq, (seconds, value) in enumerate([(0, 1.0), (30, 3.0), (60, 10.0), (90, 20.0)], 1)
        ]
    )
    points = await store.history("dev-1", "gas_concentration", T0, T0 + timedelta(minutes=5), 60)
    assert [(p.time, p.mean, p.min, p.max, p.count) for p in points] == [
        (T0, 2.0, 1.0, 3.0, 2),
        (T0 + timedelta(minutes=1), 15.0, 10.0, 20.0, 2),
    ]
    await store.close()


async def test_a_devices_readings_come_back_in_its_trend_as_the_gateway_read_them(tmp_path):
    """65 minutes of readings every 5 s: the hour already over is in a compressed block, the
    current one in the head; each reading comes back at the profile's resolution (0.1 °C)."""
    raw = random.Random(15)
    start = utc_now().replace(microsecond=0) - timedelta(minutes=65)
    written = {
        start + timedelta(seconds=s, milliseconds=raw.randint(0, 40)): raw.randint(300, 340) * 0.1
        for s in range(0, 65 * 60, 5)
    }
    async with (
        demo_app(tmp_path) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as client,
    ):
        ingest = SqliteTimeSeries(demo.timeseries.path)  # ingest's own connection, as deployed
        await ingest.open()
        await ingest.write(
            [
                ReadingBatch(
                    gateway_id="gw-rongcheng",
                    seq=seq,
                    device_id="rc-efm-1",
                    institution_id="rongcheng-eldercare",
                    kind="electrical_fire_monitor",
                    ts=ts,
                    profile="generic-efm-4t",
                    readings={"cable_temp_1": value, "residual_current": 90.0},
                    flags={"sensor_fault": False},
                )
                for seq, (ts, value) in enumerate(written.items(), 1)
            ]
        )
        await ingest.close()
        with closing(sqlite3.connect(demo.timeseries.path)) as db:
            assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] >= 3  # a sealed hour
            assert db.execute("SELECT count(*) FROM head").fetchone()[0] > 0  # the current one
        await login_async(client, "admin")
        reply = await client.get(
            "/api/devices/rc-efm-1/history",
            params={"field": "cable_temp_1", "hours": 2, "every_s": 1},
        )
        five_minutes = await client.get(  # the sealed hour read from its summary per minute
            "/api/devices/rc-efm-1/history",
            params={"field": "cable_temp_1", "hours": 2, "every_s": 300},
        )
    groups: dict[float, list[float]] = {}
    for ts, value in written.items():
        groups.setdefault(ts.timestamp() // 300 * 300, []).append(value)
    assert [(p["mean"], p["min"], p["max"], p["count"]) for p in five_minutes.json()] == [
        (approx(sum(v) / len(v)), approx(min(v)), approx(max(v)), len(v))
        for _, v in sorted(groups.items())
    ]
    trend = [(p["time"], p["mean"], p["min"], p["max"], p["count"]) for p in reply.json()]
    assert trend == [
        (
            (ts.replace(microsecond=0)).isoformat().replace("+00:00", "Z"),
            approx(value),
            approx(value),
            approx(value),
            1,
        )
        for ts, value in written.items()
    ]


async def test_a_file_of_the_row_per_reading_layout_still_serves_its_trend(tmp_path):
    """A timeseries.db written before the compressed layout: its rows answer trends beside the
    new points, and retention rolls them up and empties the old table as before."""
    with closing(sqlite3.connect(tmp_path / "ts.db")) as old:
        old.executescript(LEGACY_POINTS)
        old.executemany(
            "INSERT INTO points VALUES ('dev-1', 'gas_concentration', ?, ?,"
            " 'gas_detector', 'inst-1', 'gw-1')",
            [((T0 + timedelta(seconds=s)).timestamp(), 1.0) for s in range(0, 60, 10)],
        )
        old.commit()
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    await store.write([batch(1, 30, 4.0), batch(2, 60, 7.0)])
    points = await store.history("dev-1", "gas_concentration", T0, T0 + timedelta(minutes=5), 60)
    minutes = [(10 / 7, 1.0, 4.0, 7), (7.0, 7.0, 7.0, 1)]  # six old rows of 1.0 and a new 4.0
    assert [(p.mean, p.min, p.max, p.count) for p in points] == minutes

    week_later = T0 + timedelta(days=8)
    await SqliteCompactor(store.path, RetentionPolicy.from_settings(Settings())).compact(week_later)
    assert await store.count() == 0
    points = await store.history("dev-1", "gas_concentration", T0, T0 + timedelta(minutes=5), 60)
    assert [(p.mean, p.min, p.max, p.count) for p in points] == minutes
    await store.close()


async def test_a_backup_copy_serves_the_same_trend_from_blocks_and_head(tmp_path):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    now = utc_now()
    await store.write(
        [
            batch(seq, (now - T0).total_seconds() - 7200 + seq * 60, float(seq % 7))
            for seq in range(1, 121)  # the last two hours: a sealed hour and the current one
        ]
    )
    sqlite_copy(store.path, tmp_path / "copy.db")
    copy = SqliteTimeSeries(tmp_path / "copy.db")
    await copy.open()
    span = ("dev-1", "gas_concentration", now - timedelta(hours=3), now, 60)
    assert await copy.history(*span) == await store.history(*span)
    assert await copy.count() == await store.count() == 240
    await copy.close()
    await store.close()
