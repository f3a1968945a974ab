"""What a gateway says is checked: its own devices only, its clock within bounds, and a clock
that steps back blinds nothing.

The alert service (and ingest) consume from a real Mosquitto, into real SQLite and PostgreSQL
databases; the test publishes as a gateway would, on the gateway's own topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from itertools import count
from pathlib import Path

import pytest
from sqlalchemy import select

from alerts.service import AlertService
from firewatch import db
from firewatch.admission import admission_for
from firewatch.bench.servers import Mosquitto
from firewatch.contract import GatewayHeartbeat, ReadingBatch, message_topic, utc_now
from firewatch.dead_letters import DeadLetters
from firewatch.metrics import FirewatchCollector, registry_for
from firewatch.mqtt import BrokerAddress
from firewatch.settings import Settings
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.sqlite_store import SqliteTimeSeries
from tests.support.alerts import PROFILES, SITE, alert_service, database, robot_outbox

pytestmark = pytest.mark.timeout(60)

SEQ = count(1)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory) -> AsyncIterator[BrokerAddress]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield BrokerAddress.from_url(broker.url)
    broker.stop()


@asynccontextmanager
async def running(*services: AlertService | IngestService) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        for service in services:
            await asyncio.wait_for(service.consumer.ready.wait(), 10)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def alerts(database_url, mosquitto) -> AsyncIterator[AlertService]:
    async with database(database_url) as sessions:
        service = alert_service(sessions, robot_outbox(), broker=mosquitto)
        async with running(service):
            yield service


async def publish(broker: BrokerAddress, *messages: ReadingBatch | GatewayHeartbeat) -> None:
    """As the gateway publishes: QoS 1 on the message's own topic, in order."""
    async with broker.client(f"test-gateway-{next(SEQ)}") as client:
        for message in messages:
            await client.publish(message_topic(message), message.to_bytes(), qos=1)


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(400):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def reading(
    device_id: str,
    *,
    gateway_id: str | None = None,
    ahead: timedelta = timedelta(),
    **values: float | bool,
) -> ReadingBatch:
    """A batch from ``device_id`` (of its site gateway unless another is named), read now on a
    gateway clock ``ahead`` of ours; floats are readings, bools flags."""
    device = next(d for d in SITE.devices if d.id == device_id)
    profile = PROFILES[device.profile]
    return ReadingBatch(
        gateway_id=gateway_id or device.gateway,
        incarnation="0123456789abcdef",
        seq=next(SEQ),
        device_id=device.id,
        institution_id=device.institution,
        kind=profile.kind,
        ts=utc_now() + ahead,
        profile=device.profile,
        readings={k: v for k, v in values.items() if not isinstance(v, bool)},
        flags={k: v for k, v in values.items() if isinstance(v, bool)},
    )


def heartbeat(gateway_id: str, ahead: timedelta = timedelta()) -> GatewayHeartbeat:
    return GatewayHeartbeat(
        gateway_id=gateway_id,
        incarnation="0123456789abcdef",
        seq=next(SEQ),
        ts=utc_now() + ahead,
        outbox=3,
    )


async def rows(service: AlertService, model: type, **where: object) -> list:
    async with service.sessions() as session:
        return list(await session.scalars(select(model).filter_by(**where)))


async def test_a_gateway_cannot_raise_an_alarm_for_another_institutions_device(alerts, mosquitto):
    # gw-rongcheng forges a press of 丁桥's button under its own topic, as the ACL lets it
    forged = reading("dq-btn-1", gateway_id="gw-rongcheng", button_pressed=True)
    real = reading("cw-btn-1", button_pressed=True)  # a real press at another institution
    await publish(mosquitto, forged, real)

    await until(lambda: _alarms_of(alerts, "cw-btn-1"), "the real press's alarm")
    assert await rows(alerts, db.Alarm, device_id="dq-btn-1") == []
    [letter] = await rows(alerts, db.DeadLetter)
    assert letter.topic == "firewatch/v1/readings/gw-rongcheng/dq-btn-1"
    assert letter.reason == (
        "gateway gw-rongcheng spoke for device dq-btn-1, which the site file "
        "gives to gateway gw-dingqiao (dingqiao-eldercare)"
    )


async def _alarms_of(service: AlertService, device_id: str) -> list[db.Alarm]:
    return await rows(service, db.Alarm, device_id=device_id)


