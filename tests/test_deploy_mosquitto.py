"""The production broker's config, run for real: Debian's Mosquitto with deploy/mosquitto/.

Only the paths and the port are adapted (a temporary directory, a free loopback port); the
ACL and every other line are the ones docker-compose.yml mounts, the password file is built by
the container's entrypoint.sh from the environment the compose file gives the broker, and the
credentials are the ones it gives each service.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import pytest

from firewatch.bench.servers import Mosquitto
from firewatch.contract import (
    CHANGES_FILTER,
    CHANGES_PREFIX,
    EVENTS_FILTER,
    HEARTBEATS_FILTER,
    READINGS_FILTER,
    ChangeKind,
    ChangeNotice,
    GatewayHeartbeat,
    ReadingBatch,
    change_topic,
    events_filter,
    events_topic,
    heartbeat_topic,
    heartbeats_filter,
    message_topic,
    readings_filter,
    readings_topic,
)
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import load_site
from tests.support.consumers import Collected, consumer, running
from tests.support.deploy import ROOT, firewatch_services, resolved_compose

pytestmark = pytest.mark.timeout(60)
DEPLOYED = ROOT / "deploy" / "mosquitto"


class DeployedMosquitto(Mosquitto):
    """The project's mosquitto.conf, passwd and acl in a work dir, on a free port."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        shutil.copy(DEPLOYED / "acl", workdir / "acl")
        build_password_file(workdir / "passwd")
        config = (DEPLOYED / "mosquitto.conf").read_text()
        config = config.replace("/mosquitto/config/", f"{workdir}/")
        config = config.replace("/mosquitto/data/", f"{workdir}/")
        assert "\nlistener 1883\n" in config
        config = config.replace("\nlistener 1883\n", f"\nlistener {self.port} 127.0.0.1\n")
        # started as root, mosquitto would drop to user mosquitto and lose the work dir
        self.config.write_text(config + f"\nuser {getpass.getuser()}\n")


def build_password_file(path: Path) -> subprocess.CompletedProcess[str]:
    """Run the broker container's entrypoint as compose starts it (its environment), with
    ``true`` for the broker."""
    environment = resolved_compose()["services"]["mosquitto"]["environment"]
    return subprocess.run(
        ["sh", str(DEPLOYED / "entrypoint.sh"), "true"],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "MOSQUITTO_PASSWD_FILE": str(path), **environment},
    )


def credentials() -> dict[str, BrokerAddress]:
    """Each compose service's broker user and password, as docker compose resolves them."""
    return {
        name: BrokerAddress.from_url(service["environment"]["FIREWATCH_MQTT_URL"])
        for name, service in firewatch_services().items()
        if "FIREWATCH_MQTT_URL" in service.get("environment", {})
    }


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = DeployedMosquitto(tmp_path_factory.mktemp("deployed-mosquitto"))
    server.start()
    yield server
    server.stop()


def local_address(broker: DeployedMosquitto, service: str) -> BrokerAddress:
    """The broker as ``service`` reaches it, with its credentials."""
    address = credentials()[service]
    return BrokerAddress("127.0.0.1", broker.port, address.username, address.password)


def login(broker: DeployedMosquitto, service: str, replica: str = "") -> aiomqtt.Client:
    return local_address(broker, service).client(f"test-{service}{replica}")


async def received_until(subscriber: aiomqtt.Client, last: bytes) -> list[tuple[str, bytes]]:
    got = []
    async with asyncio.timeout(10):
        async for message in subscriber.messages:
            got.append((str(message.topic), bytes(message.payload)))
            if got[-1][1] == last:
                return got
    raise AssertionError("unreachable")


async def test_every_service_logs_in_with_the_credentials_the_compose_file_gives_it(broker):
    assert {urlsplit(f"mqtt://{a.username}@x").username for a in credentials().values()} == {
        "gw-rongcheng",
        "gw-dingqiao",
        "gw-child-welfare",
        "ingest",
        "alerts",
        "web",
    }
    for service in credentials():
        async with login(broker, service):
            pass


