"""Report by exception: which of a device's polls the gateway publishes.

The gateway keeps polling at the profile's interval (detection speed stays), but a poll's batch
goes out only when the alert service needs it to reach the same alarms as on the full stream:

- a reading changed by more than its register's ``deadband`` since it was last reported, or a
  flag changed at all (a one-key press goes at once);
- a value crossed a bound of an alarm rule: an ``above`` rule's set point or its set point less
  the hysteresis (both, whatever the alert service's state, which the gateway does not know);
- while a rule's delay may be running: every poll for the rule's longest delay after such a
  crossing or flag change, so that an on- or off-delay completes at the same poll as on the
  full stream (the delays count the batches' own times);
- a rate-of-rise rule's field moving by more than its deadband: every poll for a window and
  a bit after, and first the unreported polls of the window before (held here), so that the
  rise is measured over the same samples as on the full stream.  A rise the rule needs is
  more than twice the deadband (the profile is refused otherwise), so no alarming rate builds
  up unreported;
- and at least every ``report_heartbeat_s`` (profile), so that the chain proves the device
  alive.

Events (online, offline, fault) do not pass here: they always go.  Neither do MQTT devices'
reports, sent when the device has something to say.  Why each rule, and the replay that proves
them: docs/report-by-exception.md.
"""

from __future__ import annotations

import json
import math
from collections import deque
from datetime import datetime
from typing import NamedTuple

from alerts.rules import SAMPLES_PER_WINDOW
from firewatch.profiles import AlarmRule, Condition, DeviceProfile

#: a rate-of-rise rule keeps samples SAMPLES_PER_WINDOW to a window: its anchor may be a window
#: and one such step old
_ANCHOR_SLACK = 1 + 1 / SAMPLES_PER_WINDOW


class Poll(NamedTuple):
    """One poll as the gateway read it: when, and its batch's readings and flags JSON members
    (``"name":value,...``, as gateway.modbus_poller.BatchValues carries them)."""

    ts: datetime
    readings: str
    flags: str


