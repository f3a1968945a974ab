"""The gateway against real Modbus TCP simulators and a real Mosquitto broker."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from firewatch.bench.servers import Mosquitto
from firewatch.consumer import GatewayMessageConsumer
from firewatch.contract import (
    DeviceEvent,
    DeviceKind,
    EventType,
    GatewayHeartbeat,
    ReadingBatch,
    ReadingBatchEncoder,
    events_filter,
    heartbeats_filter,
    parse_message,
    readings_filter,
)
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import DataType, Register, load_profiles, read_blocks
from firewatch.settings import SITES_DIR
from firewatch.site import Site, load_site
from gateway.block_decoder import block_decoders
from gateway.modbus_poller import EndpointPoller
from gateway.mqtt_bridge import UplinkError, parse_uplink
from gateway.outbox import Outbox
from gateway.service import GatewayService
from simulators.fleet import SimulatorFleet

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def site_and_profiles():
    profiles = load_profiles()
    return load_site(SITES_DIR / "demo-county.yaml", profiles), profiles


@pytest.fixture
async def fleet(site_and_profiles):
    site, profiles = site_and_profiles
    fleet = SimulatorFleet(site, profiles, BrokerAddress("127.0.0.1", 1), tick_s=0.05, seed=1)
    await fleet.start()
    yield fleet
    await fleet.stop()


def every_poll(site: Site) -> Site:
    """The site with every device reporting every poll (report by exception off, as in
    commissioning): for tests of what happens to each reading, not of which are reported."""
    devices = [d.model_copy(update={"report_by_exception": False}) for d in site.devices]
    return site.model_copy(update={"devices": devices})


class Recorder:
    def __init__(self) -> None:
        self.readings: list[tuple[str, dict, dict]] = []
        self.events: list[tuple[str, EventType, str]] = []

    async def on_readings(self, device, readings, flags, read_at) -> None:
        self.readings.append((device.id, readings, flags))

    async def on_event(self, device, event, reason) -> None:
        self.events.append((device.id, event, reason))


def poller_for(site_and_profiles, fleet, endpoint_id: str, recorder: Recorder, profiles=None):
    site, default_profiles = site_and_profiles
    profiles = profiles or default_profiles
    endpoint = site.endpoint(endpoint_id)
    devices = [(d, profiles[d.profile]) for d in site.devices if d.endpoint == endpoint_id]
    return EndpointPoller(
        endpoint, fleet.endpoint_port(endpoint_id), devices, recorder.on_readings, recorder.on_event
    )


async def poll_all(poller, times: int = 1) -> None:
    for _ in range(times):
        for device, profile in poller.devices:
            await poller.poll_once(device, profile)


async def test_a_poll_reads_scaled_values_and_status_bits_from_each_unit(site_and_profiles, fleet):
    recorder = Recorder()
    poller = poller_for(site_and_profiles, fleet, "rongcheng-rs485", recorder)
    await fleet.trigger("rc-efm-1", "sensor-fault")
    await asyncio.sleep(0.1)
    await poll_all(poller)
    by_device = {device_id: (readings, flags) for device_id, readings, flags in recorder.readings}
    efm_readings, efm_flags = by_device["rc-efm-1"]
    assert 50 < efm_readings["residual_current"] < 130 and 25 < efm_readings["cable_temp_1"] < 40
    assert efm_flags["sensor_fault"] is True and efm_flags["device_residual_alarm"] is False
    gas_readings, _ = by_device["rc-gas-1"]
    assert 0 <= gas_readings["gas_concentration"] < 1.5
    poller.client.close()


async def test_a_detector_that_stops_answering_goes_offline_with_the_reason_then_online_again(
    site_and_profiles, fleet
):
    recorder = Recorder()
    poller = poller_for(site_and_profiles, fleet, "rongcheng-rs485", recorder)
    await poll_all(poller)
    await fleet.trigger("rc-gas-1", "offline")
    await poll_all(poller, times=3)  # offline_after_misses: 3
    offline = [e for e in recorder.events if e[1] is EventType.OFFLINE]
    assert [(d, reason.split(":")[0]) for d, _, reason in offline] == [
        ("rc-gas-1", "no answer to 3 polls in a row from rongcheng-rs485 unit 2")
    ]
    # the other unit on the same line kept answering
    assert poller.stats["rc-efm-1"].consecutive_misses == 0

    await fleet.trigger("rc-gas-1", "normal")
    await poll_all(poller)
    assert recorder.events[-1][:2] == ("rc-gas-1", EventType.ONLINE)
    poller.client.close()


async def test_a_device_answering_garbage_becomes_a_fault_with_the_reason_and_polling_goes_on(
    site_and_profiles, fleet
):
    recorder = Recorder()
    poller = poller_for(site_and_profiles, fleet, "dingqiao-rs485", recorder)
    await poll_all(poller)
    await fleet.trigger("dq-gas-1", "garbled")
    await poll_all(poller, times=3)  # offline_after_misses: 3
    [fault] = [e for e in recorder.events if e[1] is EventType.FAULT]
    assert fault[0] == "dq-gas-1" and fault[2].startswith(
        "应答无法解析 garbled replies to 3 polls in a row from dingqiao-rs485 unit 2: "
    )
    assert poller.stats["dq-gas-1"].garbled == 3 and poller.stats["dq-gas-1"].missed == 0
    await fleet.trigger("dq-gas-1", "normal")
    await poll_all(poller)
    assert recorder.events[-1][:2] == ("dq-gas-1", EventType.ONLINE)
    assert poller.stats["dq-efm-1"].answered == 5
    poller.client.close()


@pytest.mark.parametrize(
    "scenario, reason",
    [
        (
            "exception-replies",
            "异常应答 exception replies to 3 polls in a row from dingqiao-rs485 "
            "unit 2: exception code 4 (从站设备故障 server device failure) at "
            "register 0",
        ),
        (
            "garbled",
            "应答无法解析 garbled replies to 3 polls in a row from dingqiao-rs485 unit 2: ",
        ),
    ],
)
async def test_a_failing_device_becomes_a_fault_while_its_neighbour_keeps_its_interval(
    site_and_profiles, fleet, scenario, reason
):
    """Both units polled every 0.25 s, the failing one's time-out as long (as the demo's
    1 s and 1 s, faster).  Before backoff, a garbled unit's two tries per poll halved its
    neighbour's readings."""
    site, profiles = site_and_profiles
    interval = 0.25
    fast = {
        m: p.model_copy(update={"poll_interval_s": interval, "timeout_s": interval})
        for m, p in profiles.items()
    }
    recorder = Recorder()
    read_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def on_readings(device, readings, flags, ts):
        if device.id == "dq-efm-1":
            read_at.append(loop.time())

    endpoint = site.endpoint("dingqiao-rs485")
    poller = EndpointPoller(
        endpoint,
        fleet.endpoint_port(endpoint.id),
        [(d, fast[d.profile]) for d in site.devices if d.endpoint == endpoint.id],
        on_readings,
        recorder.on_event,
    )
    await fleet.trigger("dq-gas-1", scenario)
    polling = asyncio.create_task(poller.run())
    await asyncio.sleep(8)
    polling.cancel()
    await asyncio.gather(polling, return_exceptions=True)

    faults = [(d, r) for d, e, r in recorder.events if e is EventType.FAULT]
    assert [d for d, _ in faults] == ["dq-gas-1"] and faults[0][1].startswith(reason)
    assert poller.stats["dq-gas-1"].state == "fault"
    # the neighbour: (nearly) every interval read, and no gap longer than one time-out and
    # retry of the failing unit (before it backs off) plus an interval
    gaps = [b - a for a, b in pairwise(read_at)]
    expected = (read_at[-1] - read_at[0]) / interval
    profile = fast["generic-gas-lel"]
    assert len(gaps) >= 0.85 * expected, f"{len(gaps)} of {expected:.0f} intervals read"
    assert max(gaps) <= 2 * interval + (profile.retries + 1) * profile.timeout_s, max(gaps)


