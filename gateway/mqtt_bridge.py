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
from dataclasses import dataclass

from firewatch.contract import EventType, ReadingBatchEncoder, utc_now
from firewatch.profiles import DeviceProfile
from firewatch.site import Device
from gateway.modbus_poller import BatchValues, OnEvent, OnReadings

log = logging.getLogger(__name__)


class UplinkError(ValueError):
    """A device's MQTT payload that does not fit its profile."""


def parse_uplink(
    profile: DeviceProfile, payload: bytes
) -> tuple[dict[str, float], dict[str, bool]]:
    assert profile.mqtt is not None
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UplinkError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UplinkError(f"expected a JSON object, got {type(data).__name__}")
    readings: dict[str, float] = {}
    flags: dict[str, bool] = {}
    for key, name in profile.mqtt.readings.items():
        if key in data:
            value = data[key]
            # Python's json takes NaN and Infinity; the contract does not
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise UplinkError(f"{key!r} must be a finite number, got {value!r}")
            readings[name] = float(value)
    for key, name in profile.mqtt.flags.items():
        if key in data:
            value = data[key]
            if value not in (0, 1, True, False):
                raise UplinkError(f"{key!r} must be 0/1 or true/false, got {value!r}")
            flags[name] = bool(value)
    if not readings and not flags:
        known = sorted({*profile.mqtt.readings, *profile.mqtt.flags})
        raise UplinkError(f"none of the expected keys {known} in {sorted(data)}")
    return readings, flags


@dataclass
class _Watch:
    device: Device
    profile: DeviceProfile
    last_heard: float
    online: bool | None = None


class MqttBridge:
    def __init__(
        self,
        devices: list[tuple[Device, DeviceProfile]],
        on_readings: OnReadings,
        on_event: OnEvent,
    ) -> None:
        self.on_readings = on_readings
        self.on_event = on_event
        self.rejected = 0
        loop_time = asyncio.get_running_loop().time()
        self._by_topic: dict[str, _Watch] = {}
        for device, profile in devices:
            assert profile.mqtt is not None
            self._by_topic[profile.mqtt.topic_for(device.id)] = _Watch(device, profile, loop_time)

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    async def handle(self, topic: str, payload: bytes) -> None:
        watch = self._by_topic.get(topic)
        if watch is None:
            return
        try:
            readings, flags = parse_uplink(watch.profile, payload)
        except UplinkError as exc:
            self.rejected += 1
            log.warning("device %s sent an unusable payload on %s: %s", watch.device.id, topic, exc)
            return
        watch.last_heard = asyncio.get_running_loop().time()
        if watch.online is not True:
            watch.online = True
            await self.on_event(watch.device, EventType.ONLINE, "device reports again")
        # shielded: the outbox's future is shared by a whole group commit
        readings_json, flags_json = ReadingBatchEncoder.members(readings, flags)
        await asyncio.shield(self.on_readings(
            watch.device, BatchValues(readings_json), BatchValues(flags_json), utc_now()))

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