class DeviceReports:
    """The decision for one device, poll by poll: :meth:`decide` returns the polls to publish
    now, in order (usually none, or this one)."""

    def __init__(self, profile: DeviceProfile, rules: list[AlarmRule]) -> None:
        self.heartbeat_s = profile.report_heartbeat_s
        self.deadbands = {r.name: r.deadband for r in profile.registers if not r.flags}
        #: per ``above`` rule: (field, its two bounds, its longest delay)
        self._bounds: list[tuple[str, tuple[float, float], float]] = []
        #: the longest delay of a flag rule: how long a flag change keeps every poll going
        self._flag_delay_s = 0.0
        #: per field of a rate-of-rise rule: how long a move keeps every poll going
        self._moving_s: dict[str, float] = {}
        for rule in rules:
            delay = max(rule.on_delay_s, rule.off_delay_s)
            if rule.condition is Condition.ABOVE and rule.set_point is not None:
                bounds = (rule.set_point - rule.hysteresis, rule.set_point)
                self._bounds.append((rule.field, bounds, delay))
            elif rule.condition is Condition.FLAG:
                self._flag_delay_s = max(self._flag_delay_s, delay)
            elif rule.condition is Condition.RATE_OF_RISE:
                moving = rule.window_s * _ANCHOR_SLACK + delay
                self._moving_s[rule.field] = max(self._moving_s.get(rule.field, 0.0), moving)
        #: how far back unreported polls are held, for a rate-of-rise rule's window
        self._history_s = max(self._moving_s.values(), default=0.0)
        #: after a start, every poll goes this long: any rule's delay completes
        self._settle_s = max(max(r.on_delay_s, r.off_delay_s) for r in rules) if rules else 0.0
        #: the spacing of each rate-of-rise window's samples (see _sampled)
        self._steps = sorted({r.window_s / SAMPLES_PER_WINDOW for r in rules if r.window_s})
        self.reset()

    def reset(self) -> None:
        """Forget what was reported: the next poll goes out (the device answers again)."""
        self._last: Poll | None = None
        self._values: dict[str, float] = {}  # the last poll's readings
        self._reported: dict[str, float] = {}  # the values the deadbands count from
        self._reported_at = -math.inf
        #: every poll is published up to this time (unix seconds), and the first one after
        self._all_until = -math.inf
        #: until when a rate-of-rise rule's field counts as moving
        self._moving_until = -math.inf
        #: the last crossing or flag change: a held poll before it is never sent late (it
        #: would start a rule's delay earlier than on the full stream)
        self._crossed_at = -math.inf
        #: unreported polls of the last ``_history_s`` that a rule's memory keeps as samples
        self._held: deque[tuple[float, Poll]] = deque()
        #: per sample spacing, when the full stream's last sample was taken
        self._sampled_at = dict.fromkeys(self._steps, -math.inf)

    def decide(self, poll: Poll) -> list[Poll]:
        """The polls to publish now: none, this one, or first those held that a rate-of-rise
        rule's window needs and then this one."""
        now = poll.ts.timestamp()
        crossed_before = self._crossed_at
        last, self._last = self._last, poll
        reason = late = False
        if last is None or poll.readings != last.readings or poll.flags != last.flags:
            # something moved (the common case of a quiet device is skipped: nothing did)
            values: dict[str, float] = json.loads(f"{{{poll.readings}}}")
            if last is None:
                # the first poll after a start or a reset: what is there now, and every poll
                # for as long as the alert service may have a delay to complete (it may hold
                # alarms from before, to be cleared)
                reason = True
                self._every_poll_for(now, self._settle_s)
            elif poll.flags != last.flags:
                reason = True
                self._crossed_at = now
                self._every_poll_for(now, self._flag_delay_s)
            reason |= self._crossed(now, self._values, values)
            moved, late = self._moved(now, values)
            reason |= moved
            self._values = values
        reason |= now - self._reported_at >= self.heartbeat_s
        hot = self._every_poll(now)
        if reason:
            self._reported, self._reported_at = self._values, now
        elif not hot:
            if self._sampled(now):
                self._hold(now, poll)
            return []
        self._sampled(now)
        return [*self._released(now, crossed_before), poll] if late else [poll]

    def _crossed(self, now: float, before: dict[str, float], values: dict[str, float]) -> bool:
        """Whether a value crossed a bound of an ``above`` rule since the last poll; every
        poll then goes for the rule's delay."""
        crossed = False
        for field, (low, high), delay in self._bounds:
            if field in values and field in before:
                value, then = values[field], before[field]
                if (value >= low) + (value >= high) != (then >= low) + (then >= high):
                    crossed = True
                    self._crossed_at = now
                    self._every_poll_for(now, delay)
        return crossed

    def _moved(self, now: float, values: dict[str, float]) -> tuple[bool, bool]:
        """Whether a reading left its deadband around its last reported value (or appeared
        or went); and whether a rate-of-rise rule's field thereby started moving, which keeps
        every poll going for a window and a bit, the held polls first."""
        reported = self._reported
        if values.keys() != reported.keys():
            return True, False
        deadbands = self.deadbands
        moved = [f for f, value in values.items() if abs(value - reported[f]) > deadbands[f]]
        started = False
        for field in moved:
            moving = self._moving_s.get(field)
            if moving is not None:
                started |= self._moving_until < now
                self._moving_until = max(self._moving_until, now + moving)
                self._every_poll_for(now, moving)
        return bool(moved), started

    def _every_poll_for(self, now: float, seconds: float) -> None:
        if seconds:
            self._all_until = max(self._all_until, now + seconds)

    def _every_poll(self, now: float) -> bool:
        """Whether every poll still goes: up to ``_all_until`` and the first poll after it
        (the one a delay completes at, however late that poll comes)."""
        if now <= self._all_until:
            return True
        if self._all_until == -math.inf:
            return False
        self._all_until = -math.inf
        return True

    def _sampled(self, now: float) -> bool:
        """Whether a rate-of-rise rule's memory would keep this poll as a sample on the full
        stream (alerts.rules.rise_per_minute: one a ``window / SAMPLES_PER_WINDOW`` at most).

        Only those are held and sent late: the alert service then keeps the very samples it
        would have kept from every poll, and measures a rise from the same anchor (every
        poll of the window instead would make it keep others, a few seconds off)."""
        kept = False
        for step in self._steps:
            if now - self._sampled_at[step] >= step:
                self._sampled_at[step] = now
                kept = True
        return kept

    def _hold(self, now: float, poll: Poll) -> None:
        held = self._held
        held.append((now, poll))
        horizon = now - self._history_s
        while held[0][0] < horizon:
            held.popleft()

    def _released(self, now: float, crossed_at: float) -> list[Poll]:
        """The held polls of the window before ``now`` and after the last crossing published
        before them (``crossed_at``)."""
        since = max(now - self._history_s, crossed_at)
        late = [poll for at, poll in self._held if at > since]
        self._held.clear()
        return late
