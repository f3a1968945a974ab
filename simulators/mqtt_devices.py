"""Simulated MQTT-native devices (one-key alarm buttons): JSON uplinks in the device's own keys.

All simulated MQTT devices of a fleet share one broker connection (a thousand buttons need not
cost a thousand connections).  Each reports with QoS 1 on its profile's heartbeat interval and
at once when its scenario changes, so a pressed button does not wait for the next heartbeat.
Link scenarios: an ``offline`` device stays silent; a ``garbled`` one sends truncated JSON.
If the broker goes away the devices reconnect with backoff and report again on their return.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiomqtt

from firewatch.mqtt import BrokerAddress
from simulators.device import GARBLED, OFFLINE, SimulatedDevice

log = logging.getLogger(__name__)


def uplink(unit: SimulatedDevice) -> tuple[str, bytes]:
    """The device's topic and payload: the profile's JSON keys (the inverse of its maps)."""
    mqtt = unit.profile.mqtt
    assert mqtt is not None
    body: dict[str, float | int] = {
        key: round(unit.readings[name], 3)
        for key, name in mqtt.readings.items()
        if name in unit.readings
    }
    body.update({key: int(unit.flags[name]) for key, name in mqtt.flags.items()})
    payload = json.dumps(body).encode()
    if unit.scenario == GARBLED:
        payload = payload[: len(payload) // 2]
    return mqtt.topic_for(unit.device.id), payload


class MqttDevices:
    """Every simulated MQTT device of a fleet, publishing over one client ``identifier``."""

    def __init__(
        self, broker: BrokerAddress, units: list[SimulatedDevice], identifier: str
    ) -> None:
        self.broker = broker
        self.units = {u.device.id: u for u in units}
        self.identifier = identifier
        self._due: asyncio.Queue[str] = asyncio.Queue()

    def report_now(self, device_id: str) -> None:
        self._due.put_nowait(device_id)

    async def run(self) -> None:
        """Publish until cancelled, reconnecting with backoff (0.2 s doubling to 5 s)."""
        delay = 0.2
        while True:
            try:
                async with self.broker.client(self.identifier) as client:
                    delay = 0.2
                    for device_id in self.units:  # a device reports when it (re)connects
                        self.report_now(device_id)
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._publish(client))
                        tasks.create_task(self._heartbeats())
                        tasks.create_task(self._until_disconnected(client))
            except* aiomqtt.MqttError as group:
                log.warning(
                    "simulated MQTT devices lost the broker (%s); retrying in %.1f s",
                    group.exceptions[0],
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    @staticmethod
    async def _until_disconnected(client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the broker goes away.

        A QoS 1 publish in flight then would wait for its PUBACK until aiomqtt's 10 s timeout;
        the message iterator (we subscribe to nothing) is aiomqtt's way to hear of it at once.
        """
        async for _ in client.messages:
            pass

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            unit = self.units[await self._due.get()]
            if unit.scenario != OFFLINE:
                await client.publish(*uplink(unit), qos=1)

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        due = {
            device_id: loop.time() + u.profile.poll_interval_s
            for device_id, u in self.units.items()
        }
        while True:
            now = loop.time()
            for device_id, at in due.items():
                if at <= now:
                    self.report_now(device_id)
                    due[device_id] = now + self.units[device_id].profile.poll_interval_s
            await asyncio.sleep(max(0.05, min(due.values(), default=now + 1) - loop.time()))