async def test_a_float_register_holding_nan_is_left_out_counted_and_polling_goes_on(
    site_and_profiles,
):
    """Many devices send NaN for "no value"; one such register must not stop the gateway."""
    site, profiles = site_and_profiles
    gas = profiles["generic-gas-lel"]
    float_gas = gas.model_copy(
        update={
            "registers": [
                gas.registers[0].model_copy(update={"type": DataType.FLOAT32, "scale": 1.0}),
                gas.registers[1].model_copy(update={"address": 2}),
            ]
        }
    )
    tuned = {**profiles, "generic-gas-lel": float_gas}
    fleet = SimulatorFleet(site, tuned, BrokerAddress("127.0.0.1", 1), tick_s=3600, seed=1)
    await fleet.start()
    recorder = Recorder()
    poller = poller_for(site_and_profiles, fleet, "rongcheng-rs485", recorder, tuned)
    unit = fleet.devices["rc-gas-1"]
    try:
        for value in (math.nan, math.inf, 4.5):
            unit.readings["gas_concentration"] = value
            await fleet.endpoints["rongcheng-rs485"].write(unit)
            await poll_all(poller)
    finally:
        poller.client.close()
        await fleet.stop()
    gas_batches = [(readings, flags) for d, readings, flags in recorder.readings if d == "rc-gas-1"]
    assert [readings for readings, _ in gas_batches] == [{}, {}, {"gas_concentration": 4.5}]
    assert all("sensor_fault" in flags for _, flags in gas_batches)  # the status word still read
    assert poller.stats["rc-gas-1"].by_error == {"not a number": 2}
    assert len([d for d, *_ in recorder.readings if d == "rc-efm-1"]) == 3