async def test_a_gateway_publishes_its_own_messages_but_not_another_gateways_nor_changes(broker):
    own = [
        readings_topic("gw-rongcheng", "rc-gas-1"),
        events_topic("gw-rongcheng", "rc-gas-1"),
        heartbeat_topic("gw-rongcheng"),
    ]
    forged = [
        readings_topic("gw-dingqiao", "dq-gas-1"),
        events_topic("gw-dingqiao", "dq-gas-1"),
        heartbeat_topic("gw-dingqiao"),
        f"{CHANGES_PREFIX}/gw-rongcheng",
        change_topic(alarm_notice("forged")),
    ]
    real = alarm_notice("from alerts")
    async with (
        login(broker, "alerts") as alerts,
        login(broker, "web") as web,
        login(broker, "gateway-rongcheng") as gateway,
    ):
        for topic_filter in (READINGS_FILTER, EVENTS_FILTER, HEARTBEATS_FILTER):
            await alerts.subscribe(topic_filter, qos=1)
        await web.subscribe(CHANGES_FILTER, qos=1)
        for topic in forged:
            await gateway.publish(topic, b"forged", qos=1)
        for topic in own:
            await gateway.publish(topic, topic.encode(), qos=1)
        await alerts.publish(change_topic(real), real.to_bytes(), qos=1)
        assert await received_until(alerts, own[-1].encode()) == [(t, t.encode()) for t in own]
        assert await received_until(web, real.to_bytes()) == [(change_topic(real), real.to_bytes())]


async def test_each_consumer_partition_reads_the_messages_of_its_own_gateways(broker):
    """As docker-compose.yml runs them: ingest in two partitions, alerts in one."""
    gateways = [g.id for g in load_site(SITES_DIR / "demo-county.yaml", load_profiles()).gateways]
    shapes = {
        ("ingest", 2): (readings_filter, events_filter),
        ("alerts", 1): (readings_filter, events_filter, heartbeats_filter),
    }
    partitions = [
        (service, Partition(index, count), streams)
        for (service, count), streams in shapes.items()
        for index in range(count)
    ]
    collected = [Collected() for _ in partitions]
    async with running(
        *(
            consumer(local_address(broker, service), handler, partition, gateways, streams, service)
            for (service, partition, streams), handler in zip(partitions, collected, strict=True)
        )
    ):
        for gateway_id in gateways:
            async with login(broker, gateway_id.replace("gw-", "gateway-")) as gateway:
                for message in (a_reading(gateway_id, seq=1), a_heartbeat(gateway_id, seq=2)):
                    await gateway.publish(message_topic(message), message.to_bytes(), qos=1)
        for (service, partition, _), handler in zip(partitions, collected, strict=True):
            mine = [g for g in gateways if partition.owns(g)]
            expected = {g: [1, 2] if service == "alerts" else [1] for g in mine}
            await handler.until(sum(map(len, expected.values())))
            assert handler.seqs == expected, (service, str(partition))


def a_reading(gateway_id: str, seq: int) -> ReadingBatch:
    return ReadingBatch(
        gateway_id=gateway_id,
        seq=seq,
        device_id="dev-1",
        institution_id="i-1",
        kind="gas_detector",
        ts=datetime.now(UTC),
        profile="generic-gas-lel",
    )


def a_heartbeat(gateway_id: str, seq: int) -> GatewayHeartbeat:
    return GatewayHeartbeat(gateway_id=gateway_id, seq=seq, ts=datetime.now(UTC))


async def test_the_consumers_can_read_but_not_publish(broker):
    topic = readings_topic("gw-rongcheng", "rc-gas-1")
    async with (
        login(broker, "alerts") as alerts,
        login(broker, "ingest") as ingest,
        login(broker, "gateway-rongcheng") as gateway,
    ):
        await alerts.subscribe(READINGS_FILTER, qos=1)
        await ingest.publish(topic, b"from ingest", qos=1)
        await gateway.publish(topic, b"from the gateway", qos=1)
        got = await received_until(alerts, b"from the gateway")
    assert got == [(topic, b"from the gateway")]


