"""Vendor register maps, served by the simulators and read by the gateway over Modbus TCP.

A vendor profile follows the vendor's published addresses; the simulator serves those
addresses from the same profile, and the gateway's poller must decode what the simulator set.
"""

from __future__ import annotations

import pytest

from firewatch.mqtt import BrokerAddress
from firewatch.site import ModbusEndpoint
from gateway.modbus_poller import EndpointPoller
from simulators.fleet import SimulatorFleet
from tests.support.alerts import PROFILES
from tests.support.field_lines import one_gateway_site

pytestmark = pytest.mark.timeout(30)


async def test_a_vigipact_rhu_reports_the_leakage_it_measures_and_raises_its_alarm_bits():
    site = one_gateway_site(
        ModbusEndpoint(id="incomer-gateway", port=0, simulated=True),
        [("rhu-1", "schneider-vigipact-rhu", 7)],
    )
    profile = PROFILES["schneider-vigipact-rhu"]
    fleet = SimulatorFleet(site, PROFILES, BrokerAddress("127.0.0.1", 1), tick_s=60, seed=1)
    await fleet.start()
    polled: list[tuple[dict[str, float], dict[str, bool]]] = []

    async def on_readings(device, readings, flags, read_at) -> None:
        polled.append((readings, flags))

    async def on_event(*_) -> None:
        pass

    poller = EndpointPoller(
        site.gateways[0].endpoints[0],
        fleet.endpoint_port("incomer-gateway"),
        [(site.devices[0], profile)],
        on_readings,
        on_event,
    )
    try:
        await poller.poll_once(site.devices[0], profile)
        [simulated] = fleet.status()
        readings, flags = polled[-1]
        assert readings == pytest.approx(simulated["readings"], abs=0.5)
        assert readings["alarm_threshold"] == 300 and readings["prealarm_threshold"] == 150
        assert flags == {"device_alarm": False, "device_prealarm": False, "alarm_memorized": False}

        await fleet.trigger("rhu-1", "insulation-fault")
        await poller.poll_once(site.devices[0], profile)
        [simulated] = fleet.status()
        readings, flags = polled[-1]
        assert readings == pytest.approx(simulated["readings"], abs=0.5)
        assert readings["residual_current"] >= profile.rule("residual_current_high").set_point
        assert flags == {"device_alarm": True, "device_prealarm": True, "alarm_memorized": True}
        # the measured leakage is where the guide puts it: address 0x03EC
        raw = await poller.client.read_holding_registers(0x03EC, count=1, device_id=7)
        assert raw.registers == [round(simulated["readings"]["residual_current"])]
    finally:
        poller.client.close()
        await fleet.stop()