def test_a_button_reporting_nan_is_refused_naming_the_key():
    button = load_profiles()["generic-onekey-mqtt"]
    with pytest.raises(UplinkError, match="'bat' must be a finite number, got nan"):
        parse_uplink(button, b'{"alarm": 1, "bat": NaN}')


UNKNOWN_KEYS = ",".join(f'"k{i}": {i}' for i in range(10_000))


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b'{"alarm": 1, "bat": 1' + b"0" * 400 + b"}", "bad_value"),  # an integer of 400 digits
        (b'{"alarm": 1, "bat": 1' + b"0" * 5000 + b"}", "not_json"),  # longer than Python converts
        (b'{"alarm": 1, "bat": 1.7976931348623157e308}', "bad_value"),
        (b'{"alarm": 1, "bat": Infinity}', "bad_value"),
        (b'{"alarm": 1, "bat": "3.1"}', "bad_value"),
        (b'{"alarm": 2}', "bad_value"),
        (b'{"alarm": 1e308}', "bad_value"),
        (rb'{"alarm": "\ud800"}', "bad_value"),  # a lone surrogate: valid JSON, not UTF-8
        (rb'{"\ud800": 1}', "no_known_key"),
        (b'{"alarm": "\xed\xa0\x80"}', "not_json"),  # a surrogate in bytes: not UTF-8
        (b"[" * 200_000 + b"]" * 200_000, "too_large"),
        (b"[" * 30_000 + b"]" * 30_000, "not_json"),  # nested deeper than the parser goes
        (b"[1, 2]", "not_object"),
        (b"{" + UNKNOWN_KEYS.encode() + b"}", "no_known_key"),
        (b"x" * (256 * 1024 + 1), "too_large"),
    ],
)
def test_a_hostile_report_is_refused_with_its_reason(payload, reason):
    button = load_profiles()["generic-onekey-mqtt"]
    with pytest.raises(UplinkError) as refused:
        parse_uplink(button, payload)
    assert refused.value.kind == reason and len(str(refused.value)) < 400


@pytest.mark.parametrize(
    "payload, readings, flags",
    [
        (b'{"alarm": 1, "alarm": 0}', {}, {"button_pressed": False}),  # the last one counts
        (b'\xef\xbb\xbf{"alarm": 1}', {}, {"button_pressed": True}),  # a UTF-8 byte-order mark
        (b'{"alarm": true, "tamper": 1.0}', {}, {"button_pressed": True, "tamper": True}),
        (b'{"alarm": 0, "bat": -0.0}', {"battery_voltage": 0.0}, {"button_pressed": False}),
        (b'{"alarm": 0, "bat": 5e-324}', {"battery_voltage": 5e-324}, {"button_pressed": False}),
        (b'{"alarm": 1, ' + UNKNOWN_KEYS.encode() + b"}", {}, {"button_pressed": True}),
    ],
)
def test_an_odd_but_meaningful_report_is_read_as_it_means(payload, readings, flags):
    button = load_profiles()["generic-onekey-mqtt"]
    assert parse_uplink(button, payload) == (readings, flags)
    assert str(parse_uplink(button, payload)[0].get("battery_voltage", 0.0)) != "-0.0"


async def test_a_device_refusing_every_read_becomes_a_fault_naming_the_exception_code(
    site_and_profiles, fleet
):
    """A profile asking for a register the device does not have: it answers every poll with
    exception code 2, which is a fault of that device, not silence and not normal."""
    site, profiles = site_and_profiles
    gas = profiles["generic-gas-lel"]
    wrong = gas.model_copy(
        update={"registers": [*gas.registers, Register(name="extra", address=40)]}
    )
    recorder = Recorder()
    poller = poller_for(
        site_and_profiles,
        fleet,
        "dingqiao-rs485",
        recorder,
        profiles={**profiles, "generic-gas-lel": wrong},
    )
    await poll_all(poller, times=3)
    stats = poller.stats["dq-gas-1"]
    assert (stats.exceptions, stats.state) == (3, "fault")
    assert [(d, e) for d, e, _ in recorder.events] == [
        ("dq-efm-1", EventType.ONLINE),
        ("dq-gas-1", EventType.FAULT),
    ]
    assert recorder.events[1][2] == (
        "异常应答 exception replies to 3 polls in a row from dingqiao-rs485 unit 2: "
        "exception code 2 (非法数据地址 illegal data address) at register 40"
    )
    assert [d for d, *_ in recorder.readings] == ["dq-efm-1"] * 3
    poller.client.close()


