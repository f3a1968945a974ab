"""The device simulators, as the gateway meets them: real Modbus TCP and a real MQTT broker.

Registers are read with pymodbus's client over loopback and decoded with the profile's own
``Register.decode``/``to_physical``; the MQTT buttons publish to an embedded amqtt broker.
Ramps are shortened to ``RAMP_S`` so that a whole scenario fits in a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from firewatch.mqtt import BrokerAddress, EmbeddedBroker
from firewatch.profiles import DeviceProfile, Table, Transport, load_profiles, read_blocks
from firewatch.settings import SITES_DIR
from firewatch.site import Device, ModbusEndpoint, Site, load_site
from simulators.fleet import SimulatorFleet

pytestmark = pytest.mark.timeout(30)

RAMP_S = 1.0
SLOW_REPLY_S = 0.5
NO_BROKER = BrokerAddress("127.0.0.1", 1)  # for fleets whose MQTT devices are never powered on


def quicker(profile: DeviceProfile) -> DeviceProfile:
    """The profile with its ramps cut to RAMP_S."""
    scenarios = {
        name: s.model_copy(update={"ramp_s": min(s.ramp_s, RAMP_S)})
        for name, s in profile.simulation.scenarios.items()
    }
    simulation = profile.simulation.model_copy(update={"scenarios": scenarios})
    return profile.model_copy(update={"simulation": simulation})


@pytest.fixture(scope="module")
def profiles() -> dict[str, DeviceProfile]:
    return {model: quicker(p) for model, p in load_profiles().items()}


@pytest.fixture(scope="module")
def demo_site(profiles) -> Site:
    return load_site(SITES_DIR / "demo-county.yaml", profiles)


def site_of(
    demo_site: Site,
    devices: list[tuple[str, str, int, int]],
    transport: Transport = Transport.MODBUS_TCP,
) -> Site:
    """A site of ``devices`` (id, profile, line, unit id) on simulated endpoints ``line-N``."""
    institution = demo_site.institutions[0]
    lines = sorted({line for _, _, line, _ in devices})
    gateway = demo_site.gateways[0].model_copy(
        update={
            "endpoints": [
                ModbusEndpoint(id=f"line-{n}", transport=transport, port=0, simulated=True)
                for n in lines
            ]
        }
    )
    return Site(
        county=demo_site.county,
        institutions=[institution],
        gateways=[gateway],
        devices=[
            Device(
                id=device_id,
                institution=institution.id,
                gateway=gateway.id,
                profile=profile,
                endpoint=f"line-{line}",
                unit_id=unit_id,
                simulated=True,
            )
            for device_id, profile, line, unit_id in devices
        ],
    )


@contextlib.asynccontextmanager
async def running(site: Site, profiles, broker: BrokerAddress = NO_BROKER, **options):
    fleet = SimulatorFleet(
        site, profiles, broker, tick_s=0.05, slow_reply_s=SLOW_REPLY_S, seed=1, **options
    )
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture
async def fleet(demo_site, profiles):
    async with running(demo_site, profiles) as fleet:
        yield fleet


@contextlib.asynccontextmanager
async def modbus_client(
    fleet: SimulatorFleet,
    endpoint_id: str,
    timeout: float = 1.0,
    framer: FramerType = FramerType.SOCKET,
):
    client = AsyncModbusTcpClient(
        "127.0.0.1",
        port=fleet.endpoint_port(endpoint_id),
        timeout=timeout,
        retries=0,
        framer=framer,
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


_READ = {
    Table.HOLDING_REGISTER: "read_holding_registers",
    Table.INPUT_REGISTER: "read_input_registers",
    Table.COIL: "read_coils",
    Table.DISCRETE_INPUT: "read_discrete_inputs",
}


async def read_device(client: AsyncModbusTcpClient, profile: DeviceProfile, unit_id: int):
    """(readings, flags) of one unit, read and decoded as the profile says."""
    readings: dict[str, float] = {}
    flags: dict[str, bool] = {}
    for table, start, count, registers in read_blocks(profile.registers):
        reply = await getattr(client, _READ[table])(start, count=count, device_id=unit_id)
        assert not reply.isError(), reply
        words = reply.bits if table.is_bit else reply.registers
        for reg in registers:
            raw = reg.decode(words[reg.address - start : reg.address - start + reg.count])
            if reg.flags:
                flags.update({name: bool(int(raw) >> bit & 1) for bit, name in reg.flags.items()})
            else:
                readings[reg.name] = reg.to_physical(raw)
    return readings, flags


# --- values ---------------------------------------------------------------------------------


async def test_a_gas_detector_reports_near_zero_lel_and_no_alarm_bits_when_normal(fleet, profiles):
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        readings, flags = await read_device(client, profiles["generic-gas-lel"], unit_id=2)
    assert 0 <= readings["gas_concentration"] <= 1.0  # 0.5 ± 0.4 %LEL
    assert flags == {"device_low_alarm": False, "device_high_alarm": False, "sensor_fault": False}


async def test_normal_values_carry_fresh_noise_within_the_profiles_amplitude(fleet, profiles):
    seen = set()
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        for _ in range(8):
            readings, _ = await read_device(client, profiles["generic-efm-4t"], unit_id=1)
            assert 75 <= readings["residual_current"] <= 105  # 90 ± 15 mA
            seen.add(readings["residual_current"])
            await asyncio.sleep(0.06)  # a tick
    assert len(seen) > 1


async def test_gas_leak_drives_the_concentration_above_the_high_alarm_set_point(fleet, profiles):
    gas = profiles["generic-gas-lel"]
    await fleet.trigger("rc-gas-1", "gas-leak")
    await asyncio.sleep(RAMP_S + 0.1)
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        readings, flags = await read_device(client, gas, unit_id=2)
    assert readings["gas_concentration"] >= gas.rule("gas_high").set_point
    assert readings["gas_concentration"] == pytest.approx(60, abs=0.5)
    assert flags["device_low_alarm"] and flags["device_high_alarm"]


async def test_overheat_ramps_cable_temperature_linearly_and_raises_the_status_bit_at_once(
    fleet, profiles
):
    efm = profiles["generic-efm-4t"]
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        await fleet.trigger("rc-efm-1", "overheat")
        readings, flags = await read_device(client, efm, unit_id=1)
        assert readings["cable_temp_1"] < 40 and flags["device_temperature_alarm"]
        await asyncio.sleep(RAMP_S / 2)
        halfway, _ = await read_device(client, efm, unit_id=1)
        assert 50 < halfway["cable_temp_1"] < 80  # 32 °C -> 95 °C, about half way
        await asyncio.sleep(RAMP_S / 2 + 0.1)
        readings, _ = await read_device(client, efm, unit_id=1)
    assert readings["cable_temp_1"] == pytest.approx(95, abs=1)
    assert readings["cable_temp_1"] >= efm.rule("cable_temp_1_high").set_point
    assert readings["cable_temp_2"] < 40  # the other channels stay normal


async def test_normal_brings_values_back_and_clears_the_flags(fleet, profiles):
    efm = profiles["generic-efm-4t"]
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        await fleet.trigger("rc-efm-1", "residual-current-spike")  # no ramp: at once
        readings, flags = await read_device(client, efm, unit_id=1)
        assert readings["residual_current"] == pytest.approx(650, abs=15)
        assert flags["device_residual_alarm"]
        await fleet.trigger("rc-efm-1", "normal")
        readings, flags = await read_device(client, efm, unit_id=1)
    assert readings["residual_current"] == pytest.approx(90, abs=15)
    assert not any(flags.values())


async def test_two_units_behind_one_endpoint_answer_independently(fleet, profiles):
    await fleet.trigger("rc-gas-1", "sensor-fault")
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        efm_readings, efm_flags = await read_device(client, profiles["generic-efm-4t"], 1)
        _, gas_flags = await read_device(client, profiles["generic-gas-lel"], 2)
    assert gas_flags["sensor_fault"] is True
    assert efm_flags["sensor_fault"] is False and 20 < efm_readings["cable_temp_1"] < 40


async def test_registers_are_served_from_the_table_and_address_the_profile_gives(
    demo_site, profiles
):
    mixed = DeviceProfile.model_validate(
        {
            "model": "test-mixed-tables",
            "kind": "gas_detector",
            "title_zh": "测试",
            "source": "test",
            "transport": "modbus_tcp",
            "registers": [
                {"name": "relay", "table": "coil", "address": 0, "type": "bool"},
                {"name": "door_open", "table": "discrete_input", "address": 3, "type": "bool"},
                {
                    "name": "temperature",
                    "table": "input_register",
                    "address": 10,
                    "type": "float32",
                    "word_order": "little",
                },
                {"name": "outdoor_temp", "address": 0, "type": "int16", "scale": 0.1},
                {"name": "flow", "address": 1, "type": "uint16"},
            ],
            "simulation": {
                "normal": {
                    "relay": 1,
                    "door_open": 0,
                    "temperature": 21.5,
                    "outdoor_temp": -5.5,
                    "flow": 70000,
                }
            },
        }
    )
    site = site_of(demo_site, [("dev-0", "test-mixed-tables", 0, 7)])
    async with (
        running(site, {"test-mixed-tables": mixed}) as fleet,
        modbus_client(fleet, "line-0") as client,
    ):
        readings, _ = await read_device(client, mixed, unit_id=7)
        refused = await client.read_input_registers(0, count=1, device_id=7)
    assert readings == {
        "relay": 1.0,
        "door_open": 0.0,
        "temperature": 21.5,
        "outdoor_temp": pytest.approx(-5.5),
        "flow": 65535,
    }  # flow saturates
    assert refused.isError() and refused.exception_code == 2


async def test_an_address_the_device_does_not_have_is_refused_with_exception_code_2(fleet):
    async with modbus_client(fleet, "rongcheng-rs485") as client:
        past_the_map = await client.read_holding_registers(0, count=3, device_id=2)
        no_such_table = await client.read_input_registers(0, count=1, device_id=2)
    assert past_the_map.isError() and past_the_map.exception_code == 2
    assert no_such_table.isError() and no_such_table.exception_code == 2


# --- link faults ----------------------------------------------------------------------------


async def test_an_offline_device_does_not_answer_and_the_client_times_out(fleet, profiles):
    async with modbus_client(fleet, "rongcheng-rs485", timeout=0.3) as client:
        await fleet.trigger("rc-gas-1", "offline")
        started = time.monotonic()
        with pytest.raises(ModbusIOException, match="No response"):
            await client.read_holding_registers(0, count=2, device_id=2)
        assert time.monotonic() - started >= 0.3
        # the other unit on the line still answers
        await read_device(client, profiles["generic-efm-4t"], unit_id=1)
        await fleet.trigger("rc-gas-1", "normal")
        await read_device(client, profiles["generic-gas-lel"], unit_id=2)


async def test_slow_replies_come_after_the_timeout_and_are_not_taken_for_the_retry(fleet, profiles):
    await fleet.trigger("rc-gas-1", "slow-replies")
    async with modbus_client(fleet, "rongcheng-rs485", timeout=0.3) as impatient:
        for _ in range(2):  # the first reply arrives during the second try, and is discarded
            with pytest.raises(ModbusIOException, match="No response"):
                await impatient.read_holding_registers(0, count=2, device_id=2)
    async with modbus_client(fleet, "rongcheng-rs485", timeout=SLOW_REPLY_S + 0.5) as patient:
        started = time.monotonic()
        readings, _ = await read_device(patient, profiles["generic-gas-lel"], unit_id=2)
        assert time.monotonic() - started >= SLOW_REPLY_S
    assert 0 <= readings["gas_concentration"] <= 1.0


async def test_garbled_replies_cannot_be_decoded_and_the_line_recovers(fleet, profiles):
    async with modbus_client(fleet, "rongcheng-rs485", timeout=0.3) as client:
        await fleet.trigger("rc-gas-1", "garbled")
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=2, device_id=2)
        await fleet.trigger("rc-gas-1", "normal")
        await read_device(client, profiles["generic-gas-lel"], unit_id=2)


async def test_an_rtu_over_tcp_endpoint_answers_in_rtu_frames_and_its_faults_too(
    demo_site, profiles
):
    site = site_of(
        demo_site,
        [("dev-0", "generic-gas-lel", 0, 3), ("dev-1", "generic-gas-lel", 0, 4)],
        transport=Transport.MODBUS_RTU_OVER_TCP,
    )
    gas = profiles["generic-gas-lel"]
    async with (
        running(site, profiles) as fleet,
        modbus_client(fleet, "line-0", timeout=0.3, framer=FramerType.RTU) as client,
    ):
        readings, _ = await read_device(client, gas, unit_id=3)
        assert 0 <= readings["gas_concentration"] <= 1.0
        for scenario in ("offline", "garbled"):
            await fleet.trigger("dev-0", scenario)
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, count=2, device_id=3)
            await read_device(client, gas, unit_id=4)  # its neighbour still answers
        await fleet.trigger("dev-0", "exception-replies")
        reply = await client.read_holding_registers(0, count=2, device_id=3)
        assert (reply.isError(), reply.exception_code) == (True, 4)


async def test_a_unit_in_exception_replies_answers_every_read_with_code_4_its_neighbour_normally(
    fleet, profiles
):
    async with modbus_client(fleet, "rongcheng-rs485", timeout=0.3) as client:
        await fleet.trigger("rc-gas-1", "exception-replies")
        for start, count in ((0, 2), (1, 1)):
            reply = await client.read_holding_registers(start, count=count, device_id=2)
            assert (reply.isError(), reply.exception_code, reply.dev_id) == (True, 4, 2)
        await read_device(client, profiles["generic-efm-4t"], unit_id=1)
        await fleet.trigger("rc-gas-1", "normal")
        await read_device(client, profiles["generic-gas-lel"], unit_id=2)


# --- scenarios and status -------------------------------------------------------------------


async def test_each_device_offers_normal_its_profiles_scenarios_and_the_link_faults(fleet):
    assert fleet.scenarios("rc-gas-1") == [
        "normal",
        "gas-leak",
        "sensor-fault",
        "offline",
        "slow-replies",
        "garbled",
        "exception-replies",
    ]
    assert fleet.scenarios("rc-btn-1") == ["normal", "button-press", "offline", "garbled"]


async def test_an_unknown_scenario_names_the_device_and_the_valid_ones(fleet):
    with pytest.raises(ValueError, match="rc-gas-1 has no scenario 'earthquake'") as raised:
        await fleet.trigger("rc-gas-1", "earthquake")
    for valid in fleet.scenarios("rc-gas-1"):
        assert valid in str(raised.value)
    with pytest.raises(KeyError):
        await fleet.trigger("no-such-device", "normal")


async def test_status_shows_each_devices_scenario_and_current_values(fleet):
    await fleet.trigger("dq-efm-1", "residual-current-spike")
    status = {entry["device_id"]: entry for entry in fleet.status()}
    assert len(status) == 9
    assert status["dq-efm-1"]["scenario"] == "residual-current-spike"
    assert status["dq-efm-1"]["readings"]["residual_current"] == pytest.approx(650, abs=15)
    assert status["dq-efm-1"]["flags"]["device_residual_alarm"] is True
    assert status["rc-gas-1"]["scenario"] == "normal"


async def test_a_thousand_devices_cost_one_update_task_and_a_fraction_of_a_tick(
    demo_site, profiles
):
    """20 lines of 50 unit ids, as a county's worth of detectors in one process."""
    site = site_of(
        demo_site,
        [
            (f"dev-{n}", "generic-efm-4t" if n % 2 else "generic-gas-lel", n // 50, n % 50 + 1)
            for n in range(1000)
        ],
    )
    tasks_before = len(asyncio.all_tasks())
    async with running(site, profiles) as fleet:
        assert len(asyncio.all_tasks()) - tasks_before == 1
        started = time.perf_counter()
        for endpoint in fleet.endpoints.values():
            await endpoint.refresh()
        assert time.perf_counter() - started < 0.25  # the tick is 0.5 s by default
        async with modbus_client(fleet, "line-19") as client:
            readings, _ = await read_device(client, profiles["generic-efm-4t"], unit_id=50)
    assert 25 < readings["cable_temp_1"] < 40


# --- MQTT buttons ---------------------------------------------------------------------------


@pytest.fixture
async def broker():
    broker = EmbeddedBroker()
    await broker.start()
    yield broker
    await broker.stop()


@contextlib.asynccontextmanager
async def listening(broker: EmbeddedBroker):
    async with broker.address.client("test-listener") as listener:
        await listener.subscribe("devices/+/up", qos=1)
        yield listener


async def next_report(listener, device_id: str, within: float = 2.0) -> bytes:
    async with asyncio.timeout(within):
        async for message in listener.messages:
            if message.topic.matches(f"devices/{device_id}/up"):
                return message.payload


async def test_a_button_reports_when_powered_on_and_publishes_alarm_1_at_once_when_pressed(
    demo_site, profiles, broker
):
    async with running(demo_site, profiles, broker.address) as fleet, listening(broker) as sub:
        fleet.start_mqtt()
        first = json.loads(await next_report(sub, "rc-btn-1"))
        assert first["alarm"] == 0 and first["tamper"] == 0
        assert first["bat"] == pytest.approx(3.6, abs=0.02)
        await fleet.trigger("rc-btn-1", "button-press")
        # the heartbeat is 60 s: this report is the press itself
        pressed = json.loads(await next_report(sub, "rc-btn-1", within=1.0))
        assert pressed["alarm"] == 1


async def test_a_button_heartbeats_every_poll_interval(demo_site, profiles, broker):
    button = profiles["generic-onekey-mqtt"].model_copy(update={"poll_interval_s": 0.2})
    profiles = {**profiles, "generic-onekey-mqtt": button}
    async with running(demo_site, profiles, broker.address) as fleet, listening(broker) as sub:
        fleet.start_mqtt()
        await next_report(sub, "rc-btn-1")
        started = time.monotonic()
        for _ in range(3):
            await next_report(sub, "rc-btn-1", within=0.5)
        assert 0.4 <= time.monotonic() - started <= 1.0


async def test_an_offline_button_is_silent_and_a_garbled_one_sends_broken_json(
    demo_site, profiles, broker
):
    async with running(demo_site, profiles, broker.address) as fleet, listening(broker) as sub:
        fleet.start_mqtt()
        await next_report(sub, "rc-btn-1")
        await fleet.trigger("rc-btn-1", "offline")
        with pytest.raises(TimeoutError):
            await next_report(sub, "rc-btn-1", within=0.5)
        await fleet.trigger("rc-btn-1", "garbled")
        with pytest.raises(json.JSONDecodeError):
            json.loads(await next_report(sub, "rc-btn-1", within=1.0))


async def test_buttons_reconnect_and_report_again_after_the_broker_restarts(
    demo_site, profiles, broker
):
    button = profiles["generic-onekey-mqtt"].model_copy(update={"poll_interval_s": 0.3})
    profiles = {**profiles, "generic-onekey-mqtt": button}
    async with running(demo_site, profiles, broker.address) as fleet:
        async with listening(broker) as sub:
            fleet.start_mqtt()
            await next_report(sub, "rc-btn-1")
        await broker.stop()
        await fleet.trigger("rc-btn-1", "button-press")  # while the broker is away
        await asyncio.sleep(0.5)
        await broker.start()
        async with listening(broker) as sub:
            report = json.loads(await next_report(sub, "rc-btn-1", within=4.0))
    assert report["alarm"] == 1
