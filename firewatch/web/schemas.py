"""The JSON API's request and response models (what /docs shows).

What a person types is bounded here, so that a mistake is a 422 naming the field rather than a
500 from the database or a crash of the escalation sweep later:

- dates: a date without a time zone is China time (+08:00), as the ledger's ``since``/``until``
  filters always took it; every date lies between 2000 and 2100, and a deadline lies after
  the filing and at most three years ahead (a deadline in 9999 overflowed the sweep);
- text: bounded lengths; NUL and other control characters are refused (PostgreSQL refuses NUL
  in text), and so are the invisible characters that reorder or hide what is displayed
  (bidi overrides and isolates, zero-width characters: "Trojan Source", CVE-2021-42574).
  They are refused rather than stripped: the ledger is a record people sign, and what is
  stored must be what they typed and saw; the 422 names the field and the character.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from alerts.confirmation import Classification
from alerts.ledger import TRANSITIONS, Source
from alerts.notices import CST
from firewatch.contract import utc_now
from firewatch.device_modes import Mode, Reason, in_force
from firewatch.profiles import HazardCategory
from firewatch.site import PHONE_PATTERN

#: the dates a person may enter: before 2000 or after 2100 is a typo
EARLIEST = datetime(2000, 1, 1, tzinfo=CST)
LATEST = datetime(2100, 1, 1, tzinfo=CST)
#: the furthest a rectification deadline may lie ahead of its filing
MAX_DEADLINE_AHEAD = timedelta(days=3 * 366)
#: bidi embeddings, overrides, isolates and marks; zero-width space, joiners, word joiner, BOM
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


def china_time(ts: datetime) -> datetime:
    """``ts`` with China time assumed where it names no time zone, within 2000-2100."""
    zoned = ts.replace(tzinfo=CST) if ts.tzinfo is None else ts
    if not EARLIEST <= zoned < LATEST:
        raise ValueError("a date between 2000 and 2100 is expected")
    return zoned


def _displayable(text: str) -> str:
    for char in text:
        if _INVISIBLE.match(char) or (unicodedata.category(char) == "Cc" and char not in "\t\n\r"):
            raise ValueError(
                f"character U+{ord(char):04X} is not allowed: it is a control or "
                "invisible character (retype the text without it)"
            )
    return text


#: a date a person enters (ISO 8601); without a time zone it is China time
EnteredDate = Annotated[datetime, AfterValidator(china_time)]
#: text a person enters and others read, without control or invisible characters (bound its
#: length where it is used)
Displayable = Annotated[str, AfterValidator(_displayable)]
#: a query's text filter (a township, an id): bounded, and no NUL for PostgreSQL to refuse
QueryText = Annotated[str, Field(max_length=200), AfterValidator(_displayable)]


class InstitutionOut(BaseModel):
    id: str
    name: str
    type: str
    township: str
    address: str
    lat: float
    lon: float


class DeviceOut(BaseModel):
    id: str
    institution_id: str
    institution_name: str
    kind: str
    profile: str
    location: str
    state: str = Field(
        description="normal | alarm | fault | offline, or shielded | test while the device is "
        "shielded (屏蔽) or in test mode (测试), whatever its alarms say (GB/T 45839 status 4)"
    )
    condition: str = Field(
        "", description="what the device's alarms say, shielded or not: normal | alarm | ..."
    )
    state_reason: str
    last_readings: dict[str, float]
    last_flags: dict[str, bool]
    last_seen: datetime | None
    mode: str = Field("normal", description="normal | shielded | test, as in force now")
    mode_until: datetime | None = Field(None, description="when the mode ends by itself")
    mode_reason: str = Field("", description="maintenance | commissioning | other")
    mode_note: str = ""
    mode_by: str = Field("", description="the account that started the mode")

    @model_validator(mode="after")
    def _mode_now(self) -> DeviceOut:
        """The mode as it stands at this read: one whose time is up is over, even before the
        alert service's sweep has written it back (firewatch.device_modes)."""
        self.condition = self.condition or self.state
        if in_force(self.mode, self.mode_until, utc_now()) is None:
            self.mode, self.mode_until = Mode.NORMAL.value, None
            self.mode_reason = self.mode_note = self.mode_by = ""
        else:
            self.state = self.mode
        return self


