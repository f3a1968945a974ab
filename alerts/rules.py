"""Alarm rules: deciding, from one reading batch, which conditions hold.

Pure functions, no I/O: the service feeds them a batch, the rules already in alarm and each
rule's memory, and acts on the verdicts; ``settle_state`` colours a device row from its open
alarms (the service's and the link watch's, alerts.selfcheck).  Three things stop a rule from
flapping:

- hysteresis: a rule in alarm stays in alarm until the value falls below
  ``set_point - hysteresis``, so a reading hovering at the set point does not toggle;
- on-delay: a breach must last ``on_delay_s`` (device time) before it is an alarm, so a
  one-poll spike (a motor starting, a burner lighting) raises nothing;
- off-delay: a cleared condition must stay clear for ``off_delay_s`` before the alarm clears.

Rate-of-rise rules compare the newest value with the one ``window_s`` earlier; the samples they
need are part of the memory.  The one-key alarm is ``immediate``: no delay may be set on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from firewatch.contract import DeviceState, EventType, utc_now
from firewatch.profiles import AlarmRule, Condition, DeviceProfile, Severity
from firewatch.site import Device, Institution

if TYPE_CHECKING:
    from firewatch import db

#: the built-in rule for a device that stops answering; not in any profile because every
#: device has it (the gateway already waits ``offline_after_misses`` polls: no delay here)
OFFLINE_RULE = AlarmRule(
    name="offline",
    title_zh="设备离线",
    condition=Condition.FLAG,
    field="offline",
    severity=Severity.FAULT,
    category="fire_facilities",
    advice_zh="设备失联：检查设备供电、网关和通信线路，恢复前加强人工巡查。",
)

#: the built-in rule for a device that answers, but unusably (the gateway's ``fault`` event:
#: exception replies, garbled frames); like OFFLINE_RULE, every device has it
DEVICE_FAULT_RULE = AlarmRule(
    name="device_fault",
    title_zh="设备故障（应答异常）",
    condition=Condition.FLAG,
    field="device_fault",
    severity=Severity.FAULT,
    category="fire_facilities",
    advice_zh="设备有应答但无法读取：检查设备本身（故障、地址、型号配置），恢复前加强人工巡查。",
)
#: the rule each kind of a gateway's device event raises; an event clears the others
LINK_RULES = {EventType.OFFLINE: OFFLINE_RULE, EventType.FAULT: DEVICE_FAULT_RULE}

#: the built-in rule of a gateway heard of for longer than its setting (巡检, alerts.links): one
#: alarm for the gateway, not one per device behind it, escalated like a device fault
LINK_RULE = AlarmRule(
    name="link_lost",
    title_zh="网关通信中断",
    condition=Condition.FLAG,
    field="link_lost",
    severity=Severity.FAULT,
    category="fire_facilities",
    advice_zh="网关失联，其下设备均失去监测：检查网关供电、网络和通信线路，恢复前加强人工巡查。",
)

#: a device's state reason before anything was heard of it (the database's default)
NO_DATA = "no data yet"

#: rate-of-rise samples are kept this many to a window: enough resolution, little to store
SAMPLES_PER_WINDOW = 12


@dataclass
class RuleMemory:
    """What one rule of one device remembers between batches (persisted by the service).

    ``pending_since``: since when the condition has disagreed with the alarm state, i.e. how
    long an on- or off-delay has been running.  ``samples``: (unix seconds, value) pairs of a
    rate-of-rise rule, the oldest one at least a window old.
    """

    pending_since: datetime | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        since = self.pending_since.isoformat() if self.pending_since else None
        return {"pending_since": since, "samples": [list(s) for s in self.samples]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleMemory:
        since = data.get("pending_since")
        return cls(
            datetime.fromisoformat(since) if since else None,
            [(t, v) for t, v in data.get("samples", [])],
        )


@dataclass(frozen=True)
class Verdict:
    """``breached``: the rule's alarm state after this batch, delays and hysteresis applied."""

    rule: AlarmRule
    breached: bool
    value: float | None
    set_point: float | None


def rules_for(device: Device, profile: DeviceProfile, institution: Institution) -> list[AlarmRule]:
    """The profile's rules with the institution's, then the device's own set points applied."""
    set_points = {**institution.set_points, **device.set_points}
    return [
        rule.model_copy(update={"set_point": set_points[rule.name]})
        if rule.name in set_points
        else rule
        for rule in profile.alarms
    ]


#: each ladder level's rule name -> its ladder's levels, lowest first, set points applied
Ladders = dict[str, list[AlarmRule]]


def ladders_for(rules: list[AlarmRule], profile: DeviceProfile) -> Ladders:
    """The profile's ladders over ``rules`` (a device's, from :func:`rules_for`)."""
    by_name = {r.name: r for r in rules}
    found: Ladders = {}
    for ladder in profile.ladders:
        levels = [by_name[name] for name in ladder.levels]
        found |= dict.fromkeys(ladder.levels, levels)
    return found


def rules_in_alarm(open_alarms: Iterable[db.Alarm], ladders: Ladders) -> set[str]:
    """The rules whose alarm state is on: each lone rule with an open alarm and, for a ladder's
    alarm, every level up to the one in force (a level below it needs no on-delay again and
    keeps its hysteresis)."""
    on = set()
    for alarm in open_alarms:
        names = [r.name for r in ladders.get(alarm.current_level, [])]
        if alarm.current_level in names:
            on.update(names[: names.index(alarm.current_level) + 1])
        else:
            on.add(alarm.rule)
    return on


