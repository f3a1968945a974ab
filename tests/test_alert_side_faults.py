"""The alert side as ``firewatch up`` runs it, on a real Mosquitto, when one of its parts hits an
error nobody planned for: the alarms of everyone else still come through and are sent.

The alert service, the notifier and the escalation scheduler run in one task group, as the
process runs them; button presses arrive as a gateway publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from itertools import count

import pytest
from sqlalchemy import select

from firewatch import db
from firewatch.alert_side import AlertSide, alert_side
from firewatch.bench.servers import Mosquitto
from firewatch.contract import ReadingBatch, readings_topic
from firewatch.mqtt import BrokerAddress
from firewatch.settings import Settings
from firewatch.supervise import Supervisor
from tests.support.alerts import PROFILES, SITE, database
from tests.support.wecom import WeComServer

pytestmark = pytest.mark.timeout(120)

#: an institution's robot address that httpx cannot parse ("Invalid port"): its notices fail
BROKEN_WEBHOOK = "http://[::1/cgi-bin/webhook/send?key=k"
SEQ = count(1)


@pytest.fixture
def mosquitto(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield BrokerAddress.from_url(broker.url)
    broker.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def press(device_id: str, gateway_id: str, institution_id: str) -> ReadingBatch:
    return ReadingBatch(
        gateway_id=gateway_id,
        seq=next(SEQ),
        device_id=device_id,
        institution_id=institution_id,
        kind="one_key_alarm",
        ts=datetime.now(UTC),
        profile="generic-onekey-mqtt",
        readings={"battery_voltage": 3.0},
        flags={"button_pressed": True, "tamper": False},
    )


@contextlib.asynccontextmanager
async def running(side: AlertSide):
    """The side's services, each supervised, as ``firewatch up`` runs them."""
    task = asyncio.create_task(Supervisor().run(side.services()))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await side.close()


async def test_an_alert_process_whose_notifier_raises_an_unexpected_error_keeps_alarming(
    mosquitto, tmp_path
):
    broken = [
        i.model_copy(update={"wecom_webhook_url": BROKEN_WEBHOOK})
        if i.id == "rongcheng-eldercare"
        else i
        for i in SITE.institutions
    ]
    site = SITE.model_copy(update={"institutions": broken})
    with WeComServer() as robot:
        async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db", site) as sessions:

            async def notices() -> list[db.Notice]:
                """The robot's: the demo's presses also go by SMS and voice, unconfigured here."""
                async with sessions() as session:
                    return list(
                        await session.scalars(
                            select(db.Notice)
                            .where(db.Notice.channel == "wecom_robot")
                            .order_by(db.Notice.id)
                        )
                    )

            async def first_failed() -> bool:
                return [n.status for n in await notices()] == ["failed"]

            async def robot_got_one() -> bool:
                return sum(robot.robot.delivered().values()) == 1

            side = alert_side(
                Settings(wecom_webhook_url=robot.url), site, PROFILES, sessions, mosquitto
            )
            async with running(side) as process, mosquitto.client("gateways") as gateways:
                await asyncio.wait_for(side.alerts.consumer.ready.wait(), 10)
                first = press("rc-btn-1", "gw-rongcheng", "rongcheng-eldercare")
                await gateways.publish(
                    readings_topic(first.gateway_id, first.device_id), first.to_bytes(), qos=1
                )
                await eventually(first_failed, 10, "蓉城's notice marked failed")
                later = press("dq-btn-1", "gw-dingqiao", "dingqiao-eldercare")
                await gateways.publish(
                    readings_topic(later.gateway_id, later.device_id), later.to_bytes(), qos=1
                )
                await eventually(robot_got_one, 10, "丁桥's alarm notice at its robot")
                assert not process.done()
            assert side.alerts.raised == 2
            [failed, sent] = await notices()
            assert failed.last_error.startswith("InvalidURL")
            assert robot.robot.delivered() == {str(sent.id): 1}
