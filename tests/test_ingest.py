"""Ingest through a real Mosquitto into real stores, including a store outage."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from firewatch import db
from firewatch.bench.servers import VictoriaMetrics
from firewatch.contract import ReadingBatch
from firewatch.dead_letters import DeadLetters
from firewatch.mqtt import BrokerAddress
from firewatch.settings import Settings
from ingest.influx_store import InfluxTimeSeries
from ingest.retention import compactor_for
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.sqlite_store import SqliteTimeSeries
from tests.support.influx_standin import InfluxStandIn
from tests.support.ledger import demo_county

pytestmark = pytest.mark.timeout(120)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def batch(seq: int, start: datetime = T0) -> ReadingBatch:
    return ReadingBatch(
        gateway_id="gw-1",
        seq=seq,
        device_id=f"dev-{seq % 10}",
        institution_id="inst-1",
        kind="gas_detector",
        ts=start + timedelta(milliseconds=100 * seq),
        profile="generic-gas-lel",
        readings={"gas_concentration": seq / 10},
        flags={"sensor_fault": False},
    )


class Recorded:
    count = 0

    async def put(self, topic, payload, reason, reason_class="contract"):
        raise AssertionError(f"unexpected dead letter: {reason}")

    async def expire(self):
        """Nothing to forget."""


async def publish(broker: BrokerAddress, seqs, start: datetime = T0) -> None:
    async with broker.client("test-gateway", max_inflight_messages=100) as client:
        await asyncio.gather(
            *(
                client.publish(
                    f"firewatch/v1/readings/gw-1/dev-{s % 10}", batch(s, start).to_bytes(), qos=1
                )
                for s in seqs
            )
        )


async def until(predicate, timeout: float = 30) -> None:
    for _ in range(int(timeout * 20)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_every_batch_lands_once_in_the_sqlite_store_even_when_sent_twice(mosquitto, tmp_path):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    ingest = IngestService(store, Spool(tmp_path / "spool.db"), mosquitto, Recorded())
    task = asyncio.create_task(ingest.run())
    await ingest.consumer.ready.wait()
    await publish(mosquitto, range(1, 501))
    await publish(mosquitto, range(401, 501))  # a gateway replaying after a lost PUBACK
    await until(lambda: _true(ingest.written + ingest.duplicates == 600))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (ingest.written, ingest.duplicates) == (500, 100)
    assert await store.count() == 1000  # a reading and a flag for each batch
    await store.close()


async def _true(value: bool) -> bool:
    return value


async def test_readings_older_than_the_raw_retention_are_rolled_up_by_the_running_ingest(
    mosquitto, tmp_path
):
    store = SqliteTimeSeries(tmp_path / "ts.db")
    await store.open()
    compactor = compactor_for(store, Settings(timeseries_compact_every_s=0.1))
    ingest = IngestService(
        store, Spool(tmp_path / "spool.db"), mosquitto, Recorded(), compactor=compactor
    )
    task = asyncio.create_task(ingest.run())
    eight_days_ago = T0 - timedelta(days=8)  # a gateway's outbox emptying after a long outage
    try:
        await ingest.consumer.ready.wait()
        await publish(mosquitto, range(1, 301), eight_days_ago)
        await until(lambda: _true(ingest.written == 300))

        async def all_rolled_up() -> bool:
            return await store.count() == 0  # every raw row was rolled up, then deleted

        await until(all_rolled_up)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    points = await store.history(
        "dev-3",
        "gas_concentration",
        eight_days_ago - timedelta(hours=1),
        eight_days_ago + timedelta(hours=1),
        60,
    )
    values = [seq / 10 for seq in range(3, 301, 10)]
    assert sum(p.count for p in points) == len(values)
    assert sum(p.mean * p.count for p in points) == pytest.approx(sum(values))
    assert (min(p.min for p in points), max(p.max for p in points)) == (min(values), max(values))
    await store.close()


async def test_readings_sent_while_the_database_is_down_are_spooled_and_caught_up(
    mosquitto, tmp_path
):
    victoria = VictoriaMetrics(tmp_path)
    victoria.start()
    store = InfluxTimeSeries(victoria.url, token="", org="o", bucket="b")
    await store.open()
    ingest = IngestService(store, Spool(tmp_path / "spool.db"), mosquitto, Recorded())
    task = asyncio.create_task(ingest.run())
    try:
        await ingest.consumer.ready.wait()
        await publish(mosquitto, range(1, 201))
        await until(lambda: _true(ingest.written == 200))

        victoria.stop()
        await publish(mosquitto, range(201, 2201))  # 2,000: more than the broker would queue
        await until(lambda: _true(ingest.spool.size == 2000))
        assert ingest.store_available is False

        victoria.start()
        await until(lambda: _true(ingest.spool.size == 0 and ingest.written == 2200), 60)
        assert ingest.store_available is True
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    stored = victoria.export('{__name__="gas_detector_gas_concentration"}')
    assert sum(len(series["values"]) for series in stored) == 2200
    victoria.stop()


async def drain_with_one_set_aside(store, tmp_path, mosquitto) -> db.DeadLetter:
    """Ingest started on the three batches left in the spool: once the two good ones are
    written, the one dead letter."""
    await store.open()
    async with demo_county(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as county:
        ingest = IngestService(
            store, Spool(tmp_path / "spool.db"), mosquitto, DeadLetters(county.sessions, "ingest")
        )
        task = asyncio.create_task(ingest.run())
        try:
            await until(lambda: _true(ingest.written == 2 and ingest.spool.size == 0))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()
        async with county.sessions() as session:
            [letter] = await session.scalars(select(db.DeadLetter))
    return letter


async def test_a_batch_the_store_refuses_for_good_does_not_hold_up_the_spooled_ones_after_it(
    mosquitto, tmp_path
):
    """Left spooled by an outage: a batch older than the server's retention, between two that
    are not.  The server refuses it for good; it is dead-lettered and the others written."""
    now = datetime.now(UTC)
    left_over = Spool(tmp_path / "spool.db")
    await left_over.open()
    await left_over.put([batch(1, now), batch(2, now - timedelta(days=40)), batch(3, now)])
    await left_over.close()
    with InfluxStandIn(retention_s=30 * 86400) as server:
        store = InfluxTimeSeries(server.url, token="", org="o", bucket="b")
        letter = await drain_with_one_set_aside(store, tmp_path, mosquitto)
    assert {line.split(" ", 2)[1] for line in server.points} == {
        "gas_concentration=0.1,sensor_fault=false",
        "gas_concentration=0.3,sensor_fault=false",
    }
    assert ReadingBatch.model_validate_json(letter.payload).seq == 2
    assert letter.reason_class == "Refused"
    assert "422" in letter.reason and "beyond retention policy" in letter.reason


async def test_a_spooled_row_that_no_longer_reads_is_set_aside_and_the_rest_written(
    mosquitto, tmp_path
):
    """A spool left by another version or a damaged file: the row that does not read is
    dead-lettered with the reason, the batches around it reach the store."""
    left_over = Spool(tmp_path / "spool.db")
    await left_over.open()
    await left_over.put([batch(1)])
    with sqlite3.connect(tmp_path / "spool.db") as spool:
        spool.execute("INSERT INTO spool (batch) VALUES (?)", (b'{"schema": "old/0"}',))
    await left_over.put([batch(3)])
    await left_over.close()
    letter = await drain_with_one_set_aside(
        SqliteTimeSeries(tmp_path / "ts.db"), tmp_path, mosquitto
    )
    assert (letter.payload, letter.reason_class) == (b'{"schema": "old/0"}', "ValidationError")
    assert letter.reason.startswith("spooled batch no longer reads")
