"""How one simulated device behaves, whatever wire it speaks.

Values follow the profile's ``simulation`` section: typical values with noise when normal, and
value scenarios that move readings towards targets over ``ramp_s`` seconds.  Link scenarios
(offline, slow, garbled or exception replies) belong to the transport: they are only recorded
here, and the Modbus server or MQTT publisher acts on them, so the gateway meets them on the
wire.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from firewatch.profiles import DeviceProfile, Transport
from firewatch.site import Device

NORMAL = "normal"
OFFLINE = "offline"
SLOW_REPLIES = "slow-replies"
GARBLED = "garbled"
EXCEPTION_REPLIES = "exception-replies"
MODBUS_LINK_SCENARIOS = (OFFLINE, SLOW_REPLIES, GARBLED, EXCEPTION_REPLIES)
#: an MQTT device is never asked anything, so it cannot answer slowly
MQTT_LINK_SCENARIOS = (OFFLINE, GARBLED)


@dataclass
class _Ramp:
    """Noise-free values moving linearly from ``start`` to ``target`` over ``seconds``."""

    start: dict[str, float]
    target: dict[str, float]
    began: float
    seconds: float

    def at(self, now: float) -> dict[str, float]:
        progress = 1.0 if self.seconds <= 0 else min(1.0, (now - self.began) / self.seconds)
        return {
            name: self.start.get(name, goal) + (goal - self.start.get(name, goal)) * progress
            for name, goal in self.target.items()
        }


@dataclass
class SimulatedDevice:
    """One device's scenario and values; :meth:`tick` moves the values on.

    ``readings`` hold the values as of the last tick, so that what the wire carries, what
    :meth:`SimulatorFleet.status` shows and what a test expects are the same numbers.
    """

    device: Device
    profile: DeviceProfile
    rng: random.Random = field(default_factory=random.Random)
    scenario: str = NORMAL
    flags: dict[str, bool] = field(init=False)
    readings: dict[str, float] = field(init=False)
    _ramp: _Ramp = field(init=False)

    def __post_init__(self) -> None:
        self.flags = dict.fromkeys(self.profile.flag_names, False)
        normal = dict(self.profile.simulation.normal)
        self._ramp = _Ramp(normal, normal, 0.0, 0.0)
        self.tick(0.0)

    def scenarios(self) -> list[str]:
        mqtt = self.profile.transport is Transport.MQTT
        link = MQTT_LINK_SCENARIOS if mqtt else MODBUS_LINK_SCENARIOS
        return [NORMAL, *self.profile.simulation.scenarios, *link]

    def set_scenario(self, name: str, now: float) -> None:
        """Start scenario ``name``: targets and flags of a value scenario, normal ones otherwise.

        Readings ramp from where they are now, so a device leaving a half-finished ramp does
        not jump back first; flags change at once, as a device's status bits do.
        """
        valid = self.scenarios()
        if name not in valid:
            raise ValueError(
                f"device {self.device.id} has no scenario {name!r}; valid: {', '.join(valid)}"
            )
        current = self._ramp.at(now)
        self.flags = dict.fromkeys(self.profile.flag_names, False)
        target = dict(self.profile.simulation.normal)
        seconds = 0.0
        value_scenario = self.profile.simulation.scenarios.get(name)
        if value_scenario is not None:
            target.update(value_scenario.readings)
            self.flags.update(value_scenario.flags)
            seconds = value_scenario.ramp_s
        self._ramp = _Ramp(current, target, now, seconds)
        self.scenario = name

    def tick(self, now: float) -> None:
        """Move the readings to where the ramp is at ``now``, plus fresh uniform noise."""
        noise = self.profile.simulation.noise
        self.readings = {
            name: value + self.rng.uniform(-noise.get(name, 0.0), noise.get(name, 0.0))
            for name, value in self._ramp.at(now).items()
        }
