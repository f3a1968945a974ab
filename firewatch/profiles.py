"""Device profiles: what a device model is, how to read it, and when it is in alarm.

A profile is a YAML file in ``device_profiles/``.  The gateway reads registers with it, the
simulators serve the same registers from it, and the alert service takes its default alarm rules
from it, so that adding a device model is adding a file, not code.  A profile that does not
validate stops start-up with the file, the field and what was expected.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import StrEnum
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firewatch.contract import FIELD_PATTERN, DeviceKind
from firewatch.yaml_files import UnreadableFile, load_yaml

PROFILES_DIR = Path(__file__).resolve().parent.parent / "device_profiles"
#: the longest a rule may wait before raising or clearing, or measure a rise over: an alarm an
#: hour late is no longer monitoring, and a huge delay overflows the date arithmetic
MAX_DELAY_S = 3600.0
#: polling faster than this floods a serial line; a device heard from less than daily is not
#: monitored (NB-IoT buttons report a heartbeat every few hours)
POLL_INTERVAL_S = (0.05, 86400.0)
#: the longest a gateway may go without reporting a device that answers its polls: the batch
#: that proves the device alive (report by exception, gateway/report_by_exception.py)
MAX_REPORT_HEARTBEAT_S = 3600.0


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


class Transport(StrEnum):
    MODBUS_TCP = "modbus_tcp"
    MODBUS_RTU = "modbus_rtu"
    MODBUS_RTU_OVER_TCP = "modbus_rtu_over_tcp"
    MQTT = "mqtt"


class Table(StrEnum):
    """The four Modbus data tables, named as in the Modbus application protocol spec."""

    HOLDING_REGISTER = "holding_register"  # function code 3
    INPUT_REGISTER = "input_register"  # function code 4
    COIL = "coil"  # function code 1
    DISCRETE_INPUT = "discrete_input"  # function code 2

    @property
    def is_bit(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    BOOL = "bool"

    @property
    def width(self) -> int:
        """Registers (or bits, for BOOL) one value occupies."""
        return 2 if self in (DataType.INT32, DataType.UINT32, DataType.FLOAT32) else 1


_STRUCT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
}


class _Strict(BaseModel):
    # finite numbers only: NaN compares false with everything (a set point of .nan never
    # alarms) and .inf passes every ge/gt bound
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Register(_Strict):
    """One value in the device's register map.

    ``physical = raw * scale + offset``.  A register with ``flags`` is a status word: each listed
    bit becomes a named boolean flag instead of a number.
    """

    name: str = Field(pattern=FIELD_PATTERN)
    table: Table = Table.HOLDING_REGISTER
    address: int = Field(ge=0, le=65535)
    type: DataType = DataType.UINT16
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    flags: dict[int, str] = Field(default_factory=dict, description="bit number -> flag name")
    deadband: float = Field(
        default=0.0,
        ge=0,
        description="report by exception: a change of more than this (in ``unit``) is reported "
        "at once; 0: any change.  Set it above the sensor's noise, or it reports every poll",
    )

    @model_validator(mode="after")
    def _check(self) -> Register:
        if self.flags and self.deadband:
            raise ValueError("a status word's flags are reported on any change: no deadband")
        if self.table.is_bit and self.type is not DataType.BOOL:
            raise ValueError(f"a {self.table} holds single bits: type must be bool")
        if not self.table.is_bit and self.type is DataType.BOOL:
            raise ValueError("type bool needs table coil or discrete_input")
        if self.scale == 0:
            raise ValueError("scale 0 would read every value as the offset")
        last = self.address + self.count - 1
        if last > 65535:
            raise ValueError(
                f"a {self.type} at address {self.address} runs past the last "
                f"Modbus address 65535 (to {last})"
            )
        width = 16 * self.type.width
        for bit in self.flags:
            if not 0 <= bit < width:
                raise ValueError(f"flag bit {bit} is outside a {width}-bit {self.type}")
        return self

    @property
    def count(self) -> int:
        return self.type.width

    def decode(self, words: list[int]) -> int | float | bool:
        """Raw register words (or bits) as read off the wire -> the raw number."""
        if self.type is DataType.BOOL:
            return bool(words[0])
        if self.byte_order == "big":  # the common one-word cases, without building bytes
            if self.type is DataType.UINT16:
                return words[0]
            if self.type is DataType.INT16:
                return words[0] - 0x10000 if words[0] & 0x8000 else words[0]
        data = self._reorder(b"".join(w.to_bytes(2, "big") for w in words))
        value: int | float = struct.unpack(">" + _STRUCT[self.type], data)[0]
        return value

    def encode(self, raw: int | float | bool) -> list[int]:
        """The inverse of :meth:`decode`, used by the simulators."""
        if self.type is DataType.BOOL:
            return [int(bool(raw))]
        if self.type is not DataType.FLOAT32:
            raw = int(round(raw))
        data = self._reorder(struct.pack(">" + _STRUCT[self.type], raw))
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

    def _reorder(self, data: bytes) -> bytes:
        """Between the wire's order and big-endian; the swap is its own inverse."""
        if self.type.width == 2 and self.word_order == "little":
            data = data[2:] + data[:2]
        if self.byte_order == "little":
            data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
        return data

    def to_physical(self, raw: int | float | bool) -> float:
        return float(raw) * self.scale + self.offset

    def to_raw(self, physical: float) -> float:
        return (physical - self.offset) / self.scale


