"""Modbus RTU on a serial line: the gateway's poller on one pty, the simulators on the other.

socat joins the two ptys (``tests/support/field_lines.py``): the poller opens its end with
pymodbus's serial client as it would open /dev/ttyUSB0, and the simulators answer RTU on the
other end with pymodbus's serial server, one unit id per device on the line.  Scenarios have
their ramps cut and polls time out after 0.3 s, so a leak shows in one poll and a dead line in
three.
"""

from __future__ import annotations

import contextlib
from itertools import count

import pytest
from sqlalchemy import select

from firewatch import db
from firewatch.contract import EventType, ReadingBatch, utc_now
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import DeviceProfile, Transport
from firewatch.site import Device, ModbusEndpoint, Site
from gateway.modbus_poller import EndpointPoller
from simulators.fleet import SimulatorFleet
from tests.support.alerts import PROFILES, alert_service, database, robot_outbox
from tests.support.field_lines import NullModem, one_gateway_site

pytestmark = pytest.mark.timeout(60)

NO_BROKER = BrokerAddress("127.0.0.1", 1)  # no MQTT devices here
LINE = "kitchen-rs485"


def quick(profile: DeviceProfile) -> DeviceProfile:
    scenarios = {
        name: s.model_copy(update={"ramp_s": 0}) for name, s in profile.simulation.scenarios.items()
    }
    simulation = profile.simulation.model_copy(update={"scenarios": scenarios})
    return profile.model_copy(update={"timeout_s": 0.3, "retries": 0, "simulation": simulation})


QUICK = {model: quick(p) for model, p in PROFILES.items()}


@pytest.fixture
def line(tmp_path):
    modem = NullModem(tmp_path)
    modem.start()
    yield modem
    modem.stop()


@pytest.fixture
def site(line) -> Site:
    endpoint = ModbusEndpoint(
        id=LINE,
        transport=Transport.MODBUS_RTU,
        serial=str(line.gateway_end),
        baudrate=19200,
        parity="N",
        stopbits=1,
        bytesize=8,
        simulated=True,
    )
    return one_gateway_site(
        endpoint,
        [
            ("rtu-efm-1", "generic-efm-4t", 1),
            ("rtu-gas-1", "generic-gas-lel", 2),
            ("rtu-btn-1", "generic-onekey-modbus", 5),
        ],
    )


@contextlib.asynccontextmanager
async def simulators(site: Site, line: NullModem):
    """The line's devices, powered on; the values hold still (60 s tick) unless triggered."""
    fleet = SimulatorFleet(
        site, QUICK, NO_BROKER, tick_s=60, seed=1, serial_ports={LINE: str(line.device_end)}
    )
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


class Polled:
    """What the poller handed on: each device's latest readings and flags, and link events."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[dict[str, float], dict[str, bool]]] = {}
        self.events: list[tuple[str, EventType, str]] = []

    async def on_readings(self, device: Device, readings, flags, read_at) -> None:
        self.latest[device.id] = (readings, flags)

    async def on_event(self, device: Device, event: EventType, reason: str) -> None:
        self.events.append((device.id, event, reason))


@contextlib.asynccontextmanager
async def gateway_poller(site: Site, on_readings, on_event):
    devices = [(d, QUICK[d.profile]) for d in site.devices]
    poller = EndpointPoller(site.gateways[0].endpoints[0], 0, devices, on_readings, on_event)
    try:
        yield poller
    finally:
        poller.client.close()


async def poll_line(poller: EndpointPoller, times: int = 1) -> None:
    for _ in range(times):
        for device, profile in poller.devices:
            await poller.poll_once(device, profile)


def assert_polled_what_the_simulators_hold(polled: Polled, fleet: SimulatorFleet) -> None:
    for device in fleet.status():
        readings, flags = polled.latest[device["device_id"]]
        assert readings == pytest.approx(device["readings"], abs=0.5), device["device_id"]
        assert flags == device["flags"], device["device_id"]


async def test_a_gas_leak_on_an_rs485_line_is_read_through_the_serial_port(site, line):
    polled = Polled()
    async with (
        simulators(site, line) as fleet,
        gateway_poller(site, polled.on_readings, polled.on_event) as poller,
    ):
        await poll_line(poller)
        assert_polled_what_the_simulators_hold(polled, fleet)
        assert polled.latest["rtu-gas-1"][0]["gas_concentration"] < 1.5

        await fleet.trigger("rtu-gas-1", "gas-leak")
        await poll_line(poller)
    readings, flags = polled.latest["rtu-gas-1"]
    assert readings["gas_concentration"] == pytest.approx(60, abs=0.5)
    assert flags == {"device_low_alarm": True, "device_high_alarm": True, "sensor_fault": False}
    assert_polled_what_the_simulators_hold(polled, fleet)
    assert polled.latest["rtu-efm-1"][1]["device_residual_alarm"] is False  # its neighbour


async def test_devices_on_a_line_whose_simulator_stops_go_offline_with_the_reason_and_come_back(
    site, line
):
    polled = Polled()
    async with gateway_poller(site, polled.on_readings, polled.on_event) as poller:
        async with simulators(site, line):
            await poll_line(poller)
        assert {(d, e) for d, e, _ in polled.events} == {
            (d.id, EventType.ONLINE) for d in site.devices
        }
        polled.events.clear()

        await poll_line(poller, times=3)  # offline_after_misses: 3
        reasons = {d: reason for d, event, reason in polled.events if event is EventType.OFFLINE}
        assert sorted(reasons) == ["rtu-btn-1", "rtu-efm-1", "rtu-gas-1"]
        assert reasons["rtu-gas-1"].startswith(
            f"no answer to 3 polls in a row from {LINE} unit 2: ModbusIOException"
        )
        polled.events.clear()

        async with simulators(site, line):
            await poll_line(poller)
    assert {(d, e) for d, e, _ in polled.events} == {(d.id, EventType.ONLINE) for d in site.devices}


async def test_pressing_a_wired_one_key_button_raises_the_alarm_in_the_same_poll(
    site, line, tmp_path
):
    async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db", site) as sessions:
        service = alert_service(sessions, robot_outbox(), site)
        seq = count(1)
        polled_at = {}

        async def to_alert_service(device: Device, readings, flags, read_at) -> None:
            polled_at[device.id] = ts = utc_now()
            await service.apply(
                ReadingBatch(
                    gateway_id=device.gateway,
                    seq=next(seq),
                    device_id=device.id,
                    institution_id=device.institution,
                    kind=PROFILES[device.profile].kind,
                    ts=ts,
                    profile=device.profile,
                    readings=readings,
                    flags=flags,
                )
            )

        async def ignore(*_) -> None:
            pass

        async def button_alarms() -> list[db.Alarm]:
            async with sessions() as session:
                return list(
                    await session.scalars(select(db.Alarm).where(db.Alarm.device_id == "rtu-btn-1"))
                )

        async with (
            simulators(site, line) as fleet,
            gateway_poller(site, to_alert_service, ignore) as poller,
        ):
            button = next((d, p) for d, p in poller.devices if d.id == "rtu-btn-1")
            await poller.poll_once(*button)
            assert await button_alarms() == []

            await fleet.trigger("rtu-btn-1", "button-press")
            await poller.poll_once(*button)
            [alarm] = await button_alarms()
            assert (alarm.rule, alarm.status) == ("one_key_alarm", "active")
            assert alarm.raised_at == polled_at["rtu-btn-1"]

            await fleet.trigger("rtu-btn-1", "normal")  # reset with the key
            await poller.poll_once(*button)
            [alarm] = await button_alarms()
            assert alarm.status == "cleared"