class AlarmOut(BaseModel):
    id: int
    device_id: str | None = Field(description="the device; none for a gateway's link fault")
    gateway_id: str | None = Field(None, description="a link fault's gateway (网关通信中断)")
    institution_id: str
    institution_name: str
    rule: str = Field(description="the rule; of a ladder's alarm, the highest level reached")
    title: str
    severity: str = Field(
        description="alarm | warning (预警: a ladder's lower level) | fault, of the highest "
        "level reached"
    )
    category: str = Field("", description="its hazard category (gas, electrical, ...)")
    level: str | None = Field(
        None, description="a ladder's level in force now (a rule name); none: that of `rule`"
    )
    status: str = Field(description="active | acknowledged | cleared | closed")
    value: float | None
    set_point: float | None
    unit: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    classification: Classification | None = Field(
        None, description="real | false | test | device_fault; none: not confirmed, or 未分类"
    )
    cleared_at: datetime | None
    mode: str | None = Field(
        None, description="shielded | test: raised while its device was, and told to nobody"
    )
    released_at: datetime | None = Field(
        None, description="a held alarm still open when the mode ended: told at this time"
    )


class HazardOut(BaseModel):
    id: int
    institution_id: str
    institution_name: str
    township: str
    category: str
    source: str
    description: str
    responsible_unit: str
    responsible_person: str
    responsible_phone: str
    deadline: datetime
    status: str
    device_id: str | None
    alarm_id: int | None
    created_at: datetime
    updated_at: datetime


class NoticeOut(BaseModel):
    id: int
    alarm_id: int | None
    institution_id: str
    channel: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    body: dict[str, Any]
    link: str | None = Field(None, description="the one-tap confirmation link it carries")


class HistoryPointOut(BaseModel):
    time: datetime
    mean: float
    min: float
    max: float
    count: int


class Acknowledgement(BaseModel):
    """Recorded as acknowledged by the logged-in user, with what they say it was."""

    classification: Classification = Field(
        description="real 真实火警/险情 | false 误报 | test 测试/检修 | device_fault 设备故障"
    )
    note: Displayable = Field("", max_length=500)


class Closing(BaseModel):
    """A cleared alarm closed by the logged-in user; one nobody acknowledged needs a
    classification too (closing acknowledges it)."""

    note: Displayable = Field("", max_length=500)
    classification: Classification | None = None


class HazardFiling(BaseModel):
    """A hazard found by people: an institution's self-check, an inspection, a public report."""

    institution_id: Displayable = Field(max_length=64)
    category: HazardCategory
    source: Source = Field(description="self-check | inspection | public-report")
    description: Displayable = Field(min_length=1, max_length=2000)
    responsible_person: Displayable = Field(min_length=1, max_length=64)
    responsible_phone: str = Field(pattern=PHONE_PATTERN)
    deadline: EnteredDate = Field(
        description="after now and at most three years ahead; "
        "without a time zone: China time (+08:00)"
    )
    # the column's length: PostgreSQL refuses a longer value (SQLite would keep it)
    responsible_unit: Annotated[str, Field(max_length=200), AfterValidator(_displayable)] | None = (
        None
    )

    @field_validator("deadline")
    @classmethod
    def _ahead(cls, deadline: datetime) -> datetime:
        now = utc_now()
        if deadline <= now:
            raise ValueError("the deadline must lie after the filing (now)")
        if deadline > now + MAX_DEADLINE_AHEAD:
            raise ValueError("the deadline must lie at most three years ahead")
        return deadline


class HazardTransitionRequest(BaseModel):
    action: str = Field(description=", ".join(TRANSITIONS), max_length=64)
    note: Displayable = Field("", max_length=2000)


class HazardEventOut(BaseModel):
    id: int
    action: str
    actor: str
    note: str
    from_status: str | None
    to_status: str
    at: datetime


class AlarmEventOut(HazardEventOut):
    """One step of an alarm's lifecycle: raise, acknowledge, clear, close."""


def row_columns(row: Any) -> dict[str, Any]:
    """A model row's columns by name, for the response models above."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


class ScenarioRequest(BaseModel):
    scenario: str = Field(min_length=1, max_length=64)


class DeviceModeRequest(BaseModel):
    """Shield a device (屏蔽) or put it in test mode (测试) for a stated time, with a reason."""

    mode: Mode = Field(description="shielded | test")
    minutes: int = Field(
        ge=1, le=30 * 24 * 60, description="how long; at most FIREWATCH_DEVICE_MODE_MAX_HOURS"
    )
    reason: Reason = Field(description="maintenance (检修) | commissioning (调试) | other (其他)")
    note: Displayable = Field("", max_length=500, description="required for reason other")

    @model_validator(mode="after")
    def _stated(self) -> DeviceModeRequest:
        if self.mode is Mode.NORMAL:
            raise ValueError("mode: shielded or test (end a mode with DELETE)")
        if self.reason is Reason.OTHER and not self.note.strip():
            raise ValueError("note: say what the reason is when it is other (其他)")
        return self


class DeviceModeEventOut(BaseModel):
    """One line of the audit log of shielding and test mode."""

    id: int
    device_id: str
    action: str = Field(description="start | end (its time was up) | cancel (ended early)")
    mode: str
    reason: str
    note: str
    until: datetime | None
    actor: str
    at: datetime
