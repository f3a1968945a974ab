"""Admission: what a gateway says is checked before a consumer believes it.

A gateway is trusted with its own devices and its own clock, no further.  Right after a
message is parsed, the consumers (alerts, ingest) hand it here:

* a gateway speaks only for the devices the site file gives it, with their institution, kind
  and profile: anything else under its topic (``gw-rongcheng`` raising a gas alarm at 丁桥) is
  refused with the reason and dead-lettered;
* heartbeats come only from the site's gateways;
* a reading's ``ts`` is checked against the time it was received: more than ``max_ahead``
  ahead, or older than ``max_age`` (more than an outbox holds), is refused.  A button press
  or any other alarm flag, and a device event, is never dropped for its time: where the
  consumer says so (``restamp``: the alert service) it is taken as read when received.
  A backlog after an outage is old but legitimate, hence the generous ``max_age``.

On the way, :class:`ClockWatch` learns how far each gateway's clock is off, for a log line and
the ``firewatch_gateway_clock_offset_seconds`` gauge.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from firewatch.contract import (
    DeviceEvent,
    DeviceKind,
    GatewayHeartbeat,
    GatewayMessage,
    InvalidPayload,
    ReadingBatch,
)
from firewatch.profiles import DeviceProfile
from firewatch.settings import Settings
from firewatch.site import Site

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Owned:
    """What the site file says of a device: who may speak for it, and what it is."""

    gateway: str
    institution: str
    kind: DeviceKind
    profile: str


@dataclass
class _Clock:
    """One gateway's recent offsets: the least of this window half and of the one before."""

    half: int
    least: float
    before: float = math.inf
    logged: float | None = None


class ClockWatch:
    """How far each gateway's clock is off: ``received_at - ts``, the least over a window.

    A message's ``received_at - ts`` is its delay on the way (outbox, broker, queue) plus how
    far the gateway's clock is behind.  The delay is never negative and the freshest messages
    have almost none, so the least value over the last ``window_s`` is the clock's offset; a
    backlog after an outage (old ``ts``, legitimately) does not move it while fresh messages
    and heartbeats come with it.  Positive: the gateway's clock is behind; negative: ahead.
    """

    def __init__(self, consumer: str, window_s: float = 60, log_step_s: float = 5) -> None:
        self.consumer = consumer
        self.half_s = window_s / 2
        self.log_step_s = log_step_s
        self._clocks: dict[str, _Clock] = {}

    def observe(self, gateway_id: str, received_at: datetime, ts: datetime) -> None:
        offset = (received_at - ts).total_seconds()
        half = int(received_at.timestamp() // self.half_s)
        clock = self._clocks.get(gateway_id)
        if clock is None:
            clock = self._clocks[gateway_id] = _Clock(half, offset)
        elif half != clock.half:
            clock.before = clock.least if half == clock.half + 1 else math.inf
            clock.half, clock.least = half, offset
        else:
            clock.least = min(clock.least, offset)
        estimate = min(clock.least, clock.before)
        if clock.logged is None or abs(estimate - clock.logged) >= self.log_step_s:
            clock.logged = estimate
            direction = "behind" if estimate >= 0 else "ahead of"
            log.log(
                logging.INFO if abs(estimate) < self.log_step_s else logging.WARNING,
                "%s: gateway %s's clock is %.1f s %s ours (least of received - ts)",
                self.consumer,
                gateway_id,
                abs(estimate),
                direction,
            )

    def offsets(self) -> dict[str, float]:
        """Each gateway's clock offset in seconds (received - ts; positive: behind)."""
        return {g: min(c.least, c.before) for g, c in self._clocks.items()}


class Admission:
    """The check a consumer applies to each parsed message; see the module's docstring.

    Called as ``admit(message, received_at)``: returns the message to apply (restamped, for a
    press whose time cannot be believed) or raises :class:`InvalidPayload` with the reason.
    """

    def __init__(
        self,
        site: Site,
        profiles: dict[str, DeviceProfile],
        consumer: str,
        *,
        max_ahead: timedelta,
        max_age: timedelta,
        restamp: bool,
    ) -> None:
        self.gateways = {g.id for g in site.gateways}
        self.devices = {
            d.id: _Owned(d.gateway, d.institution, profiles[d.profile].kind, d.profile)
            for d in site.devices
        }
        self.max_ahead = max_ahead
        self.max_age = max_age
        self.restamp = restamp
        self.clocks = ClockWatch(consumer)
        self.restamped = 0

    def __call__(self, message: GatewayMessage, received_at: datetime) -> GatewayMessage:
        gateway = message.gateway_id
        if gateway not in self.gateways:
            raise InvalidPayload(f"gateway {gateway!r} is not in the site file")
        self.clocks.observe(gateway, received_at, message.ts)
        if isinstance(message, GatewayHeartbeat):
            return message  # its time is what the clock watch measures, not a reading's
        self._check_owner(message)
        problem = self._time_problem(message.ts, received_at)
        if problem is None:
            return message
        if self.restamp and _raises(message):
            self.restamped += 1
            log.warning(
                "%s: %s; %s is applied as read when received, %s",
                self.clocks.consumer,
                problem,
                "a device event" if isinstance(message, DeviceEvent) else "an alarm flag",
                received_at.isoformat(),
            )
            return message.model_copy(update={"ts": received_at})
        raise InvalidPayload(problem)

    def _check_owner(self, message: ReadingBatch | DeviceEvent) -> None:
        gateway, device = message.gateway_id, message.device_id
        owned = self.devices.get(device)
        if owned is None:
            raise InvalidPayload(
                f"gateway {gateway} spoke for device {device!r}, which is not in the site file"
            )
        if owned.gateway != gateway:
            raise InvalidPayload(
                f"gateway {gateway} spoke for device {device}, which the site "
                f"file gives to gateway {owned.gateway} ({owned.institution})"
            )
        said = {"institution_id": message.institution_id, "kind": message.kind}
        known = {"institution_id": owned.institution, "kind": owned.kind}
        if isinstance(message, ReadingBatch):
            said["profile"], known["profile"] = message.profile, owned.profile
        for name, value in said.items():
            if value != known[name]:
                raise InvalidPayload(
                    f"gateway {gateway} said device {device} has {name} "
                    f"{value!r}; the site file says {known[name]!r}"
                )

    def _time_problem(self, ts: datetime, received_at: datetime) -> str | None:
        ahead = ts - received_at
        if ahead > self.max_ahead:
            return (
                f"ts {ts.isoformat()} is {ahead.total_seconds():.0f} s ahead of its "
                f"receipt, more than the {self.max_ahead.total_seconds():.0f} s allowed"
            )
        if -ahead > self.max_age:
            return (
                f"ts {ts.isoformat()} is {-ahead.total_seconds() / 86400:.1f} days before "
                f"its receipt, more than the {self.max_age.total_seconds() / 86400:g} "
                "days allowed"
            )
        return None


def _raises(message: ReadingBatch | DeviceEvent) -> bool:
    """A device event, or a batch with an alarm flag up (a button pressed, a sensor fault)."""
    return isinstance(message, DeviceEvent) or any(message.flags.values())


def admission_for(
    settings: Settings,
    site: Site,
    profiles: dict[str, DeviceProfile],
    consumer: str,
    *,
    restamp: bool,
) -> Admission:
    """The admission check of ``consumer`` with the settings' bounds."""
    return Admission(
        site,
        profiles,
        consumer,
        max_ahead=timedelta(seconds=settings.gateway_clock_max_ahead_s),
        max_age=timedelta(days=settings.gateway_max_age_days),
        restamp=restamp,
    )
