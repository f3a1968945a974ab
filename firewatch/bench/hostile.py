"""A flood of hostile messages beside the alarm benchmark's load: ``--hostile-rate N``.

What a broken or compromised gateway or device could send, all valid MQTT and most of it valid
JSON: readings for another gateway's device, times in year 9999 or an hour ahead, numbers past
any float, 400-digit integers, unknown devices, broken JSON, device uplinks with values no
sensor has.  The benchmark measures whether a one-key press elsewhere still reaches the duty
staff on time while these arrive, and reports how many the services refused (dead letters and
refused uplinks, from their ``/metrics``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from firewatch.contract import readings_topic
from firewatch.mqtt import BrokerAddress

#: forged messages belong to a stream of their own, never the real gateway's
FORGED_INCARNATION = "b0b0b0b0b0b0b0b0"


def hostile_messages(site: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) for ever, cycling through the kinds of hostile message.

    ``site`` is the benchmark's county (see alarms.county): the flood speaks as the first
    gateway, against its own and the second institution's gas detectors, and as its first
    button, so that every measured alarm (from the other institutions) has to get past it.
    """
    own, other = site["gateways"][0]["id"], site["gateways"][1]["id"]

    def first(gateway: str, kind: str) -> dict[str, Any]:
        return next(
            d for d in site["devices"] if d["gateway"] == gateway and d["id"].startswith(kind)
        )

    own_gas, other_gas, own_button = first(own, "gas"), first(other, "gas"), first(own, "btn")
    uplink = f"devices/{own_button['id']}/up"
    seq = itertools.count(1)

    def forged(device: dict[str, Any], **changes: Any) -> tuple[str, bytes]:
        """A gas batch in this gateway's name, on its own stream, with ``changes``."""
        batch = {
            "schema": "firewatch.readings/1",
            "gateway_id": own,
            "incarnation": FORGED_INCARNATION,
            "seq": next(seq),
            "device_id": device["id"],
            "institution_id": device["institution"],
            "kind": "gas_detector",
            "ts": datetime.now(UTC).isoformat(),
            "profile": "generic-gas-lel",
            "readings": {"gas_concentration": 0.5},
            "flags": {},
            **changes,
        }
        return readings_topic(own, device["id"]), json.dumps(batch).encode()

    own_topic = readings_topic(own, own_gas["id"])
    makers: list[Callable[[], tuple[str, bytes]]] = [
        # another institution's device under this gateway's topic, at a gas-alarm level
        lambda: forged(other_gas, readings={"gas_concentration": 90.0}),
        lambda: forged(own_gas, ts="9999-12-31T23:59:59Z"),
        lambda: forged(own_gas, ts=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        lambda: forged(own_gas, readings={"gas_concentration": 1.7976931348623157e308}),
        lambda: forged({**own_gas, "id": "no-such-device"}),
        lambda: (own_topic, b'{"seq": 1' + b"0" * 400 + b"}"),
        lambda: (own_topic, b"[" * 10_000 + b"]" * 10_000),
        lambda: (uplink, b'{"alarm": 0, "bat": 1' + b"0" * 400 + b"}"),
        lambda: (uplink, b'{"alarm": "yes", "bat": 1e999}'),
        lambda: (uplink, b"\xff\xfe not json"),
    ]
    for make in itertools.cycle(makers):
        yield make()


async def flood(broker: BrokerAddress, site: dict[str, Any], rate: float, sent: list[int]) -> None:
    """Publish hostile messages at ``rate`` a second (QoS 0, as a flood would) until
    cancelled; ``sent[0]`` counts them."""
    messages = hostile_messages(site)
    async with broker.client("bench-hostile") as client:
        start = time.perf_counter()
        while True:
            due = int((time.perf_counter() - start) * rate) - sent[0]
            for _ in range(max(due, 0)):
                topic, payload = next(messages)
                await client.publish(topic, payload, qos=0)
                sent[0] += 1
            await asyncio.sleep(0.01)
