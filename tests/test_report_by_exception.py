"""Report by exception: the gateway publishes changes, crossings and heartbeats, and the alert
rules raise and clear the same alarms on that sparse stream as on every poll.

The replay test records a full-rate stream from the simulators' device models (a second a poll,
with the profiles' noise, a little jitter in the poll times, and scenarios: spikes short and
long, a slow rise through a set point, an overheat fast enough for the rate-of-rise rule, a
sensor fault flag, a gas leak) and runs it through the alert rules twice: every poll, and only
the polls the gateway's report-by-exception filter lets out.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import pytest

from alerts.rules import RuleMemory, evaluate, rules_for
from firewatch.contract import ReadingBatchEncoder
from firewatch.profiles import DeviceProfile
from firewatch.site import Device
from gateway.report_by_exception import DeviceReports, Poll
from simulators.device import SimulatedDevice
from tests.support.alerts import PROFILES, SITE

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
    idle = [p for p in sparse if p.ts < START + timedelta(seconds=300)]  # 5 minutes at rest
    assert len(idle) <= 6  # the first poll, then one a report_heartbeat_s (60 s)
    assert len({p.ts for p in sparse}) == len(sparse)  # none twice