class MqttUplink(_Strict):
    """How an MQTT-native device reports: a JSON object on ``topic`` (``{device_id}`` filled in).

    ``readings`` and ``flags`` map the device's JSON keys to the names used everywhere else.
    """

    topic: str = Field(pattern=r"^[^#+]*\{device_id\}[^#+]*$")
    readings: dict[str, str] = Field(default_factory=dict, description="json key -> reading")
    flags: dict[str, str] = Field(default_factory=dict, description="json key -> flag")

    def topic_for(self, device_id: str) -> str:
        return self.topic.replace("{device_id}", device_id)

    @property
    def topic_filter(self) -> str:
        return self.topic.replace("{device_id}", "+")


class Condition(StrEnum):
    ABOVE = "above"  # reading >= set_point
    RATE_OF_RISE = "rate_of_rise"  # reading rose by >= set_point per minute over window_s
    FLAG = "flag"  # the device raised a status bit


class Severity(StrEnum):
    """What a rule's breach makes of the device: an alarm (danger), a warning (预警: a lower
    level of a ladder, danger coming) or a fault (device trouble).

    A warning is only ever a lower level of a :class:`Ladder`, whose top level is an alarm: it
    is the same condition, caught earlier, and rises on the same alarm (see docs/alarm-ladders.md).
    """

    ALARM = "alarm"
    WARNING = "warning"
    FAULT = "fault"


class HazardCategory(StrEnum):
    """Ledger categories, after the bureaus' work plans (电气, 燃气, 消防设施, ...)."""

    ELECTRICAL = "electrical"
    GAS = "gas"
    FIRE_FACILITIES = "fire_facilities"
    EVACUATION = "evacuation"
    CONSTRUCTION = "construction"
    ELDERLY_CARE_SERVICE = "elderly_care_service"
    OTHER = "other"