def level_in_force(levels: list[AlarmRule], verdicts: dict[str, Verdict], on: set[str]) -> int:
    """The index of a ladder's highest level in alarm after this batch; -1: none.  A level
    without input in the batch keeps its state (``on``)."""
    top = -1
    for index, rule in enumerate(levels):
        verdict = verdicts.get(rule.name)
        if verdict.breached if verdict is not None else rule.name in on:
            top = index
    return top


def may_raise_at_once(
    rules: list[AlarmRule], readings: dict[str, float], flags: dict[str, bool]
) -> bool:
    """Whether a rule without an on-delay sees its condition in this batch: a button pressed, a
    reading at its set point.  A cheap look, without the rules' memory or the alarms already
    raised, that lets the service apply such a batch ahead of the routine ones."""
    for rule in rules:
        if rule.on_delay_s:
            continue
        if rule.condition is Condition.FLAG and flags.get(rule.field) is True:
            return True
        if rule.condition is Condition.ABOVE and rule.set_point is not None:
            value = readings.get(rule.field)
            if value is not None and value >= rule.set_point:
                return True
    return False


def evaluate(
    rules: list[AlarmRule],
    readings: dict[str, float],
    flags: dict[str, bool],
    in_alarm: set[str],
    memory: dict[str, RuleMemory],
    ts: datetime,
) -> list[Verdict]:
    """A verdict for every rule whose input is in this batch; rules with no input are skipped.

    ``memory`` is updated in place (new entries for rules that had none).
    """
    verdicts = []
    for rule in rules:
        alarmed = rule.name in in_alarm
        mem = memory.setdefault(rule.name, RuleMemory())
        if rule.condition is Condition.FLAG:
            if rule.field not in flags:
                continue
            breached = debounce(rule, flags[rule.field], alarmed, mem, ts)
            verdicts.append(Verdict(rule, breached, None, None))
            continue
        if rule.field not in readings:
            continue
        value = readings[rule.field]
        if rule.condition is Condition.RATE_OF_RISE:
            rate = rise_per_minute(rule, mem, value, ts)
            if rate is None:
                continue  # not a window of history yet
            value = round(rate, 1)
        assert rule.set_point is not None
        limit = rule.set_point - rule.hysteresis if alarmed else rule.set_point
        breached = debounce(rule, value >= limit, alarmed, mem, ts)
        verdicts.append(Verdict(rule, breached, value, rule.set_point))
    return verdicts


def debounce(
    rule: AlarmRule, condition: bool, alarmed: bool, mem: RuleMemory, ts: datetime
) -> bool:
    """The alarm state once the on- or off-delay has run; ``condition`` is this batch's view."""
    if condition == alarmed:
        mem.pending_since = None
        return alarmed
    if mem.pending_since is None or mem.pending_since > ts:
        mem.pending_since = ts
    delay = rule.off_delay_s if alarmed else rule.on_delay_s
    if (ts - mem.pending_since).total_seconds() >= delay:
        mem.pending_since = None
        return condition
    return alarmed


def rise_per_minute(rule: AlarmRule, mem: RuleMemory, value: float, ts: datetime) -> float | None:
    """Rise per minute since the newest sample at least a window old; None without one."""
    now = ts.timestamp()
    # samples after ``ts`` were taken on a gateway clock that has since stepped back: measured
    # against them, the rate would wait for the clock to catch up before it saw anything again
    mem.samples = [s for s in mem.samples if s[0] <= now]
    horizon = now - rule.window_s
    older = [s for s in mem.samples if s[0] <= horizon]
    anchor = older[-1] if older else None
    kept = [s for s in mem.samples if s[0] > horizon]
    mem.samples = ([anchor] if anchor else []) + kept
    if not kept or now - kept[-1][0] >= rule.window_s / SAMPLES_PER_WINDOW:
        mem.samples.append((now, value))
    if anchor is None or now <= anchor[0]:
        return None
    return (value - anchor[1]) / (now - anchor[0]) * 60


def device_state(open_severities: list[str], offline: bool) -> DeviceState:
    """The colour on the map: an open alarm stays red even if the device then goes silent."""
    # a warning (预警) is a ladder's early level of an alarm: GB/T 45839 knows no other state
    if Severity.ALARM in open_severities or Severity.WARNING in open_severities:
        return DeviceState.ALARM
    if offline:
        return DeviceState.OFFLINE
    if Severity.FAULT in open_severities:
        return DeviceState.FAULT
    return DeviceState.NORMAL


class Coloured(Protocol):
    """A device as the map colours it: the ORM's row, or the alert service's
    (alerts.device_rows.DeviceNow)."""

    state: str
    state_reason: str
    updated_at: datetime
    last_seen: datetime | None


def settle_state(device: Coloured, open_alarms: Iterable[db.Alarm], link_down: str = "") -> None:
    """The device's colour and reason on the map from its open alarms and, ``link_down``, the
    reason its gateway is not heard (its readings cannot come)."""
    alarms = list(open_alarms)
    offline = any(a.rule == OFFLINE_RULE.name for a in alarms) or bool(link_down)
    reasons = [a.title for a in alarms] + ([link_down] if link_down else [])
    if device.last_seen is None:
        offline = True
        reasons = reasons or [NO_DATA]
    state = device_state([a.severity for a in alarms], offline).value
    reason = "；".join(reasons) or "运行正常"
    if (device.state, device.state_reason) != (state, reason):
        device.state, device.state_reason = state, reason
        device.updated_at = utc_now()
