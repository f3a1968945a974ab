"""Simulated MQTT-native devices (one-key alarm buttons): JSON uplinks in the device's own keys.

All simulated MQTT devices of a fleet share one broker connection.  Each reports on its
profile's heartbeat interval and at once when its scenario changes (a pressed button does not
wait for the next heartbeat); an ``offline`` device stays silent.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiomqtt

from firewatch.mqtt import BrokerAddress
from simulators.device import SimulatedDevice

log = logging.getLogger(__name__)


def uplink(unit: SimulatedDevice, now: float) -> tuple[str, bytes]:
    """The device's topic and JSON payload, keyed as the profile says the device keys it."""
    mqtt = unit.profile.mqtt
    assert mqtt is not None
    readings = unit.readings(now)
    body: dict[str, float | int] = {
        key: round(readings[name], 3) for key, name in mqtt.readings.items() if name in readings
    }
    body.update({key: int(unit.flags.get(name, False)) for key, name in mqtt.flags.items()})
    return mqtt.topic_for(unit.device.id), json.dumps(body).encode()


class MqttDevices:
    def __init__(self, broker: BrokerAddress, units: list[SimulatedDevice], name: str) -> None:
        self.broker = broker
        self.units = {u.device.id: u for u in units}
        self.name = name
        self._now: asyncio.Queue[str] = asyncio.Queue()
        self.published = 0

    def report_now(self, device_id: str) -> None:
        self._now.put_nowait(device_id)

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with self.broker.client(self.name) as client:
                    delay = 0.2
                    for device_id in self.units:  # a device reports when it powers up
                        self.report_now(device_id)
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._publish(client))
                        tasks.create_task(self._heartbeats())
            except* aiomqtt.MqttError as group:
                log.warning("simulated MQTT devices lost the broker (%s)", group.exceptions[0])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)

    async def _publish(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        while True:
            unit = self.units[await self._now.get()]
            if unit.offline:
                continue
            topic, payload = uplink(unit, loop.time())
            await client.publish(topic, payload, qos=1)
            self.published += 1

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        due = {device_id: loop.time() + u.profile.poll_interval_s
               for device_id, u in self.units.items()}
        while True:
            now = loop.time()
            for device_id, at in due.items():
                if at <= now:
                    self.report_now(device_id)
                    due[device_id] = now + self.units[device_id].profile.poll_interval_s
            await asyncio.sleep(max(0.05, min(due.values(), default=now + 1) - loop.time()))
