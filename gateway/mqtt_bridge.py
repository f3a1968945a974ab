"""MQTT-native devices (one-key alarm buttons and the like): their own JSON, our batches.

The bridge listens on each MQTT profile's uplink topic, maps the device's JSON keys to the
names the profile gives them, and hands the result on exactly like a Modbus poll.  A device
whose heartbeats stop is reported offline after the profile's number of missed intervals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass

from firewatch.contract import EventType, ReadingBatchEncoder, utc_now
from firewatch.profiles import DeviceProfile
from firewatch.site import Device
from gateway.modbus_poller import BatchValues, OnEvent, OnReadings

log = logging.getLogger(__name__)


#: an uplink larger than this is refused unread: a device's report is a few dozen bytes, and
#: parsing megabytes would hold up every other device's report
MAX_UPLINK_BYTES = 256 * 1024
#: the largest reading magnitude taken: no sensor Firewatch reads reports a billion in its unit
#: (mA, °C, %LEL, V); beyond it a value is a firmware fault or an attack, and sums and rates
#: of it downstream would overflow to infinity
MAX_READING = 1e9
#: how much of a refused payload a log line shows
LOGGED_PAYLOAD_BYTES = 200
#: a device whose reports keep being refused is logged at most this often (each is counted)
LOG_EVERY_S = 60.0


class UplinkError(ValueError):
    """A device's MQTT payload that does not fit its profile; ``kind`` names the reason for
    the count (too_large, not_json, not_object, bad_value, no_known_key)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def parse_uplink(
    profile: DeviceProfile, payload: bytes
) -> tuple[dict[str, float], dict[str, bool]]:
    """The readings and flags of a device's JSON report, by the profile's names.

    Checked for meaning as well as syntax: a reading must be a number within ±MAX_READING (an
    integer of 400 digits, 1e308 or NaN is not one; -0.0 is taken as 0), a flag 0 or 1
    (``true``, ``false`` and 1.0 are taken for them).  A UTF-8 byte-order mark is allowed; a
    key given twice counts as its last value, as JSON parsers commonly take it; unknown keys
    are ignored.
    """
    assert profile.mqtt is not None
    if len(payload) > MAX_UPLINK_BYTES:
        raise UplinkError("too_large", f"{len(payload)} bytes, more than {MAX_UPLINK_BYTES}")
    try:
        data = json.loads(payload.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, too long an int
        raise UplinkError("not_json", f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(data, dict):
        raise UplinkError("not_object", f"expected a JSON object, got {type(data).__name__}")
    readings: dict[str, float] = {}
    flags: dict[str, bool] = {}
    for key, name in profile.mqtt.readings.items():
        if key in data:
            readings[name] = _reading(key, data[key])
    for key, name in profile.mqtt.flags.items():
        if key in data:
            value = data[key]
            if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
                flags[name] = bool(value)
            else:
                raise UplinkError(
                    "bad_value", f"{key!r} must be 0/1 or true/false, got {_shown(value)}"
                )
    if not readings and not flags:
        known = sorted({*profile.mqtt.readings, *profile.mqtt.flags})
        raise UplinkError(
            "no_known_key",
            f"none of the expected keys {known} in "
            f"{_shown(sorted(data)[:10])}{' ...' if len(data) > 10 else ''}",
        )
    return readings, flags


def _reading(key: str, value: object) -> float:
    """A reading as a float within ±MAX_READING; Python's json takes NaN, Infinity and
    integers of any length, the contract takes finite numbers only."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise UplinkError("bad_value", f"{key!r} must be a finite number, got {_shown(value)}")
        if abs(number) <= MAX_READING:
            return number + 0.0  # -0.0 as 0.0
        raise UplinkError("bad_value", f"{key!r} is beyond ±{MAX_READING:g}: {_shown(value)}")
    raise UplinkError("bad_value", f"{key!r} must be a number, got {_shown(value)}")


def _shown(value: object) -> str:
    """A value for a log line: its repr, cut short (Python refuses to make a string of an
    integer of more than 4,300 digits, and a log line is no place for one anyway)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Watch:
    device: Device
    profile: DeviceProfile
    last_heard: float
    online: bool | None = None


class MqttBridge:
    """Device reports -> reading batches.  A report that cannot be used is set aside: counted
    by reason (``set_aside``), logged with the start of its payload, and the next one is taken.
    """

    def __init__(
        self,
        devices: list[tuple[Device, DeviceProfile]],
        on_readings: OnReadings,
        on_event: OnEvent,
    ) -> None:
        self.on_readings = on_readings
        self.on_event = on_event
        #: reports set aside, by reason
        self.set_aside: Counter[str] = Counter()
        #: per device, when its last refused report was logged, and how many since
        self._logged: dict[str, tuple[float, int]] = {}
        loop_time = asyncio.get_running_loop().time()
        self._by_topic: dict[str, _Watch] = {}
        for device, profile in devices:
            assert profile.mqtt is not None
            self._by_topic[profile.mqtt.topic_for(device.id)] = _Watch(device, profile, loop_time)

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    @property
    def rejected(self) -> int:
        return sum(self.set_aside.values())

    async def handle(self, topic: str, payload: bytes) -> asyncio.Future[None] | None:
        """Take one report; the future of its batch's place in the outbox (None: nothing to
        store, the report was not for a device of ours or was set aside).  Exceptions are the
        outbox's, not the report's."""
        watch = self._by_topic.get(topic)
        if watch is None:
            return None
        try:
            readings, flags = parse_uplink(watch.profile, payload)
            members = ReadingBatchEncoder.members(readings, flags)
        except UplinkError as exc:
            self._set_aside(watch, payload, exc.kind, exc)
            return None
        except Exception as exc:  # whatever else a payload makes happen: its own fault
            self._set_aside(watch, payload, "unexpected", exc)
            return None
        watch.last_heard = asyncio.get_running_loop().time()
        if watch.online is not True:
            watch.online = True
            await self.on_event(watch.device, EventType.ONLINE, "device reports again")
        stored = self.on_readings(
            watch.device, BatchValues(members[0]), BatchValues(members[1]), utc_now()
        )
        return stored if isinstance(stored, asyncio.Future) else asyncio.ensure_future(stored)

    def _set_aside(self, watch: _Watch, payload: bytes, kind: str, exc: Exception) -> None:
        """Count a refused report; log it, unless this device's last one was logged less than
        LOG_EVERY_S ago (a device sending garbage a thousand times a second would otherwise
        flood the log)."""
        self.set_aside[kind] += 1
        device = watch.device.id
        now = asyncio.get_running_loop().time()
        logged_at, since = self._logged.get(device, (-math.inf, 0))
        if now - logged_at < LOG_EVERY_S:
            self._logged[device] = (logged_at, since + 1)
            return
        self._logged[device] = (now, 0)
        more = f" ({since} more set aside since the last one logged)" if since else ""
        log.warning(
            "device %s: report set aside (%s): %s; payload %r%s%s",
            device,
            kind,
            exc,
            payload[:LOGGED_PAYLOAD_BYTES],
            "..." if len(payload) > LOGGED_PAYLOAD_BYTES else "",
            more,
        )

    async def watch_heartbeats(self) -> None:
        """Report devices whose reports stopped, at a tenth of the shortest interval."""
        period = min((w.profile.poll_interval_s for w in self._by_topic.values()), default=1) / 10
        while True:
            await asyncio.sleep(period)
            now = asyncio.get_running_loop().time()
            for watch in self._by_topic.values():
                silence = now - watch.last_heard
                limit = watch.profile.poll_interval_s * watch.profile.offline_after_misses
                if silence > limit and watch.online is not False:
                    watch.online = False
                    await self.on_event(
                        watch.device,
                        EventType.OFFLINE,
                        f"no report for {silence:.0f} s (expected every "
                        f"{watch.profile.poll_interval_s:g} s)",
                    )
