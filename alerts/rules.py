"""Alarm rules: deciding, from one reading batch, which conditions hold.

Pure functions, no I/O: the service feeds them a batch and the set of rules already in alarm,
and acts on the verdicts.  Hysteresis lives here: a rule in alarm stays in alarm until the
value falls below ``set_point - hysteresis``, so a reading hovering at the set point does not
flap between alarm and clear.
"""

from __future__ import annotations

from dataclasses import dataclass

from firewatch.contract import DeviceState
from firewatch.profiles import AlarmRule, Condition, DeviceProfile, Severity
from firewatch.site import Device

#: the built-in rule for a device that stops answering; not in any profile because every
#: device has it
OFFLINE_RULE = AlarmRule(
    name="offline",
    title_zh="设备离线",
    condition=Condition.FLAG,
    field="offline",
    severity=Severity.FAULT,
    category="fire_facilities",
    advice_zh="设备失联：检查设备供电、网关和通信线路，恢复前加强人工巡查。",
)


@dataclass(frozen=True)
class Verdict:
    rule: AlarmRule
    breached: bool
    value: float | None
    set_point: float | None


def rules_for(device: Device, profile: DeviceProfile) -> list[AlarmRule]:
    """The profile's rules with the site's per-device set points applied."""
    return [
        rule.model_copy(update={"set_point": device.set_points[rule.name]})
        if rule.name in device.set_points
        else rule
        for rule in profile.alarms
    ]


def evaluate(
    rules: list[AlarmRule],
    readings: dict[str, float],
    flags: dict[str, bool],
    in_alarm: set[str],
) -> list[Verdict]:
    """A verdict for every rule whose input is in this batch; rules with no input are skipped."""
    verdicts = []
    for rule in rules:
        if rule.condition is Condition.FLAG:
            if rule.field in flags:
                verdicts.append(Verdict(rule, flags[rule.field], None, None))
            continue
        if rule.field not in readings:
            continue
        value = readings[rule.field]
        assert rule.set_point is not None
        limit = rule.set_point - rule.hysteresis if rule.name in in_alarm else rule.set_point
        verdicts.append(Verdict(rule, value >= limit, value, rule.set_point))
    return verdicts


def device_state(open_severities: list[str], offline: bool) -> DeviceState:
    """The colour on the map: an open alarm stays red even if the device then goes silent."""
    if Severity.ALARM in open_severities:
        return DeviceState.ALARM
    if offline:
        return DeviceState.OFFLINE
    if Severity.FAULT in open_severities:
        return DeviceState.FAULT
    return DeviceState.NORMAL
