"""The self-check of the whole chain (巡检): a silent gateway is a link fault, and a silent alert
service is news for the bureau.

On a real Mosquitto and real databases; the bureau's robot is the strict local WeChat Work fake.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from alerts.notices import NoticeMessage, wecom_markdown
from alerts.service import AlertService
from firewatch import db
from firewatch.bench.servers import Mosquitto
from firewatch.bench.stack_process import SCRAPE_TOKEN
from firewatch.contract import GatewayHeartbeat, ReadingBatch, message_topic, utc_now
from firewatch.mqtt import BrokerAddress, free_port
from tests.support.alerts import alert_service, database, robot_outbox
from tests.support.processes import Service, until
from tests.support.wecom import WeComServer

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def serving(service: AlertService) -> AsyncIterator[None]:
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.consumer.ready.wait(), 10)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def eventually(service: AlertService, query, what: str):
    """The first row ``query`` finds, once there is one."""
    for _ in range(400):
        async with service.sessions() as session:
            row = (await session.scalars(query)).first()
        if row is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(notice: db.Notice) -> str:
    return wecom_markdown(NoticeMessage.model_validate(notice.body), notice.id)["markdown"][
        "content"
    ]


async def test_a_silent_gateway_becomes_a_link_fault_and_a_notice_and_its_return_clears_it(
    database_url,
    broker: Mosquitto,
):
    mqtt = BrokerAddress.from_url(broker.url)
    async with database(database_url) as sessions:
        service = alert_service(
            sessions, robot_outbox(), broker=mqtt, silent_after=timedelta(seconds=1)
        )
        async with serving(service), mqtt.client("gw-rongcheng") as gateway:
            batch = ReadingBatch(
                gateway_id="gw-rongcheng",
                seq=1,
                device_id="rc-gas-1",
                institution_id="rongcheng-eldercare",
                kind="gas_detector",
                ts=utc_now(),
                profile="generic-gas-lel",
                readings={"gas_concentration": 0.5},
            )
            await gateway.publish(message_topic(batch), batch.to_bytes(), qos=1)
            # then nothing from gw-rongcheng for longer than its second
            link = select(db.Alarm).where(db.Alarm.gateway_id == "gw-rongcheng")
            fault = await eventually(service, link, "the link fault")
            async with service.sessions() as session:
                device = await session.get(db.Device, "rc-gas-1")
                [raised] = await session.scalars(
                    select(db.Notice).where(db.Notice.alarm_id == fault.id)
                )
            assert (fault.institution_id, fault.title, fault.severity, fault.status) == (
                "rongcheng-eldercare",
                "网关通信中断",
                "fault",
                "active",
            )
            assert device.state == "offline" and "网关通信中断（gw-rongcheng" in device.state_reason
            assert "【故障】蓉城镇敬老院（演示）：网关通信中断" in text_of(raised)
            assert "网关 gw-rongcheng 自" in text_of(raised)

            beat = GatewayHeartbeat(gateway_id="gw-rongcheng", seq=2, ts=utc_now(), outbox=0)
            await gateway.publish(message_topic(beat), beat.to_bytes(), qos=1)
            await eventually(service, link.where(db.Alarm.status == "cleared"), "the clearing")
            async with service.sessions() as session:
                device = await session.get(db.Device, "rc-gas-1")
                notices = list(
                    await session.scalars(
                        select(db.Notice)
                        .where(db.Notice.alarm_id == fault.id)
                        .order_by(db.Notice.id)
                    )
                )
                row = await session.get(db.GatewayLink, "gw-rongcheng")
            assert (device.state, device.state_reason) == ("normal", "运行正常")
            assert "【恢复】蓉城镇敬老院（演示）：网关通信中断已恢复" in text_of(notices[-1])
            assert row.last_heartbeat_at is not None and row.outbox == 0


def test_the_bureau_is_told_when_the_alert_service_stops(
    tmp_path: Path,
    broker: Mosquitto,
    database: str,
    robot: WeComServer,
):
    env = {
        "FIREWATCH_MQTT_URL": broker.url,
        "FIREWATCH_DATABASE_URL": database,
        "FIREWATCH_DATA_DIR": str(tmp_path),
        "FIREWATCH_WECOM_WEBHOOK_URL": robot.url,
        "FIREWATCH_MONITOR_SILENT_AFTER_S": "2",
    }
    alerts = Service("alerts", ["alerts"], env, tmp_path)
    started = [alerts]
    try:
        until(lambda: alerts.metrics() is not None, "alerts to serve metrics", started)
        web = Service("web", ["web"], {**env, "FIREWATCH_PORT": str(free_port())}, tmp_path)
        started.append(web)

        def health() -> dict:  # the details, as the operators' monitoring reads them
            return httpx.get(
                f"http://127.0.0.1:{web.port}/api/health",
                headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"},
            ).json()

        def told(label: str) -> bool:
            return any(
                f"【{label}】青阳县民政局（演示）" in r.body["markdown"]["content"]
                for r in robot.robot.accepted
            )

        until(lambda: health()["status"] == "ok", "the web process to see alerts alive", started)
        os.kill(alerts.process.pid, signal.SIGKILL)
        alerts.process.wait(10)
        until(lambda: told("监控中断"), "the bureau's monitoring-interrupted notice", [web])
        assert health()["status"] == "degraded"
        assert health()["reasons"][0].startswith("monitor: 报警服务自 ")

        started.append(Service("alerts-again", ["alerts"], env, tmp_path))
        until(lambda: told("监控恢复"), "the bureau's monitoring-restored notice", started[1:])
        assert health()["status"] == "ok"
        assert sum(told_once(robot, "监控中断")) == 1
    finally:
        for service in started:
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait(10)


def told_once(robot: WeComServer, label: str) -> list[int]:
    return [1 for r in robot.robot.accepted if f"【{label}】" in r.body["markdown"]["content"]]
