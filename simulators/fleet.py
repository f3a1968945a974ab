"""Every simulated device of a site, in one process: what `firewatch up` and the tests run.

One Modbus server per simulated endpoint of the site file (port 0 = a free port), one shared
MQTT connection for the MQTT-native devices, and one task that refreshes every device's values
on a fixed tick, so that a thousand devices cost one loop, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from firewatch.mqtt import BrokerAddress, free_port
from firewatch.profiles import DeviceProfile, Transport
from firewatch.site import Site
from simulators.device import SimulatedDevice
from simulators.modbus import SimulatedEndpoint
from simulators.mqtt_devices import MqttDevices


class SimulatorFleet:
    def __init__(
        self,
        site: Site,
        profiles: dict[str, DeviceProfile],
        broker: BrokerAddress,
        *,
        tick_s: float = 0.5,
        seed: int | None = None,
    ) -> None:
        self.tick_s = tick_s
        rng = random.Random(seed)
        self.devices = {
            d.id: SimulatedDevice(d, profiles[d.profile], random.Random(rng.random()))
            for d in site.devices
            if d.simulated
        }
        self.endpoints: dict[str, SimulatedEndpoint] = {}
        for gateway in site.gateways:
            for endpoint in gateway.endpoints:
                units = [u for u in self.devices.values() if u.device.endpoint == endpoint.id]
                if endpoint.simulated and units:
                    port = endpoint.port or free_port(endpoint.host)
                    self.endpoints[endpoint.id] = SimulatedEndpoint(endpoint.host, port, units)
        mqtt_units = [u for u in self.devices.values() if u.profile.transport is Transport.MQTT]
        self.mqtt = MqttDevices(broker, mqtt_units, f"fw-simulators-{id(self):x}")
        self._tasks: list[asyncio.Task] = []

    def endpoint_port(self, endpoint_id: str) -> int:
        return self.endpoints[endpoint_id].port

    def scenarios(self, device_id: str) -> list[str]:
        """Raises KeyError for a device this fleet does not simulate."""
        return self.devices[device_id].scenarios()

    async def trigger(self, device_id: str, scenario: str) -> None:
        unit = self.devices[device_id]
        unit.set_scenario(scenario, asyncio.get_running_loop().time())
        if unit.profile.transport is Transport.MQTT:
            self.mqtt.report_now(device_id)

    def status(self) -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        return [
            {"device_id": u.device.id, "profile": u.profile.model, "scenario": u.scenario,
             "scenarios": u.scenarios(), "readings": u.readings(now), "flags": u.flags}
            for u in self.devices.values()
        ]

    async def start(self) -> None:
        """Power on the Modbus devices (they answer polls from now on)."""
        for endpoint in self.endpoints.values():
            await endpoint.start()
        self._tasks.append(asyncio.create_task(self._refresh(), name="simulator-values"))

    def start_mqtt(self) -> None:
        """Power on the MQTT devices; their first report goes out at once, so call this once
        whoever listens to them is subscribed."""
        if self.mqtt.units:
            self._tasks.append(asyncio.create_task(self.mqtt.run(), name="simulated-mqtt"))

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            for endpoint in self.endpoints.values():
                await endpoint.refresh(loop.time())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for endpoint in self.endpoints.values():
            await endpoint.stop()
