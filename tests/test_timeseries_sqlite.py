"""The embedded time-series store: what ingest writes and the trend charts read."""

from datetime import UTC, datetime, timedelta

from firewatch.contract import ReadingBatch
from ingest.sqlite_store import SqliteTimeSeries

T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)


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