def alarm_notice(note: str) -> ChangeNotice:
    return ChangeNotice(
        kind=ChangeKind.ALARM, institution_id="rongcheng-eldercare", data={"id": 1, "note": note}
    )


async def test_every_web_replica_reads_the_change_notices_the_alert_service_publishes(broker):
    notice = alarm_notice("from alerts")
    async with (
        login(broker, "web", "-a") as web_a,
        login(broker, "web", "-b") as web_b,
        login(broker, "alerts") as alerts,
    ):
        for web in (web_a, web_b):
            await web.subscribe(CHANGES_FILTER, qos=1)
        await alerts.publish(change_topic(notice), notice.to_bytes(), qos=1)
        for web in (web_a, web_b):
            assert await received_until(web, notice.to_bytes()) == [
                (change_topic(notice), notice.to_bytes())
            ]


async def test_only_the_alert_service_may_publish_change_notices(broker):
    forged, real = alarm_notice("forged"), alarm_notice("from alerts")
    async with (
        login(broker, "web") as web,
        login(broker, "ingest") as ingest,
        login(broker, "gateway-rongcheng") as gateway,
        login(broker, "alerts") as alerts,
    ):
        await web.subscribe(CHANGES_FILTER, qos=1)
        for forger in (web, ingest, gateway):
            await forger.publish(change_topic(forged), forged.to_bytes(), qos=1)
        await alerts.publish(change_topic(real), real.to_bytes(), qos=1)
        got = await received_until(web, real.to_bytes())
    assert got == [(change_topic(real), real.to_bytes())]


async def test_the_web_app_cannot_read_the_gateways_readings(broker):
    reading, notice = readings_topic("gw-rongcheng", "rc-gas-1"), alarm_notice("after")
    async with (
        login(broker, "web") as web,
        login(broker, "gateway-rongcheng") as gateway,
        login(broker, "alerts") as alerts,
    ):
        await web.subscribe(READINGS_FILTER, qos=1)
        await web.subscribe(CHANGES_FILTER, qos=1)
        await gateway.publish(reading, b"a reading", qos=1)
        await alerts.publish(change_topic(notice), notice.to_bytes(), qos=1)
        got = await received_until(web, notice.to_bytes())
    assert got == [(change_topic(notice), notice.to_bytes())]


async def test_a_gateway_hears_its_own_buttons_but_not_another_institutions(broker):
    async with login(broker, "gateway-rongcheng") as gateway:
        await gateway.subscribe("devices/+/up", qos=1)
        await gateway.publish("devices/dq-btn-1/up", b'{"alarm": 1}', qos=1)
        await gateway.publish("devices/rc-btn-1/up", b'{"alarm": 0}', qos=1)
        got = await received_until(gateway, b'{"alarm": 0}')
    assert got == [("devices/rc-btn-1/up", b'{"alarm": 0}')]


async def test_a_wrong_password_and_no_password_are_refused(broker):
    for username, password in (("gw-rongcheng", "wrong"), (None, None)):
        client = BrokerAddress("127.0.0.1", broker.port, username, password).client("intruder")
        with pytest.raises(aiomqtt.MqttError, match="[Nn]ot authori[sz]ed"):
            async with client:
                pass


def test_the_repository_holds_no_broker_password_and_an_empty_one_stops_the_broker(tmp_path):
    assert not (DEPLOYED / "passwd").exists()
    environment = resolved_compose()["services"]["mosquitto"]["environment"]
    refused = subprocess.run(
        ["sh", str(DEPLOYED / "entrypoint.sh"), "echo", "started"],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ["PATH"],
            "MOSQUITTO_PASSWD_FILE": str(tmp_path / "p"),
            **environment,
            "MQTT_PASSWORD_INGEST": "",
        },
    )
    assert refused.returncode != 0 and "MQTT_PASSWORD_INGEST is empty" in refused.stderr
    assert "started" not in refused.stdout
