"""A device's report through a real gateway and a real Mosquitto: hostile reports set aside, a
report acknowledged only once stored, a replaced outbox a new stream the alert service takes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from firewatch import db
from firewatch.consumer import GatewayMessageConsumer
from firewatch.contract import (
    GatewayHeartbeat,
    ReadingBatch,
    events_filter,
    heartbeats_filter,
    parse_message,
    readings_filter,
)
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import Site, load_site
from gateway.outbox import Outbox
from gateway.service import GatewayService
from tests.support.alerts import alert_service, database, robot_outbox

pytestmark = pytest.mark.timeout(120)

PROFILES = load_profiles()
BUTTON = "rc-btn-1"
UPLINK = f"devices/{BUTTON}/up"


def button_site() -> Site:
    """The demo's gw-rongcheng with only its one-key button (no Modbus line to simulate)."""
    site = load_site(SITES_DIR / "demo-county.yaml", PROFILES)
    gateway = next(g for g in site.gateways if g.id == "gw-rongcheng")
    return site.model_copy(
        update={
            "gateways": [gateway.model_copy(update={"endpoints": []})],
            "devices": [d for d in site.devices if d.id == BUTTON],
        }
    )


def gateway_for(broker, outbox: Path) -> GatewayService:
    site = button_site()
    return GatewayService(
        site.gateways[0], site, PROFILES, BrokerAddress.from_url(broker.url), outbox
    )


class Collector:
    """Every message the gateways publish, as a consumer on a plain persistent subscription."""

    def __init__(self, broker) -> None:
        self.messages: list = []

        async def collect(messages) -> None:
            self.messages.extend(messages)

        self.consumer = GatewayMessageConsumer(
            "collector",
            BrokerAddress.from_url(broker.url),
            collect,
            _NoDeadLetters(),
            streams=(readings_filter, events_filter, heartbeats_filter),
        )

    def presses(self) -> list[ReadingBatch]:
        return [
            m
            for m in self.messages
            if isinstance(m, ReadingBatch) and m.flags.get("button_pressed")
        ]


class _NoDeadLetters:
    count = 0

    async def put(self, topic, payload, reason):
        raise AssertionError(f"dead letter on {topic}: {reason}")


@asynccontextmanager
async def running(*services) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        yield
        for task in tasks:
            assert not task.done(), task.exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def report(broker, *payloads: bytes) -> None:
    """A device (or an attacker with its credentials) publishing with QoS 1."""
    async with BrokerAddress.from_url(broker.url).client(f"device-{BUTTON}") as device:
        for payload in payloads:
            await device.publish(UPLINK, payload, qos=1)


HOSTILE = [
    b'{"alarm": 1, "bat": 1' + b"0" * 400 + b"}",
    b'{"alarm": 1, "bat": 1.7976931348623157e308}',
    b'{"alarm": "\\ud800"}',
    b"[" * 30_000 + b"]" * 30_000,
    b"{" * 300_000,
    b"not json",
]


async def test_a_400_digit_battery_value_is_set_aside_and_the_next_press_still_arrives(
    broker, tmp_path
):
    collector = Collector(broker)
    gateway = gateway_for(broker, tmp_path / "outbox.db")
    async with running(collector.consumer, gateway):
        await collector.consumer.ready.wait()
        await gateway.listening.wait()
        # every hostile report, then one press sent a thousand times in a burst
        await report(broker, *HOSTILE, *[b'{"alarm": 1, "bat": 3.1}'] * 1000)
        await until(lambda: len(collector.presses()) == 1000, "every press to arrive")
    assert gateway.bridge is not None
    assert gateway.bridge.set_aside == {"bad_value": 3, "not_json": 2, "too_large": 1}
    batches = [m for m in collector.messages if isinstance(m, ReadingBatch)]
    assert len(batches) == 1000  # nothing was made of the hostile ones
    assert all(p.readings == {"battery_voltage": 3.1} for p in batches)


