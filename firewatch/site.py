"""The site file: which institutions exist, their gateways, Modbus endpoints and devices.

Like profiles, a site is data.  It is validated whole at start-up, cross-references included
(a device naming an unknown profile or endpoint fails with the file and the field).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firewatch.contract import Identifier
from firewatch.dispatch_policy import DispatchPolicy
from firewatch.escalation_policy import EscalationPolicy
from firewatch.profiles import (
    DeviceProfile,
    ProfileError,
    Transport,
    check_ladder,
    check_rate_deadband,
    describe_validation_error,
)
from firewatch.urls import OptionalWebUrl
from firewatch.yaml_files import UnreadableFile, load_yaml


class InstitutionType(StrEnum):
    ELDERLY_CARE = "elderly_care"  # 养老机构
    CHILD_WELFARE = "child_welfare"  # 儿童福利机构


class _Strict(BaseModel):
    # finite numbers only: a set point or coordinate of .nan or .inf is a typo, never meant
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: a phone number as people write it: digits, single dashes between them, perhaps a leading +
#: ("-----" is no number, though it matched the pattern this replaced)
PHONE_PATTERN = r"^\+?[0-9](?:-?[0-9]){4,19}$"


class Contact(_Strict):
    name: str
    phone: str = Field(pattern=PHONE_PATTERN, description="mobile: SMS notices go here")
    wechat_openid: str | None = Field(
        None, description="openid under the Official Account: template-message notices go here"
    )


class Location(_Strict):
    """WGS-84, as installers' GPS records it (convert to GCJ-02 only to draw on AMap tiles)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Institution(_Strict):
    id: Identifier
    name: str
    type: InstitutionType
    township: str
    address: str = ""
    location: Location
    head: Contact = Field(description="机构主要负责人: second step of escalation")
    safety_officer: Contact = Field(description="安全管理人员: responsible person for IoT hazards")
    wecom_webhook_url: OptionalWebUrl = None
    duty: list[Contact] = Field(
        default_factory=list,
        max_length=10,
        description="值班表: the duty person, then the deputy, ... called in turn; unset: the "
        "safety officer",
    )
    set_points: dict[str, float] = Field(
        default_factory=dict,
        description="alarm rule name -> set point for every device of this institution",
    )

    def call_list(self) -> list[Contact]:
        """Whom an unanswered call goes to next, in order: the duty roster (值班表), then the
        head; a number already on the list is not called twice.  The bureau comes after."""
        people, seen = [], set()
        for person in [*(self.duty or [self.safety_officer]), self.head]:
            if person.phone not in seen:
                seen.add(person.phone)
                people.append(person)
        return people


class ModbusEndpoint(_Strict):
    """A Modbus TCP device, a serial server, or an RS-485 line on the gateway's own serial port.

    Every unit id behind it shares one connection: on a serial line there can be only one
    master, so the gateway opens the port once and polls each unit in turn.
    """

    id: Identifier
    transport: Transport = Transport.MODBUS_TCP
    host: str = "127.0.0.1"
    port: int = Field(502, ge=0, le=65535, description="0: a simulator picks a free port (demo)")
    serial: str | None = Field(
        None, description="modbus_rtu: the serial device of the RS-485 line, e.g. /dev/ttyUSB0"
    )
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    simulated: bool = False

    @model_validator(mode="after")
    def _serial_line(self) -> ModbusEndpoint:
        if (self.transport is Transport.MODBUS_RTU) != (self.serial is not None):
            raise ValueError(
                f"endpoint {self.id}: a serial device is needed by, and only by, transport "
                f"{Transport.MODBUS_RTU} (got transport {self.transport}, serial {self.serial!r})"
            )
        return self


class Gateway(_Strict):
    id: Identifier
    institution: Identifier
    endpoints: list[ModbusEndpoint] = Field(default_factory=list)
    silent_after_s: float | None = Field(
        None,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="heard of for this long, the gateway is a link fault (巡检); unset: the "
        "FIREWATCH_GATEWAY_SILENT_AFTER_S setting",
    )
    # the alert service's proof that the gateway, its outbox and its link to the broker work:
    # a heartbeat through the outbox this often (a minute's silence is a link fault there)
    heartbeat_interval_s: float = Field(
        15.0,
        ge=1,
        le=3600,
        allow_inf_nan=False,
        description="Seconds between the gateway's heartbeats (1 to 3600).",
    )


class Device(_Strict):
    id: Identifier
    institution: Identifier
    gateway: Identifier
    profile: str
    location: str = Field("", description="Where it hangs, in words duty staff know (厨房, 配电房)")
    endpoint: Identifier | None = None
    unit_id: int | None = Field(None, ge=0, le=247)
    simulated: bool = False
    set_points: dict[str, float] = Field(
        default_factory=dict, description="alarm rule name -> site-specific set point"
    )
    report_by_exception: bool = Field(
        True,
        strict=True,
        description="false: the gateway reports every poll (commissioning), not only changes, "
        "set-point crossings and the profile's report_heartbeat_s",
    )


class County(_Strict):
    name: str
    outline: str | None = Field(None, description="GeoJSON file beside the site file")


class Bureau(_Strict):
    """The supervising civil-affairs bureau (民政局): last step of escalation (提级)."""

    name: str
    duty: Contact = Field(description="who answers for the bureau: escalations go to them")
    wecom_webhook_url: OptionalWebUrl = Field(
        None, description="the bureau's WeChat Work group robot; unset: the default webhook"
    )


