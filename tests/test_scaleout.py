"""Two alert replicas share the gateways; one is killed mid-stream and the other takes over."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from firewatch.bench.alarms import BUTTON, county
from firewatch.bench.recorder import WebhookRecorder
from firewatch.bench.replay import ReplayedGateway, presses
from firewatch.contract import utc_now
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.profiles import load_profiles
from firewatch.settings import Settings
from tests.support.processes import Service, kill_running, until

#: two service processes start (seconds on a quiet machine, minutes on a loaded one)
pytestmark = pytest.mark.timeout(300)

PRESSES = 8  # per button: with its releases, 16 notices, within a robot's 20 a minute


@pytest.fixture
def robot() -> Iterator[WebhookRecorder]:
    with WebhookRecorder() as recorder:
        yield recorder


def test_a_replica_killed_mid_stream_loses_no_alarm_and_raises_none_twice(
    tmp_path: Path, mosquitto: BrokerAddress, robot: WebhookRecorder
):
    site = county(6, robot)
    gateways = [g["id"] for g in site["gateways"]]
    assert {Partition(0, 2).owns(g) for g in gateways} == {True, False}  # both get gateways
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")
    database = tmp_path / "fw.db"
    env = {
        "FIREWATCH_MQTT_URL": f"mqtt://{mosquitto.host}:{mosquitto.port}",
        "FIREWATCH_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "FIREWATCH_DATA_DIR": str(tmp_path / "data"),
        "FIREWATCH_SITE_FILE": str(site_file),
        "FIREWATCH_CONSUMER_PARTITIONS": "2",
        "FIREWATCH_ALERTS_LEASE_S": "4",
        "FIREWATCH_NOTICE_STORM_WINDOW_S": "0",
    }

    def replica(index: int) -> Service:
        return Service(
            f"alerts-{index}",
            ["alerts"],
            {**env, "FIREWATCH_CONSUMER_PARTITION": str(index), "FIREWATCH_INSTANCE": f"r{index}"},
            tmp_path,
        )

    first = replica(0)  # first: it writes the site into the database
    services = [first]
    try:
        until(lambda: first.total("firewatch_alerts_partitions_held") >= 1, "r0 up", services, 180)
        second = replica(1)
        services.append(second)
        # r1's home partition comes back to it from r0, which took it while it was free
        until(lambda: second.total("firewatch_alerts_partitions_held") >= 1, "r1 up", services, 180)

        profile = load_profiles(Settings().profiles_dir)[BUTTON]
        buttons = {d["gateway"]: d for d in site["devices"] if d["id"].endswith("-0")}
        start = utc_now() - timedelta(minutes=1)
        streams = {
            g: presses(ReplayedGateway(g), buttons[g], profile, PRESSES, start) for g in gateways
        }
        messages = [m for step in zip(*streams.values(), strict=True) for m in step]
        half = len(messages) // 2
        asyncio.run(publish(mosquitto, messages[:half]))
        second.process.kill()  # SIGKILL, mid-stream: whatever it had not acknowledged is queued
        second.process.wait(10)
        services.remove(second)
        asyncio.run(publish(mosquitto, messages[half:]))

        until(lambda: alarms_raised(database) == 6 * PRESSES, "every press raised", services, 60)
        raised = raised_at(database)
        for gateway, button in buttons.items():
            expected = [start + timedelta(seconds=2 * n) for n in range(PRESSES)]
            assert raised[button["id"]] == expected, gateway  # once each, in the device's order
        assert first.total("firewatch_alerts_partition_takeovers_total") >= 1
        until(lambda: unsent(database) == 0, "the notices sent", services)
        assert len(robot.arrivals) == sent(database)  # none sent by both replicas
    finally:
        kill_running(services)


async def publish(broker: BrokerAddress, messages: list[tuple[str, bytes]]) -> None:
    async with broker.client("test-gateways") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def query(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql).fetchall()


def alarms_raised(database: Path) -> int:
    return query(database, "SELECT count(*) FROM alarms WHERE rule = 'one_key_alarm'")[0][0]


def raised_at(database: Path) -> dict[str, list]:
    found: dict[str, list] = {}
    for device, at in query(
        database,
        "SELECT device_id, raised_at FROM alarms WHERE rule = 'one_key_alarm' ORDER BY id",
    ):
        found.setdefault(device, []).append(datetime.fromisoformat(at).replace(tzinfo=UTC))
    return found


def unsent(database: Path) -> int:
    return query(database, "SELECT count(*) FROM notices WHERE status = 'pending'")[0][0]


def sent(database: Path) -> int:
    return query(database, "SELECT count(*) FROM notices WHERE status = 'sent'")[0][0]