class AlarmRule(_Strict):
    """A default alarm rule; sites may override ``set_point`` per device."""

    name: str = Field(pattern=FIELD_PATTERN)
    title_zh: str = Field(min_length=1, description="What the duty staff read, in Chinese.")
    condition: Condition
    field: str = Field(description="reading name (above) or flag name (flag)")
    set_point: float | None = None
    set_point_range: tuple[float, float] | None = Field(
        default=None,
        description="[lowest, highest] set point the detector's standard or manual allows; "
        "a site's override outside it is refused (a set point the sensor never reaches would "
        "never alarm)",
    )
    hysteresis: float = Field(default=0.0, ge=0, description="clear below set_point - this")
    on_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=MAX_DELAY_S,
        description="the condition must hold this long before an alarm",
    )
    off_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=MAX_DELAY_S,
        description="the condition must be gone this long before clearing",
    )
    window_s: float = Field(
        default=0.0,
        ge=0,
        le=MAX_DELAY_S,
        description="rate_of_rise: the span the rise is measured over",
    )
    immediate: bool = Field(
        default=False,
        description="never delayed, never merged into a storm summary (one-key alarm)",
    )
    unit: str = ""
    severity: Severity = Severity.ALARM
    category: HazardCategory = HazardCategory.OTHER
    major_hazard: bool = Field(
        default=False, description="a breach goes into the hazard ledger (重大事故隐患台账)"
    )
    advice_zh: str = Field(default="", description="What to do, for the notice.")
    basis: str = Field(default="", description="Where the set point comes from (standard, clause).")

    @model_validator(mode="after")
    def _check(self) -> AlarmRule:
        if self.condition is not Condition.FLAG and self.set_point is None:
            raise ValueError(f"a {self.condition.value!r} rule needs a set_point")
        if self.condition is Condition.FLAG and self.set_point is not None:
            raise ValueError("a 'flag' rule takes no set_point")
        if (self.condition is Condition.RATE_OF_RISE) != (self.window_s > 0):
            raise ValueError("window_s is needed by, and only by, a 'rate_of_rise' rule")
        if self.immediate and (self.on_delay_s or self.off_delay_s):
            raise ValueError("an immediate rule takes no on_delay_s or off_delay_s")
        if self.set_point_range is not None:
            if self.condition is Condition.FLAG:
                raise ValueError("a 'flag' rule takes no set_point_range")
            low, high = self.set_point_range
            if low > high:
                raise ValueError(f"set_point_range [{low:g}, {high:g}] is upside down")
            if self.set_point is not None:
                self.check_set_point(self.set_point)
        return self

    def check_set_point(self, value: float) -> None:
        """Refuse a set point outside the range the profile states for this rule."""
        if self.set_point_range is not None:
            low, high = self.set_point_range
            if not low <= value <= high:
                unit = f" {self.unit}" if self.unit else ""
                raise ValueError(
                    f"set point {value:g}{unit} is outside the range "
                    f"[{low:g}, {high:g}]{unit} of rule {self.name!r}"
                )


class Ladder(_Strict):
    """Rules that are levels of one condition (gas low and high, a warning and an alarm): one
    alarm per device and ladder, whose level rises as higher rules trip.

    ``levels`` lowest first: each an ``above`` rule on the same reading with a higher set
    point; the lower ones of severity ``warning`` (预警), the top one ``alarm`` (报警).
    """

    name: str = Field(pattern=FIELD_PATTERN)
    levels: list[str] = Field(min_length=2, description="rule names, lowest level first")


class ValueScenario(_Strict):
    """A simulator scenario expressed as target values, reached over ``ramp_s`` seconds."""

    description: str = ""
    readings: dict[str, float] = Field(default_factory=dict)
    flags: dict[str, bool] = Field(default_factory=dict)
    ramp_s: float = Field(default=0.0, ge=0, le=MAX_DELAY_S)


class Simulation(_Strict):
    """How the simulators make this model behave: normal values with noise, and scenarios."""

    normal: dict[str, float] = Field(default_factory=dict, description="reading -> typical value")
    noise: dict[str, float] = Field(default_factory=dict, description="reading -> +/- amplitude")
    scenarios: dict[str, ValueScenario] = Field(default_factory=dict)


