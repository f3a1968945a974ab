"""Consumers on persistent sessions of their own: what is published while one is away waits for it
on the broker (the embedded one and Mosquitto), and replicas split the gateways between them.

The broker restarts themselves, under load and with every shipped shape, are in
tests/test_broker_restarts.py.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from firewatch.bench.servers import Mosquitto
from firewatch.contract import GatewayMessage, ReadingBatch, message_topic, readings_filter
from firewatch.mqtt import BrokerAddress, EmbeddedBroker
from firewatch.partition import Partition
from firewatch.settings import Settings, SettingsError
from tests.support.consumers import Collected, consumer, running

pytestmark = pytest.mark.timeout(60)


def batch(gateway_id: str, seq: int) -> ReadingBatch:
    return ReadingBatch(
        gateway_id=gateway_id,
        seq=seq,
        device_id=f"{gateway_id}-gas",
        institution_id="inst-1",
        kind="gas_detector",
        ts=datetime.now(UTC),
        profile="generic-gas-lel",
        readings={"gas_concentration": seq / 10},
    )


async def publish(broker: BrokerAddress, messages: list[ReadingBatch]) -> None:
    async with broker.client("test-gateway") as client:
        for message in messages:  # one at a time, as a gateway's outbox sends them
            await client.publish(message_topic(message), message.to_bytes(), qos=1)


@pytest.fixture(params=["embedded", "mosquitto"])
async def broker(request, tmp_path) -> AsyncIterator[BrokerAddress]:
    """`firewatch up`'s default broker, and the production one."""
    if request.param == "embedded":
        embedded = EmbeddedBroker()
        await embedded.start()
        yield embedded.address
        await embedded.stop()
    else:
        mosquitto = Mosquitto(tmp_path)
        mosquitto.start()
        yield BrokerAddress.from_url(mosquitto.url)
        mosquitto.stop()


async def test_a_consumer_away_gets_what_was_published_meanwhile_in_order(broker):
    async with running(consumer(broker, Collected())):
        pass  # its persistent session and subscription exist from now on
    await publish(broker, [batch("gw-1", seq) for seq in range(1, 21)])

    collected = Collected()
    async with running(consumer(broker, collected)):
        await collected.until(20)
    assert collected.seqs == {"gw-1": list(range(1, 21))}


async def test_a_message_the_consumer_had_not_acknowledged_comes_again_after_a_reconnect(
    tmp_path,
):
    """On Mosquitto.  amqtt (the embedded broker) gives up on a PUBACK after 5 s or at a
    disconnect and does not send the message again."""
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    broker = BrokerAddress.from_url(mosquitto.url)
    holding = asyncio.Event()

    async def hold_the_first(messages: list[GatewayMessage]) -> None:
        holding.set()
        await asyncio.Event().wait()  # never applied, so never acknowledged

    collected = Collected()
    try:
        async with running(consumer(broker, hold_the_first)):
            await publish(broker, [batch("gw-1", 1)])
            async with asyncio.timeout(10):
                await holding.wait()
        await publish(broker, [batch("gw-1", seq) for seq in range(2, 11)])
        async with running(consumer(broker, collected)):
            await collected.until(10)
    finally:
        mosquitto.stop()
    assert collected.seqs == {"gw-1": list(range(1, 11))}


def test_partitions_split_gateways_by_a_hash_that_is_the_same_everywhere():
    gateways = [f"gw-{i}" for i in range(50)]
    owners = {g: [i for i in range(3) if Partition(i, 3).owns(g)] for g in gateways}
    assert all(len(owner) == 1 for owner in owners.values())
    assert owners["gw-7"] == [zlib.crc32(b"gw-7") % 3]
    assert {owner[0] for owner in owners.values()} == {0, 1, 2}
    assert Partition(2, 3).filters((readings_filter,), ["gw-b", "gw-a"]) == [
        readings_filter(g) for g in ("gw-a", "gw-b") if Partition(2, 3).owns(g)
    ]
    assert Partition().filters((readings_filter,), gateways) == [readings_filter()]


def test_a_partition_outside_the_count_is_refused_naming_the_settings():
    with pytest.raises(
        SettingsError,
        match="FIREWATCH_CONSUMER_PARTITION=2: .* 0 to FIREWATCH_CONSUMER_PARTITIONS - 1 = 1",
    ):
        Settings(_env_file=None, consumer_partitions=2, consumer_partition=2)


async def test_two_partitions_take_every_gateways_messages_once_each_gateway_in_order(tmp_path):
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    broker = BrokerAddress.from_url(mosquitto.url)
    gateways = tuple(f"gw-{i}" for i in range(6))
    halves = [Collected(), Collected()]
    try:
        async with running(
            *(consumer(broker, half, Partition(i, 2), gateways) for i, half in enumerate(halves))
        ):
            await publish(broker, [batch(g, seq) for seq in range(1, 11) for g in gateways])
            for half, partition in zip(halves, (Partition(0, 2), Partition(1, 2)), strict=True):
                await half.until(10 * sum(partition.owns(g) for g in gateways))
    finally:
        mosquitto.stop()
    for i, half in enumerate(halves):
        assert half.seqs, f"partition {i} of 2 got no gateway"
        assert half.seqs == {g: list(range(1, 11)) for g in gateways if Partition(i, 2).owns(g)}
