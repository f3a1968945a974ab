"""A message that always fails is set aside with its reason; the stream behind it goes on.

The consumers on a real Mosquitto and a real SQLite database: a message whose own content makes
the alert service fail is dead-lettered, and the alarms of every other institution still come.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from firewatch import db
from firewatch.alert_side import alert_side
from firewatch.consumer import MAX_ATTEMPTS, GatewayMessageConsumer
from firewatch.contract import (
    DeviceEvent,
    ReadingBatch,
    events_filter,
    readings_filter,
    readings_topic,
)
from firewatch.dead_letters import DeadLetters
from firewatch.mqtt import BrokerAddress
from firewatch.settings import Settings
from tests.support.ledger import demo_county

pytestmark = pytest.mark.timeout(60)


def press(gateway: str, device: str, institution: str, seq: int, ts: datetime) -> ReadingBatch:
    """A one-key alarm button's press, as its gateway sends it."""
    return ReadingBatch(
        gateway_id=gateway,
        seq=seq,
        device_id=device,
        institution_id=institution,
        kind="one_key_alarm",
        ts=ts,
        profile="generic-onekey-mqtt",
        readings={"battery_voltage": 3.6},
        flags={"button_pressed": True, "tamper": False},
    )


async def publish(broker: BrokerAddress, *messages: ReadingBatch) -> None:
    async with broker.client("a-gateway") as client:
        for message in messages:
            await client.publish(
                readings_topic(message.gateway_id, message.device_id), message.to_bytes(), qos=1
            )


async def dead_letters(sessions) -> list[db.DeadLetter]:
    async with sessions() as session:
        return list(await session.scalars(select(db.DeadLetter).order_by(db.DeadLetter.id)))


async def test_a_year_9999_batch_is_dead_lettered_and_a_press_elsewhere_still_alarms(
    mosquitto, tmp_path
):
    """A press stamped in year 9999 whose ledger deadline overflows.  The consumer's door
    (firewatch.admission) would take it as read when received; with the door open, the
    content error it did not foresee is the handler's, and still only this message's."""
    async with demo_county(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as county:
        side = alert_side(
            Settings(wecom_webhook_url=None),
            county.site,
            county.profiles,
            county.sessions,
            mosquitto,
        )
        side.alerts.consumer.admit = None
        running = asyncio.create_task(side.alerts.run())
        try:
            await side.alerts.consumer.ready.wait()
            far = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)  # its ledger deadline overflows
            await publish(
                mosquitto,
                press("gw-rongcheng", "rc-btn-1", "rongcheng-eldercare", 1, far),
                press("gw-dingqiao", "dq-btn-1", "dingqiao-eldercare", 1, datetime.now(UTC)),
            )
            while True:
                async with county.sessions() as session:
                    alarms = list(await session.scalars(select(db.Alarm)))
                if alarms:
                    break
                await asyncio.sleep(0.05)
            assert [a.device_id for a in alarms] == ["dq-btn-1"]
            assert side.alerts.raised == 1  # not the attempts rolled back beside the culprit
            [letter] = await dead_letters(county.sessions)
            assert letter.consumer == "alerts"
            assert letter.topic == readings_topic("gw-rongcheng", "rc-btn-1")
            assert "OverflowError" in letter.reason and letter.reason_class == "OverflowError"
            assert side.alerts.consumer.dead_letters.by_reason == {"OverflowError": 1}
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await side.close()


async def test_a_handler_error_that_keeps_repeating_ends_as_a_dead_letter_and_the_stream_goes_on(
    mosquitto, tmp_path
):
    async with demo_county(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as county:
        applied: list[int] = []

        async def handler(messages: list[ReadingBatch | DeviceEvent]) -> None:
            """A bug that fails on one message, every time, with an error nobody foresaw."""
            if any(m.seq == 1 for m in messages):
                raise RuntimeError("a bug meets message 1")
            applied.extend(m.seq for m in messages)

        consumer = GatewayMessageConsumer(
            "test",
            mosquitto,
            handler,
            DeadLetters(county.sessions, "test"),
            streams=(readings_filter, events_filter),
        )
        running = asyncio.create_task(consumer.run())
        try:
            await consumer.ready.wait()
            now = datetime.now(UTC)
            await publish(
                mosquitto,
                *(
                    press("gw-dingqiao", "dq-btn-1", "dingqiao-eldercare", seq, now)
                    for seq in (1, 2)
                ),
            )
            while applied != [2]:
                await asyncio.sleep(0.05)
            [letter] = await dead_letters(county.sessions)
            assert letter.reason == (
                f"not applied after {MAX_ATTEMPTS} tries: RuntimeError: a bug meets message 1"
            )
            assert ReadingBatch.model_validate_json(letter.payload).seq == 1
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def test_a_database_that_is_away_for_a_moment_loses_no_message(mosquitto, tmp_path, caplog):
    """Another process holds the database past SQLite's busy timeout while a press arrives: a
    bad day, not the press's fault.  The press waits, and becomes its alarm once."""
    async with demo_county(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as county:
        side = alert_side(
            Settings(wecom_webhook_url=None),
            county.site,
            county.profiles,
            county.sessions,
            mosquitto,
        )
        running = asyncio.create_task(side.alerts.run())
        # The locker is another process's connection: it waits for the lock in a thread of its
        # own, since waiting on this event loop would stall the alert side's own write.
        locker = sqlite3.connect(
            tmp_path / "fw.db", isolation_level=None, timeout=30, check_same_thread=False
        )
        try:
            await side.alerts.consumer.ready.wait()
            await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
            await publish(
                mosquitto,
                press("gw-dingqiao", "dq-btn-1", "dingqiao-eldercare", 1, datetime.now(UTC)),
            )
            while not any("database is locked" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.05)
            locker.rollback()
            while side.alerts.consumer.handled < 1:
                await asyncio.sleep(0.05)
            async with county.sessions() as session:
                alarms = list(await session.scalars(select(db.Alarm.device_id)))
            assert alarms == ["dq-btn-1"]
            assert await dead_letters(county.sessions) == []
        finally:
            locker.close()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await side.close()