class DeviceProfile(_Strict):
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    kind: DeviceKind
    title_zh: str
    vendor: str = ""
    source: str = Field(min_length=1, description="Register map citation, or why there is none.")
    transport: Transport
    poll_interval_s: float = Field(default=1.0, ge=POLL_INTERVAL_S[0], le=POLL_INTERVAL_S[1])
    timeout_s: float = Field(default=1.0, ge=0.05, le=60)
    retries: int = Field(default=1, ge=0, le=10)
    offline_after_misses: int = Field(default=3, ge=1, le=100)
    report_heartbeat_s: float = Field(
        default=60.0,
        gt=0,
        le=MAX_REPORT_HEARTBEAT_S,
        description="report by exception: a batch at least this often, changed or not, so "
        "that the chain proves the device alive",
    )
    registers: list[Register] = Field(default_factory=list)
    mqtt: MqttUplink | None = None
    alarms: list[AlarmRule] = Field(default_factory=list)
    ladders: list[Ladder] = Field(
        default_factory=list, description="rules that are levels of one condition"
    )
    simulation: Simulation = Simulation()

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        if self.transport is Transport.MQTT:
            if self.mqtt is None:
                raise ValueError("transport mqtt needs an 'mqtt' section")
            if self.registers:
                raise ValueError("transport mqtt takes no 'registers'")
        elif not self.registers:
            raise ValueError(f"transport {self.transport} needs 'registers'")
        names = [r.name for r in self.registers]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"register names repeat: {sorted(dupes)}")
        readings, flags = self.reading_names, self.flag_names
        for rule in self.alarms:
            known = flags if rule.condition is Condition.FLAG else readings
            if rule.field not in known:
                raise ValueError(
                    f"alarm {rule.name!r} watches {rule.field!r}, which this profile does not "
                    f"report (it reports {sorted(known)})"
                )
        self._check_ladders()
        if self.report_heartbeat_s < self.poll_interval_s:
            raise ValueError(
                f"report_heartbeat_s {self.report_heartbeat_s:g} is shorter than "
                f"poll_interval_s {self.poll_interval_s:g}: a report needs a poll"
            )
        deadbands = {r.name: r.deadband for r in self.registers}
        for rule in self.alarms:
            check_rate_deadband(rule, rule.set_point, deadbands.get(rule.field, 0.0))
        for name, scenario in self.simulation.scenarios.items():
            unknown = (set(scenario.readings) - readings) | (set(scenario.flags) - flags)
            if unknown:
                raise ValueError(f"scenario {name!r} sets unknown values {sorted(unknown)}")
        return self

    def _check_ladders(self) -> None:
        rules = {r.name: r for r in self.alarms}
        seen: dict[str, str] = {}
        for ladder in self.ladders:
            where = f"ladder {ladder.name!r}"
            if ladder.name in {ld.name for ld in self.ladders if ld is not ladder}:
                raise ValueError(f"{where}: ladder names repeat")
            unknown = [n for n in ladder.levels if n not in rules]
            if unknown:
                raise ValueError(f"{where}: no alarm rules {unknown} in this profile")
            for name in ladder.levels:
                if name in seen:
                    raise ValueError(f"{where}: rule {name!r} is already a level of {seen[name]}")
                seen[name] = where
            levels = [rules[n] for n in ladder.levels]
            check_ladder(ladder, [(r, r.set_point) for r in levels])
        for rule in self.alarms:
            if rule.severity is Severity.WARNING and rule.name not in seen:
                raise ValueError(
                    f"alarm {rule.name!r} is a warning but no ladder's lower level: a warning "
                    "is an early level of a condition whose top level is an alarm"
                )

    def ladder_of(self, rule_name: str) -> Ladder | None:
        for ladder in self.ladders:
            if rule_name in ladder.levels:
                return ladder
        return None

    @cached_property
    def reading_names(self) -> set[str]:
        if self.mqtt is not None:
            return set(self.mqtt.readings.values())
        return {r.name for r in self.registers if not r.flags}

    @cached_property
    def flag_names(self) -> set[str]:
        if self.mqtt is not None:
            return set(self.mqtt.flags.values())
        return {f for r in self.registers for f in r.flags.values()}

    def rule(self, name: str) -> AlarmRule:
        for rule in self.alarms:
            if rule.name == name:
                return rule
        raise KeyError(name)