async def test_a_reading_stamped_an_hour_ahead_is_dead_lettered_not_stored(
    database_url,
    mosquitto,
    tmp_path: Path,
):
    async with database(database_url) as sessions:
        alerts = alert_service(sessions, robot_outbox(), broker=mosquitto)
        store = SqliteTimeSeries(tmp_path / "timeseries.db")
        await store.open()
        ingest = IngestService(
            store,
            Spool(tmp_path / "spool.db"),
            mosquitto,
            DeadLetters(sessions, "ingest"),
            max_wait_s=0.01,
            admit=admission_for(Settings(), SITE, PROFILES, "ingest", restamp=False),
        )
        try:
            async with running(alerts, ingest):
                # gas_high has no on-delay: believed, this reading would raise at once
                await publish(
                    mosquitto,
                    reading("rc-gas-1", ahead=timedelta(hours=1), gas_concentration=60.0),
                    reading("rc-gas-1", gas_concentration=0.5),
                )
                await until(lambda: _written(ingest, 1), "the reading of now to be stored")
                await until(lambda: _settled(alerts, "rc-gas-1"), "the reading of now applied")
        finally:
            await store.close()
        assert await rows(alerts, db.Alarm) == []
        letters = await rows(alerts, db.DeadLetter)
        assert sorted(d.consumer for d in letters) == ["alerts", "ingest"]
        assert all(
            " s ahead of its receipt, more than the 300 s allowed" in d.reason for d in letters
        )


async def _written(ingest: IngestService, n: int) -> bool:
    return ingest.written >= n


async def _settled(service: AlertService, device_id: str) -> bool:
    async with service.sessions() as session:
        device = await session.get(db.Device, device_id)
        return device.last_seen is not None


async def test_a_gateway_whose_clock_jumps_an_hour_ahead_and_back_loses_no_alarm(
    alerts,
    mosquitto,
):
    hour = timedelta(hours=1)
    # the clock jumps ahead: the readings are refused, the press is taken as read on receipt
    await publish(
        mosquitto,
        reading("rc-btn-1", ahead=hour, button_pressed=False),
        reading("rc-btn-1", ahead=hour, button_pressed=True),
    )
    await until(lambda: _alarms_of(alerts, "rc-btn-1"), "the first press's alarm")
    # and steps back: the button released, then pressed again
    await publish(
        mosquitto,
        reading("rc-btn-1", button_pressed=False),
        reading("rc-btn-1", button_pressed=True),
    )
    await until(lambda: _count(_alarms_of(alerts, "rc-btn-1"), 2), "the second press's alarm")

    first, second = sorted(await _alarms_of(alerts, "rc-btn-1"), key=lambda a: a.id)
    assert (first.status, second.status) == ("cleared", "active")
    assert first.raised_at < utc_now()  # the press's time is its receipt, not an hour ahead
    assert alerts.admission.restamped == 1


async def _count(alarms: Awaitable[list], n: int) -> bool:
    return len(await alarms) >= n


async def test_each_gateways_clock_offset_is_a_metric(alerts, mosquitto):
    await publish(
        mosquitto, heartbeat("gw-dingqiao", ahead=timedelta(minutes=2)), heartbeat("gw-rongcheng")
    )

    def offsets() -> dict[str, float]:
        registry = registry_for(FirewatchCollector(alerts=alerts))
        return {
            s.labels["gateway"]: s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == "firewatch_gateway_clock_offset_seconds"
        }

    async def both() -> bool:
        return len(offsets()) == 2

    await until(both, "both gateways' clock offsets")
    seen = offsets()
    # received - ts: a clock two minutes ahead, and one right (plus the delivery's delay)
    assert -120 <= seen["gw-dingqiao"] < -110
    assert 0 <= seen["gw-rongcheng"] < 10


async def test_a_press_after_the_gateways_clock_is_set_back_within_the_skew_is_an_alarm(
    alerts,
    mosquitto,
):
    # four minutes ahead is believed; NTP then sets the clock right, and the button is pressed
    await publish(
        mosquitto,
        reading("dq-btn-1", ahead=timedelta(minutes=4), button_pressed=False),
        reading("dq-btn-1", button_pressed=True),
    )
    await until(lambda: _alarms_of(alerts, "dq-btn-1"), "the press's alarm")