async def test_a_broker_restart_mid_stream_loses_and_duplicates_no_reading(
    site_and_profiles, fleet, tmp_path
):
    site, profiles = site_and_profiles
    site = every_poll(site)  # so that the outage has readings to queue
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    broker = BrokerAddress.from_url(mosquitto.url)
    received: list[ReadingBatch | DeviceEvent] = []

    async def collect(messages):
        received.extend(messages)

    class NoDeadLetters:
        count = 0

        async def put(self, topic, payload, reason):
            raise AssertionError(f"dead letter on {topic}: {reason}")

    consumer = GatewayMessageConsumer(
        "test",
        broker,
        collect,
        NoDeadLetters(),
        streams=(readings_filter, events_filter, heartbeats_filter),
    )  # every message
    gateway = GatewayService(
        site.gateways[0],
        site,
        profiles,
        broker,
        tmp_path / "outbox.db",
        lambda e: fleet.endpoint_port(e.id),
    )
    tasks = [asyncio.create_task(consumer.run())]
    await consumer.ready.wait()
    tasks.append(asyncio.create_task(gateway.run()))
    try:
        await asyncio.sleep(2)
        mosquitto.stop()  # SIGTERM: mosquitto saves its sessions, as in a service restart
        await asyncio.sleep(3)
        queued = gateway.outbox.size
        mosquitto.start()
        await asyncio.sleep(3)
        for _ in range(100):  # until what was queued has been replayed and received
            if gateway.outbox.size == 0 and max(m.seq for m in received) == gateway.outbox.last_seq:
                break
            await asyncio.sleep(0.1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        mosquitto.stop()

    assert queued > 0, "the gateway should have queued readings while the broker was down"
    seqs = Counter(m.seq for m in received)
    last = gateway.outbox.last_seq
    assert sorted(seqs) == list(range(1, last + 1)), "every message arrives, none missing"
    duplicates = sum(n - 1 for n in seqs.values())
    print(
        f"\n{last} messages, {queued} queued during the outage, "
        f"{duplicates} redelivered (dropped downstream by seq)"
    )


def decoded_one_by_one(
    registers: list[Register], words_of: Callable[[Register], list]
) -> tuple[dict, dict, list]:
    """The reference: each register through Register.decode and to_physical, readings that are
    not finite left out (and named), a flag listed twice set by the bit decoded last."""
    readings, flags, left_out = {}, {}, []
    for reg in registers:
        raw = reg.decode(words_of(reg))
        if reg.flags:
            flags.update({name: bool(int(raw) >> bit & 1) for bit, name in reg.flags.items()})
        elif math.isfinite(value := round(reg.to_physical(raw), 6)):
            readings[reg.name] = value
        else:
            left_out.append(reg.name)
    return readings, flags, left_out


ODD_LAYOUTS = [
    Register(
        name="le_float",
        address=0,
        type=DataType.FLOAT32,
        byte_order="little",
        word_order="little",
        scale=0.5,
    ),
    Register(name="swapped_words", address=2, type=DataType.INT32, word_order="little"),
    Register(name="le_int", address=4, type=DataType.INT16, byte_order="little", offset=-40),
    Register(name="be_float", address=5, type=DataType.FLOAT32),
    Register(name="alarm_word", address=7, flags={0: "first", 15: "last", 3: "third"}),
    Register(
        name="wide_alarm_word", address=8, type=DataType.UINT32, flags={20: "wide", 2: "third"}
    ),
    # another read: its flag "first" is the one a dict of the poll's flags would keep
    Register(name="second_alarm_word", address=30, flags={3: "first", 4: "second"}),
    Register(name="absurd_scale", address=31, scale=1e305),
]


def random_words(registers: list[Register], start: int, count: int, rng: random.Random) -> list:
    words = [0] * count
    for reg in registers:
        if reg.type is DataType.BOOL:
            raw = rng.random() < 0.5
        elif reg.type is DataType.FLOAT32:
            raw = rng.choice([math.nan, math.inf]) if rng.random() < 0.1 else rng.uniform(-1e4, 1e4)
        else:
            raw = (
                rng.randrange(-(2**15), 2**15)
                if reg.type is DataType.INT16
                else (
                    rng.randrange(2**16)
                    if reg.type is DataType.UINT16
                    else rng.randrange(-(2**31), 2**31)
                    if reg.type is DataType.INT32
                    else rng.randrange(2**32)
                )
            )
        words[reg.address - start : reg.address - start + reg.count] = reg.encode(raw)
    return words


@pytest.mark.parametrize("model", [*sorted(load_profiles()), "odd layouts"])
def test_the_gateways_block_decoders_make_the_batch_the_model_makes_of_the_registers(model):
    """Every register as the profile defines it, NaN and infinity left out, the JSON of the
    batch byte for byte the model's."""
    profiles = load_profiles()
    registers = ODD_LAYOUTS if model == "odd layouts" else profiles[model].registers
    blocks = read_blocks(registers)
    in_decoding_order = [
        reg for *_, members in blocks for reg in sorted(members, key=lambda r: r.address)
    ]
    encoder = ReadingBatchEncoder("gw-1", "dev-1", "inst-1", DeviceKind.GAS_DETECTOR, model)
    ts = datetime(2026, 11, 22, 8, 30, 1, 250, UTC)
    rng = random.Random(model)
    # a second set of decoders (another device of the model) reads the members the first one
    # remembered, and gets them right as well
    for decoders in (block_decoders(registers), block_decoders(registers)):
        for _ in range(200):
            readings, flags, left_out, words_of = [], [], [], {}
            for (_, start, count, members), (*_, decoder) in zip(blocks, decoders, strict=True):
                words = random_words(members, start, count, rng)
                left_out += decoder.decode(words, readings, flags)
                words_of.update(
                    {reg.name: words[reg.address - start :][: reg.count] for reg in members}
                )
            expected = decoded_one_by_one(
                in_decoding_order, lambda reg, words_of=words_of: words_of[reg.name]
            )
            members = ",".join(readings), ",".join(flags)
            as_decoded = json.loads(f"{{{members[0]}}}"), json.loads(f"{{{members[1]}}}")
            assert (*as_decoded, left_out) == expected
            assert (
                encoder.encode(7, ts, *members)
                == ReadingBatch(
                    gateway_id="gw-1",
                    seq=7,
                    device_id="dev-1",
                    institution_id="inst-1",
                    kind=DeviceKind.GAS_DETECTOR,
                    ts=ts,
                    profile=model,
                    readings=as_decoded[0],
                    flags=as_decoded[1],
                ).to_bytes()
            )


def test_a_reply_shorter_than_the_read_is_refused_as_a_garbled_frame():
    [(_, start, count, decoder)] = block_decoders(load_profiles()["generic-efm-4t"].registers)
    with pytest.raises(ValueError):
        decoder.decode([0] * (count - 1), [], [])


async def test_while_the_broker_is_away_each_device_is_queued_online_first_then_its_polls_in_order(
    site_and_profiles, fleet, tmp_path
):
    site, profiles = site_and_profiles
    site = every_poll(site)
    gateway = GatewayService(
        site.gateways[0],
        site,
        profiles,
        BrokerAddress("127.0.0.1", 1),
        tmp_path / "outbox.db",
        lambda e: fleet.endpoint_port(e.id),
    )
    running = asyncio.create_task(gateway.run())
    await asyncio.sleep(2.5)
    running.cancel()
    [stopped] = await asyncio.gather(running, return_exceptions=True)
    assert isinstance(stopped, asyncio.CancelledError)  # stopped cleanly, nothing raised

    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    rows = await outbox.oldest(10_000)
    await outbox.close()
    messages = [parse_message(topic, payload) for _, topic, payload in rows]
    assert [m.seq for m in messages] == [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    assert isinstance(messages[0], GatewayHeartbeat)  # the gateway says it is alive at once
    assert {m.incarnation for m in messages} == {gateway.outbox.incarnation}
    polled = {
        d.id
        for d in site.devices
        if d.gateway == gateway.gateway.id and profiles[d.profile].registers
    }
    for device_id in polled:
        mine = [m for m in messages if getattr(m, "device_id", None) == device_id]
        assert isinstance(mine[0], DeviceEvent) and mine[0].event is EventType.ONLINE
        readings = [m for m in mine[1:] if isinstance(m, ReadingBatch)]
        assert len(readings) >= 2 and readings == sorted(readings, key=lambda m: m.ts)
