"""Every simulated device of a site, in one process: what `firewatch up` and the tests run.

One Modbus server per simulated endpoint of the site file (port 0 = a free port; a serial
line is served on the far end of a null-modem pair the caller names), one shared
MQTT connection for the MQTT-native devices, and one task that moves every device's values on
a fixed tick, so that a thousand devices cost one loop, not a thousand tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Mapping
from typing import Any

from pymodbus import FramerType

from firewatch.mqtt import BrokerAddress, free_port
from firewatch.profiles import DeviceProfile, Transport
from firewatch.site import Site
from simulators.device import SimulatedDevice
from simulators.modbus import SimulatedEndpoint
from simulators.mqtt_devices import MqttDevices


class SimulatorFleet:
    """The site's simulated devices: build, :meth:`start`, drive with :meth:`trigger`, :meth:`stop`.

    ``tick_s`` is how often values move on; ``slow_reply_s`` how late a ``slow-replies`` Modbus
    device answers; ``seed`` makes the noise repeatable.  ``serial_ports`` maps each simulated
    ``modbus_rtu`` endpoint to the serial device the simulator answers on: the other end of
    the line whose gateway end the site file names (e.g. socat's second pty).
    """

    def __init__(
        self,
        site: Site,
        profiles: dict[str, DeviceProfile],
        broker: BrokerAddress,
        *,
        tick_s: float = 0.5,
        slow_reply_s: float = 1.5,
        seed: int | None = None,
        serial_ports: Mapping[str, str] | None = None,
    ) -> None:
        self.tick_s = tick_s
        rng = random.Random(seed)
        self.devices = {
            d.id: SimulatedDevice(d, profiles[d.profile], random.Random(rng.random()))
            for d in site.devices
            if d.simulated
        }
        self.endpoints: dict[str, SimulatedEndpoint] = {}
        picked: set[int] = set()  # ports chosen here, none of them bound before start()
        for gateway in site.gateways:
            for endpoint in gateway.endpoints:
                units = [u for u in self.devices.values() if u.device.endpoint == endpoint.id]
                if not (endpoint.simulated and units):
                    continue
                if endpoint.transport is Transport.MODBUS_RTU:
                    far_end = (serial_ports or {}).get(endpoint.id)
                    if far_end is None:
                        raise ValueError(
                            f"endpoint {endpoint.id} is a simulated serial line: give the "
                            "simulators its other end (serial_ports)"
                        )
                    self.endpoints[endpoint.id] = SimulatedEndpoint(
                        endpoint.host,
                        endpoint.port,
                        units,
                        slow_reply_s=slow_reply_s,
                        serial_line=endpoint.model_copy(update={"serial": far_end}),
                    )
                    continue
                self.endpoints[endpoint.id] = SimulatedEndpoint(
                    endpoint.host,
                    endpoint.port or free_port(endpoint.host, picked),
                    units,
                    framer=(  # as the gateway's poller frames it
                        FramerType.RTU
                        if endpoint.transport is Transport.MODBUS_RTU_OVER_TCP
                        else FramerType.SOCKET
                    ),
                    slow_reply_s=slow_reply_s,
                )
        mqtt_units = [u for u in self.devices.values() if u.profile.transport is Transport.MQTT]
        self.mqtt = MqttDevices(broker, mqtt_units, f"fw-simulators-{secrets.token_hex(4)}")
        self._tasks: list[asyncio.Task] = []
        self._mqtt: asyncio.Task | None = None

    def endpoint_port(self, endpoint_id: str) -> int:
        """The port the endpoint's server listens on (the site file's, or the free one picked)."""
        return self.endpoints[endpoint_id].port

    def scenarios(self, device_id: str) -> list[str]:
        """Raises KeyError for a device this fleet does not simulate."""
        return self.devices[device_id].scenarios()

    async def trigger(self, device_id: str, scenario: str) -> None:
        """Start ``scenario`` on the device; its registers (or an MQTT report) show it at once.

        Raises KeyError for an unknown device, ValueError naming the valid scenarios for an
        unknown scenario.
        """
        unit = self.devices[device_id]
        now = asyncio.get_running_loop().time()
        unit.set_scenario(scenario, now)
        unit.tick(now)
        endpoint = self.endpoints.get(unit.device.endpoint or "")
        if endpoint is not None:
            await endpoint.write(unit)
        if unit.profile.transport is Transport.MQTT:
            self.mqtt.report_now(device_id)

    def status(self) -> list[dict[str, Any]]:
        """Each device's scenario and the values it is reporting now."""
        return [
            {
                "device_id": u.device.id,
                "profile": u.profile.model,
                "scenario": u.scenario,
                "scenarios": u.scenarios(),
                "readings": dict(u.readings),
                "flags": dict(u.flags),
            }
            for u in self.devices.values()
        ]

    async def start(self) -> None:
        """Power on the Modbus devices (they answer polls from now on) and the value ticks."""
        for endpoint in self.endpoints.values():
            await endpoint.start()
        self._tasks.append(asyncio.create_task(self._tick(), name="simulator-values"))

    def start_mqtt(self) -> None:
        """Power on the MQTT devices.  Their first report goes out at once and QoS 1 keeps no
        message for a subscriber that is not there yet, so call this once whoever listens to
        them is subscribed."""
        if self.mqtt.units:
            self._mqtt = asyncio.create_task(self.mqtt.run(), name="simulated-mqtt")
            self._tasks.append(self._mqtt)

    async def stop_mqtt(self) -> None:
        """Power off the MQTT devices: before their broker stops, which they would otherwise
        report lost."""
        if self._mqtt is not None:
            self._mqtt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mqtt

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for unit in self.devices.values():
                unit.tick(now)
            for endpoint in self.endpoints.values():
                await endpoint.refresh()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for endpoint in self.endpoints.values():
            await endpoint.stop()