class Site(_Strict):
    county: County
    bureau: Bureau | None = None
    escalation: EscalationPolicy = EscalationPolicy()
    dispatch: DispatchPolicy = DispatchPolicy()
    institutions: list[Institution]
    gateways: list[Gateway]
    devices: list[Device]

    @model_validator(mode="after")
    def _references(self) -> Site:
        for kind, items in (
            ("institution", self.institutions),
            ("gateway", self.gateways),
            ("device", self.devices),
            ("endpoint", [e for g in self.gateways for e in g.endpoints]),
        ):
            ids = [i.id for i in items]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{kind} ids repeat: {dupes}")
        institutions = {i.id for i in self.institutions}
        gateways = {g.id: g for g in self.gateways}
        for g in self.gateways:
            if g.institution not in institutions:
                raise ValueError(f"gateway {g.id}: unknown institution {g.institution!r}")
        for d in self.devices:
            if d.institution not in institutions:
                raise ValueError(f"device {d.id}: unknown institution {d.institution!r}")
            if d.gateway not in gateways:
                raise ValueError(f"device {d.id}: unknown gateway {d.gateway!r}")
            endpoints = {e.id for e in gateways[d.gateway].endpoints}
            if d.endpoint is not None and d.endpoint not in endpoints:
                raise ValueError(
                    f"device {d.id}: endpoint {d.endpoint!r} is not one of gateway "
                    f"{d.gateway}'s endpoints {sorted(endpoints)}"
                )
        return self

    def institution(self, institution_id: str) -> Institution:
        return next(i for i in self.institutions if i.id == institution_id)

    def endpoint(self, endpoint_id: str) -> ModbusEndpoint:
        return next(e for g in self.gateways for e in g.endpoints if e.id == endpoint_id)


def check_unit_ids(site: Site, path: Path) -> None:
    """No two devices on one line (endpoint) answer to one unit id: the gateway would read one
    of them under both names, and the other not at all."""
    on_line: dict[tuple[str, int], str] = {}
    for index, d in enumerate(site.devices):
        if d.endpoint is None or d.unit_id is None:
            continue
        first = on_line.setdefault((d.endpoint, d.unit_id), d.id)
        if first != d.id:
            raise ProfileError(
                f"site file {path}: field devices.{index} ({d.id}).unit_id: {d.unit_id} is "
                f"already device {first}'s on endpoint {d.endpoint}; unit ids on one line "
                "must differ"
            )


def check_against_profiles(site: Site, profiles: dict[str, DeviceProfile], path: Path) -> None:
    """Cross-check devices with their profiles: known model, transport fits, set points exist."""
    rule_names = {r.name for p in profiles.values() for r in p.alarms}
    for index, i in enumerate(site.institutions):
        unknown = sorted(set(i.set_points) - rule_names)
        if unknown:
            raise ProfileError(
                f"site file {path}: field institutions.{index} ({i.id}).set_points: "
                f"no profile has alarm rules {unknown}"
            )
        for known in profiles.values():
            _check_set_points(
                known, i.set_points, f"site file {path}: field institutions.{index} ({i.id})"
            )
    for index, d in enumerate(site.devices):
        where = f"site file {path}: field devices.{index} ({d.id})"
        profile = profiles.get(d.profile)
        if profile is None:
            raise ProfileError(
                f"{where}.profile: unknown profile {d.profile!r}; known: {sorted(profiles)}"
            )
        if profile.transport is Transport.MQTT:
            if d.endpoint is not None:
                raise ProfileError(f"{where}.endpoint: an MQTT device has no Modbus endpoint")
        elif d.endpoint is None or d.unit_id is None:
            raise ProfileError(f"{where}: a {profile.transport} device needs endpoint and unit_id")
        for rule in d.set_points:
            if rule not in {r.name for r in profile.alarms}:
                raise ProfileError(
                    f"{where}.set_points: {profile.model} has no alarm rule {rule!r}"
                )
        _check_set_points(profile, d.set_points, where)
        in_force = {**site.institution(d.institution).set_points, **d.set_points}
        _check_ladders(profile, in_force, where)


def _check_set_points(profile: DeviceProfile, set_points: dict[str, float], where: str) -> None:
    """Each set point given for one of ``profile``'s rules lies in the range the rule states,
    and a rate-of-rise set point needs a rise its field's deadband cannot hide."""
    deadbands = {r.name: r.deadband for r in profile.registers}
    for rule in profile.alarms:
        if rule.name in set_points:
            try:
                rule.check_set_point(set_points[rule.name])
                check_rate_deadband(rule, set_points[rule.name], deadbands.get(rule.field, 0.0))
            except ValueError as exc:
                raise ProfileError(
                    f"{where}.set_points.{rule.name}: {exc} (profile {profile.model})"
                ) from None


def _check_ladders(profile: DeviceProfile, set_points: dict[str, float], where: str) -> None:
    """A ladder's levels still rise with the site's set points in force: a low limit set above
    the high one would raise the high alarm first and never rise."""
    for ladder in profile.ladders:
        levels = [profile.rule(name) for name in ladder.levels]
        try:
            check_ladder(ladder, [(r, set_points.get(r.name, r.set_point)) for r in levels])
        except ValueError as exc:
            raise ProfileError(
                f"{where}.set_points: {exc} (the institution's and the device's set points "
                f"applied to profile {profile.model})"
            ) from None


def load_site(path: Path, profiles: dict[str, DeviceProfile]) -> Site:
    try:
        site = Site.model_validate(load_yaml(path))
    except UnreadableFile as exc:
        raise ProfileError(f"site file {path}: {exc}") from None
    except ValidationError as exc:
        raise ProfileError(
            f"site file {path} is invalid:\n{describe_validation_error(exc)}"
        ) from None
    check_unit_ids(site, path)
    check_against_profiles(site, profiles, path)
    return site