KILLED_WHILE_STORING = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from gateway.outbox import Outbox
    from tests.test_gateway_delivery import gateway_for

    class Broker:
        url = sys.argv[1]

    store = Outbox._insert

    def hang_on_readings(self, batch, *args):
        # the press has arrived, and its batch is being written: the process dies here
        if any(str(topic).startswith("firewatch/v1/readings/") for topic in batch[1::3]):
            print("storing", flush=True)
            time.sleep(3600)
        return store(self, batch, *args)

    Outbox._insert = hang_on_readings

    async def main():
        gateway = gateway_for(Broker, Path(sys.argv[2]))
        running = asyncio.create_task(gateway.run())
        await gateway.listening.wait()
        print("listening", flush=True)
        await running

    asyncio.run(main())
""")


async def test_a_press_reported_while_the_gateway_dies_is_delivered_after_restart(broker, tmp_path):
    collector = Collector(broker)
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_WHILE_STORING,
        broker.url,
        str(tmp_path / "outbox.db"),
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert doomed.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await doomed.stdout.readline() == b"listening\n"
            await report(broker, b'{"alarm": 1, "bat": 3.0}')
            assert await doomed.stdout.readline() == b"storing\n"
    finally:
        doomed.send_signal(signal.SIGKILL)
        assert await doomed.wait() == -signal.SIGKILL

    restarted = gateway_for(broker, tmp_path / "outbox.db")
    async with running(collector.consumer, restarted):
        await until(lambda: len(collector.presses()) == 1, "the press to arrive after restart")
    [press] = collector.presses()
    assert press.readings == {"battery_voltage": 3.0}


async def test_a_gateway_whose_outbox_file_was_deleted_delivers_its_first_press(broker, tmp_path):
    """Through Mosquitto into the alert service: the new outbox numbers its messages from 1
    again, under a new incarnation, and the press among them raises the alarm."""
    outbox = tmp_path / "outbox.db"
    async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as sessions:
        alerts = alert_service(sessions, robot_outbox(), broker=BrokerAddress.from_url(broker.url))
        first = gateway_for(broker, outbox)
        async with running(alerts, first):
            await first.listening.wait()
            await report(broker, *[b'{"alarm": 0, "bat": 3.0}'] * 5)
            await until(lambda: alerts.consumer.handled >= 6, "the quiet reports to be applied")
        old_incarnation = first.outbox.incarnation
        for leftover in tmp_path.glob("outbox.db*"):  # a new SD card
            leftover.unlink()

        second = gateway_for(broker, outbox)
        async with running(alerts, second):
            await second.listening.wait()
            await report(broker, b'{"alarm": 1, "bat": 3.0}')
            await until(lambda: alerts.raised == 1, "the press to raise an alarm")
        assert second.outbox.incarnation != old_incarnation
        assert second.outbox.last_seq < first.outbox.last_seq  # numbers already applied once
        async with sessions() as session:
            [alarm] = await session.scalars(select(db.Alarm))
            device = await session.get(db.Device, BUTTON)
        assert (alarm.device_id, alarm.rule) == (BUTTON, "one_key_alarm")
        assert device.state == "alarm"


async def test_a_gateway_puts_a_heartbeat_with_its_outbox_depth_in_its_outbox_every_interval(
    tmp_path,
):
    """While the broker is away the heartbeats wait in the outbox like the readings, each
    saying how many messages waited when it was made."""
    site = button_site()
    gateway = site.gateways[0].model_copy(update={"heartbeat_interval_s": 0.2})
    service = GatewayService(
        gateway, site, PROFILES, BrokerAddress("127.0.0.1", 1), tmp_path / "outbox.db"
    )
    async with running(service):
        await until(lambda: service.outbox.size >= 4, "four heartbeats")
    reopened = Outbox(tmp_path / "outbox.db")
    await reopened.open()
    beats = [parse_message(topic, payload) for _, topic, payload in await reopened.oldest(100)]
    await reopened.close()
    assert all(isinstance(b, GatewayHeartbeat) for b in beats)
    assert [b.outbox for b in beats[:4]] == [0, 1, 2, 3]
    assert {b.incarnation for b in beats} == {reopened.incarnation}