def check_ladder(ladder: Ladder, levels: list[tuple[AlarmRule, float | None]]) -> None:
    """Refuse a ladder whose levels are not one condition rising: (rule, set point in force),
    lowest first.  Run on the profile's set points and again on a site's."""
    where = f"ladder {ladder.name!r}"
    first = levels[0][0]
    for rule, _ in levels:
        if rule.condition is not Condition.ABOVE or rule.immediate:
            raise ValueError(f"{where}: level {rule.name!r} must be an 'above' rule, not immediate")
        if (rule.field, rule.unit, rule.category) != (first.field, first.unit, first.category):
            raise ValueError(
                f"{where}: level {rule.name!r} watches {rule.field!r} in {rule.unit!r} "
                f"({rule.category}), level {first.name!r} {first.field!r} in {first.unit!r} "
                f"({first.category}); the levels of a ladder are one condition"
            )
    for (low, low_at), (high, high_at) in pairwise(levels):
        if low_at is None or high_at is None or not low_at < high_at:
            raise ValueError(
                f"{where}: level {high.name!r} (set point {high_at}) must lie above level "
                f"{low.name!r} (set point {low_at}): levels are listed lowest first"
            )
    *lower, (top, _) = levels
    for rule, _ in lower:
        if rule.severity is not Severity.WARNING:
            raise ValueError(
                f"{where}: lower level {rule.name!r} must have severity warning (预警), "
                f"not {rule.severity}"
            )
    if top.severity is not Severity.ALARM:
        raise ValueError(
            f"{where}: top level {top.name!r} must have severity alarm (报警), not {top.severity}"
        )


def check_rate_deadband(rule: AlarmRule, set_point: float | None, deadband: float) -> None:
    """Refuse a deadband that could hide a rate of rise: a rise of less than twice the deadband
    over a window can go unreported, so the rise the rule needs to clear
    (``(set_point - hysteresis) * window_s / 60``) must be more than that, or the sparse stream
    would hold a rate in alarm that the full one clears (docs/report-by-exception.md)."""
    if rule.condition is not Condition.RATE_OF_RISE or set_point is None:
        return
    rise = (set_point - rule.hysteresis) * rule.window_s / 60
    if 2 * deadband >= rise:
        raise ValueError(
            f"deadband {deadband:g} of {rule.field!r} is too wide for rule {rule.name!r}: "
            f"twice it must be less than the rise the rule needs over its window "
            f"({rise:g} = (set_point {set_point:g} - hysteresis {rule.hysteresis:g}) x "
            f"window_s {rule.window_s:g} / 60)"
        )


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<top level>"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"  field {where}: {err['msg']}{shown}{_quote_hint(err['type'], got)}")
    return "\n".join(lines)


def _quote_hint(error_type: str, got: object) -> str:
    """Why YAML gave a number, boolean or null where text was meant, and what to write."""
    if error_type != "string_type" or isinstance(got, dict | list):
        return ""
    return (
        "; YAML read the unquoted value as "
        f'{"null" if got is None else type(got).__name__}: put it in quotes, e.g. "..."'
    )


def load_profile(path: Path) -> DeviceProfile:
    try:
        data = load_yaml(path)
    except UnreadableFile as exc:
        raise ProfileError(f"device profile {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"device profile {path}: expected a mapping at the top level")
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(
            f"device profile {path} is invalid:\n{describe_validation_error(exc)}"
        ) from None
    if profile.model != path.stem:
        raise ProfileError(
            f"device profile {path}: field model is {profile.model!r} but the file is named "
            f"{path.name!r}; they must match"
        )
    return profile


def load_profiles(directory: Path = PROFILES_DIR) -> dict[str, DeviceProfile]:
    """Every profile in ``directory``, keyed by model; fails on the first bad file."""
    profiles = {}
    for path in sorted(directory.glob("*.yaml")):
        profile = load_profile(path)
        profiles[profile.model] = profile
    if not profiles:
        raise ProfileError(f"no device profiles (*.yaml) in {directory}")
    return profiles


def read_blocks(
    registers: Iterable[Register], max_gap: int = 0, max_count: int = 120
) -> list[tuple[Table, int, int, list[Register]]]:
    """Group registers into as few read requests as possible: (table, start, count, members).

    Registers in the same table whose addresses are contiguous (or within ``max_gap``) share
    one request, up to ``max_count`` registers (the Modbus limit is 125).
    """
    blocks: list[tuple[Table, int, int, list[Register]]] = []
    for reg in sorted(registers, key=lambda r: (r.table, r.address)):
        if blocks:
            table, start, count, members = blocks[-1]
            end = reg.address + reg.count
            if (
                table == reg.table
                and reg.address <= start + count + max_gap
                and end - start <= max_count
            ):
                blocks[-1] = (table, start, max(count, end - start), [*members, reg])
                continue
        blocks.append((reg.table, reg.address, reg.count, [reg]))
    return blocks
