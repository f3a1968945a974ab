"""How one simulated device behaves, whatever wire it speaks.

Values follow the profile's ``simulation`` section: typical values with noise when normal, and
value scenarios that move readings towards targets over ``ramp_s`` seconds.  Link scenarios
(offline, slow or garbled replies) belong to the transport and are only recorded here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from firewatch.profiles import DeviceProfile, Transport
from firewatch.site import Device

NORMAL = "normal"
MODBUS_LINK_SCENARIOS = ("offline", "slow-replies", "garbled")
MQTT_LINK_SCENARIOS = ("offline",)


@dataclass
class _Ramp:
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
    device: Device
    profile: DeviceProfile
    rng: random.Random = field(default_factory=random.Random)
    scenario: str = NORMAL
    flags: dict[str, bool] = field(init=False)
    _ramp: _Ramp = field(init=False)

    def __post_init__(self) -> None:
        self.flags = dict.fromkeys(self.profile.flag_names, False)
        normal = dict(self.profile.simulation.normal)
        self._ramp = _Ramp(normal, normal, 0.0, 0.0)

    @property
    def link_scenarios(self) -> tuple[str, ...]:
        if self.profile.transport is Transport.MQTT:
            return MQTT_LINK_SCENARIOS
        return MODBUS_LINK_SCENARIOS

    def scenarios(self) -> list[str]:
        return [NORMAL, *self.profile.simulation.scenarios, *self.link_scenarios]

    @property
    def offline(self) -> bool:
        return self.scenario == "offline"

    def set_scenario(self, name: str, now: float) -> None:
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

    def readings(self, now: float) -> dict[str, float]:
        noise = self.profile.simulation.noise
        return {
            name: value + self.rng.uniform(-noise.get(name, 0.0), noise.get(name, 0.0))
            for name, value in self._ramp.at(now).items()
        }
