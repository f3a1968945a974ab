"""The gateway against real Modbus TCP simulators and a real Mosquitto broker."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from firewatch.consumer import GatewayMessageConsumer
from firewatch.contract import DeviceEvent, EventType, ReadingBatch
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import Register, load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import load_site
from gateway.modbus_poller import EndpointPoller
from gateway.service import GatewayService
from simulators.fleet import SimulatorFleet
from firewatch.bench.servers import Mosquitto

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


class Recorder:
    def __init__(self) -> None:
        self.readings: list[tuple[str, dict, dict]] = []
        self.events: list[tuple[str, EventType, str]] = []

    async def on_readings(self, device, readings, flags) -> None:
        self.readings.append((device.id, readings, flags))

    async def on_event(self, device, event, reason) -> None:
        self.events.append((device.id, event, reason))


def poller_for(site_and_profiles, fleet, endpoint_id: str, recorder: Recorder, profiles=None):
    site, default_profiles = site_and_profiles
    profiles = profiles or default_profiles
    endpoint = site.endpoint(endpoint_id)
    devices = [(d, profiles[d.profile]) for d in site.devices if d.endpoint == endpoint_id]
    return EndpointPoller(endpoint, fleet.endpoint_port(endpoint_id), devices,
                          recorder.on_readings, recorder.on_event)


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
        ("rc-gas-1", "no answer to 3 polls in a row from rongcheng-rs485 unit 2")]
    # the other unit on the same line kept answering
    assert poller.stats["rc-efm-1"].consecutive_misses == 0

    await fleet.trigger("rc-gas-1", "normal")
    await poll_all(poller)
    assert recorder.events[-1][:2] == ("rc-gas-1", EventType.ONLINE)
    poller.client.close()


async def test_garbled_replies_are_counted_as_misses_and_polling_goes_on(site_and_profiles, fleet):
    recorder = Recorder()
    poller = poller_for(site_and_profiles, fleet, "dingqiao-rs485", recorder)
    await fleet.trigger("dq-gas-1", "garbled")
    await poll_all(poller, times=2)
    assert poller.stats["dq-gas-1"].missed == 2
    await fleet.trigger("dq-gas-1", "normal")
    await poll_all(poller)
    assert poller.stats["dq-gas-1"].answered >= 1
    assert poller.stats["dq-efm-1"].answered == 3
    poller.client.close()


async def test_a_register_the_device_does_not_have_is_refused_and_counted(site_and_profiles, fleet):
    site, profiles = site_and_profiles
    gas = profiles["generic-gas-lel"]
    wrong = gas.model_copy(update={"registers": [*gas.registers,
                                                 Register(name="extra", address=40)]})
    recorder = Recorder()
    poller = poller_for(site_and_profiles, fleet, "dingqiao-rs485", recorder,
                                 profiles={**profiles, "generic-gas-lel": wrong})
    await poll_all(poller, times=2)
    stats = poller.stats["dq-gas-1"]
    assert stats.exceptions == 2 and "exception response code" in stats.last_error
    assert stats.online is True  # it answers, just not that register
    poller.client.close()


async def test_a_broker_restart_mid_stream_loses_and_duplicates_no_reading(
    site_and_profiles, fleet, tmp_path
):
    site, profiles = site_and_profiles
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

    consumer = GatewayMessageConsumer("test", broker, collect, NoDeadLetters(),
                                      shared_subscription=True)
    gateway = GatewayService(site.gateways[0], site, profiles, broker, tmp_path / "outbox.db",
                             lambda e: fleet.endpoint_port(e.id))
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
    print(f"\n{last} messages, {queued} queued during the outage, "
          f"{duplicates} redelivered (dropped downstream by seq)")
