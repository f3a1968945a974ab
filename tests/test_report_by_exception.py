"""Report by exception: the gateway publishes changes, crossings and heartbeats, and the alert
rules raise and clear the same alarms on that sparse stream as on every poll.

The replay test records a full-rate stream from the simulators' device models (a second a poll,
with the profiles' noise, a little jitter in the poll times, and scenarios: spikes short and
long, a slow rise through a set point, an overheat fast enough for the rate-of-rise rule, a
sensor fault flag, a gas leak) and runs it through the alert rules twice: every poll, and only
the polls the gateway's report-by-exception filter lets out.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
import yaml

from alerts.rules import RuleMemory, evaluate, rules_for
from firewatch.contract import ReadingBatch, ReadingBatchEncoder, utc_now
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import PROFILES_DIR, DeviceProfile, ProfileError, load_profile
from firewatch.settings import SITES_DIR
from firewatch.site import Device, load_site
from gateway.report_by_exception import DeviceReports, Poll
from gateway.service import GatewayService
from simulators.device import SimulatedDevice
from simulators.fleet import SimulatorFleet
from tests.support.alerts import PROFILES, SITE
from tests.support.consumers import consumer, running

START = datetime(2026, 12, 1, 8, 0, tzinfo=datetime.now().astimezone().tzinfo)
POLL_S = 1.0

#: (scenario, seconds) per device: what the recorded stream goes through
TIMELINES = {
    "generic-efm-4t": [
        ("normal", 300),
        ("residual-current-spike", 2),  # shorter than the 3 s on-delay: no alarm
        ("normal", 120),
        ("residual-current-spike", 8),  # an alarm, cleared 10 s after it ends
        ("normal", 200),
        ("slow-temperature-rise", 700),  # through 70 °C about 430 s in, too slow for the rate
        ("normal", 200),
        ("overheat", 90),  # 63 °C in 3 s: the rate-of-rise rule and the set point
        ("normal", 200),
        ("sensor-fault", 3),  # a chattering lead: shorter than the 5 s on-delay
        ("normal", 60),
        ("sensor-fault", 30),
        ("normal", 400),
    ],
    "generic-gas-lel": [
        ("normal", 400),
        ("gas-leak", 1),  # a whiff: the high set point has no delay
        ("normal", 300),
        ("gas-leak", 40),
        ("normal", 500),
        ("sensor-fault", 20),
        ("normal", 300),
    ],
}


def record(device: Device, profile: DeviceProfile, seed: int) -> list[Poll]:
    """The full-rate stream a gateway reads off the simulator: values at the registers'
    resolution, polls a second apart give or take a few milliseconds."""
    sim = SimulatedDevice(device, profile, rng=random.Random(seed))
    jitter = random.Random(seed + 1)
    registers = {r.name: r for r in profile.registers}
    polls, t = [], 0.0
    for scenario, seconds in TIMELINES[profile.model]:
        sim.set_scenario(scenario, t)
        for _ in range(seconds):
            t += POLL_S
            sim.tick(t)
            readings = {}
            for name, value in sim.readings.items():
                reg = registers[name]
                readings[name] = round(reg.to_physical(round(reg.to_raw(value))), 6)
            members = ReadingBatchEncoder.members(readings, dict(sim.flags))
            at = START + timedelta(seconds=t + jitter.uniform(-0.02, 0.02))
            polls.append(Poll(at, *members))
    return polls


def alarms(device: Device, profile: DeviceProfile, polls: list[Poll]) -> list[tuple]:
    """What the rules make of a stream: (rule, raised or cleared, when), in order."""
    rules = rules_for(device, profile, SITE.institution(device.institution))
    in_alarm: set[str] = set()
    memory: dict[str, RuleMemory] = {}
    seen = []
    for poll in polls:
        readings, flags = (json.loads(f"{{{members}}}") for members in poll[1:])
        for verdict in evaluate(rules, readings, flags, in_alarm, memory, poll.ts):
            name = verdict.rule.name
            if verdict.breached != (name in in_alarm):
                (in_alarm.add if verdict.breached else in_alarm.remove)(name)
                seen.append((name, "raised" if verdict.breached else "cleared", poll.ts))
    return seen


def report_by_exception(device: Device, profile: DeviceProfile, polls: list[Poll]) -> list[Poll]:
    rules = rules_for(device, profile, SITE.institution(device.institution))
    reports = DeviceReports(profile, rules)
    return [sent for poll in polls for sent in reports.decide(poll)]


@pytest.mark.parametrize("model", sorted(TIMELINES))
def test_the_sparse_stream_raises_and_clears_the_same_alarms_as_every_poll(model):
    device = next(d for d in SITE.devices if d.profile == model)
    profile = PROFILES[model]
    full = record(device, profile, seed=15)
    sparse = report_by_exception(device, profile, full)
    expected, got = alarms(device, profile, full), alarms(device, profile, sparse)

    assert [(rule, what) for rule, what, _ in got] == [(rule, what) for rule, what, _ in expected]
    for (_, _, then), (_, _, now) in zip(expected, got, strict=True):
        assert abs((now - then).total_seconds()) <= POLL_S
    # the stream holds what it was recorded for, and most of it is not sent
    assert {rule for rule, _, _ in expected} >= {
        "generic-efm-4t": {
            "residual_current_high",
            "cable_temp_1_high",
            "cable_temp_1_rise",
            "sensor_fault",
        },
        "generic-gas-lel": {"gas_low", "gas_high", "sensor_fault"},
    }[model]
    # the first minutes at rest, after the first poll and the every-poll settling after it
    idle = [
        p for p in sparse if START + timedelta(seconds=60) < p.ts < START + timedelta(seconds=300)
    ]
    assert len(idle) <= 4  # one a report_heartbeat_s (60 s)
    assert len({p.ts for p in sparse}) == len(sparse)  # none twice


def settling(profiles: dict[str, DeviceProfile]) -> float:
    """How long a started gateway publishes every poll: the longest delay of any rule."""
    return max(
        max(rule.on_delay_s, rule.off_delay_s) for p in profiles.values() for rule in p.alarms
    )


def faster(profile: DeviceProfile) -> DeviceProfile:
    """The profile with its polls, report heartbeat and rules' delays ten times as fast."""
    rules = [
        rule.model_copy(
            update={"on_delay_s": rule.on_delay_s / 10, "off_delay_s": rule.off_delay_s / 10}
        )
        for rule in profile.alarms
    ]
    update = {"poll_interval_s": 0.1, "report_heartbeat_s": 1.0, "alarms": rules}
    return profile.model_copy(update=update)


async def test_an_idle_device_reports_once_a_heartbeat_and_a_gas_leak_at_once(mosquitto, tmp_path):
    """The gateway on Modbus TCP simulators and a real Mosquitto, its profiles ten times as
    fast (polled ten times a second, a report heartbeat of 1 s, delays a tenth): the idle
    devices publish about one batch per report heartbeat; a leak goes out at once."""
    profiles = {model: faster(profile) for model, profile in PROFILES.items()}
    site = SITE
    fleet = SimulatorFleet(site, profiles, BrokerAddress("127.0.0.1", 1), tick_s=0.05, seed=1)
    await fleet.start()
    received: list[ReadingBatch] = []

    async def collect(messages) -> None:
        received.extend(m for m in messages if isinstance(m, ReadingBatch))

    listener = consumer(mosquitto, collect)
    gateway = GatewayService(
        site.gateways[0],
        site,
        profiles,
        mosquitto,
        tmp_path / "outbox.db",
        lambda e: fleet.endpoint_port(e.id),
    )
    polled = ["rc-efm-1", "rc-gas-1"]
    try:
        async with running(listener):
            running_gateway = asyncio.create_task(gateway.run())
            for _ in range(500):  # the first poll, however long a busy machine takes to it
                if set(polled) <= {m.device_id for m in received}:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(settling(profiles) + 0.5)  # every poll while delays may run
            settled = Counter(m.device_id for m in received)
            await asyncio.sleep(3)  # idle: one batch a second
            idle = Counter(m.device_id for m in received) - settled
            polls = {d: s.polls for p in gateway.pollers for d, s in p.stats.items()}
            leak_at = utc_now()
            await fleet.trigger("rc-gas-1", "gas-leak")
            for _ in range(200):
                leak = [m for m in received if m.device_id == "rc-gas-1" and m.ts > leak_at]
                if leak:
                    break
                await asyncio.sleep(0.02)
            running_gateway.cancel()
            await asyncio.gather(running_gateway, return_exceptions=True)
    finally:
        await fleet.stop()

    for device in polled:
        assert polls[device] >= 20  # polled ten times a second all along
        assert 2 <= idle[device] <= 4, idle  # 3 s at rest: one a second (give or take)
    assert leak, "the leak was not published"
    first = leak[0]
    assert first.flags["device_low_alarm"] is True  # the detector's own alarm, not a heartbeat
    assert (first.ts - leak_at).total_seconds() < 0.5  # within a few polls, not at 1 s


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"registers.0.deadband": -1}, "registers.0.deadband: Input should be greater than"),
        ({"registers.0.deadband": "nan"}, "registers.0.deadband: Input should be a finite"),
        ({"registers.5.deadband": 1}, "a status word's flags are reported on any change"),
        ({"report_heartbeat_s": 0.5}, "report_heartbeat_s 0.5 is shorter than poll_interval_s"),
        ({"registers.1.deadband": 4}, "deadband 4 of 'cable_temp_1' is too wide"),
    ],
)
def test_a_profile_with_a_bad_deadband_or_report_heartbeat_is_refused_naming_file_and_field(
    tmp_path, change, message
):
    data = yaml.safe_load((PROFILES_DIR / "generic-efm-4t.yaml").read_text())
    for path, value in change.items():
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = float(value) if isinstance(value, str) else value
    path = tmp_path / "generic-efm-4t.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ProfileError) as refused:
        load_profile(path)
    assert str(path) in str(refused.value) and message in str(refused.value)


async def test_a_site_turns_report_by_exception_off_for_a_device_being_commissioned(tmp_path):
    data = yaml.safe_load((SITES_DIR / "demo-county.yaml").read_text())
    data["devices"][0]["report_by_exception"] = False
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    site = load_site(path, PROFILES)
    gateway = GatewayService(
        site.gateways[0], site, PROFILES, BrokerAddress("127.0.0.1", 1), tmp_path / "o.db"
    )
    assert site.devices[0].id not in gateway.reports  # every poll of it is published
    assert "rc-gas-1" in gateway.reports
    data["devices"][0]["report_by_exception"] = "sometimes"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ProfileError, match=r"devices\.0\.report_by_exception"):
        load_site(path, PROFILES)
