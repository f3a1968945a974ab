"""The JSON API's request and response models (what /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from alerts.ledger import TRANSITIONS, Source
from firewatch.profiles import HazardCategory


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
    state: str = Field(description="normal | alarm | fault | offline")
    state_reason: str
    last_readings: dict[str, float]
    last_flags: dict[str, bool]
    last_seen: datetime | None


class AlarmOut(BaseModel):
    id: int
    device_id: str | None = Field(description="the device; none for a gateway's link fault")
    gateway_id: str | None = Field(None, description="a link fault's gateway (网关通信中断)")
    institution_id: str
    institution_name: str
    rule: str
    title: str
    severity: str
    status: str = Field(description="active | acknowledged | cleared | closed")
    value: float | None
    set_point: float | None
    unit: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    cleared_at: datetime | None


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


class HistoryPointOut(BaseModel):
    time: datetime
    mean: float
    min: float
    max: float
    count: int


class Acknowledgement(BaseModel):
    """Recorded as acknowledged by the logged-in user."""

    note: str = Field("", max_length=500)


class HazardFiling(BaseModel):
    """A hazard found by people: an institution's self-check, an inspection, a public report."""

    institution_id: str
    category: HazardCategory
    source: Source = Field(description="self-check | inspection | public-report")
    description: str = Field(min_length=1, max_length=2000)
    responsible_person: str = Field(min_length=1, max_length=64)
    responsible_phone: str = Field(pattern=r"^\+?[0-9-]{5,20}$")
    deadline: datetime
    # the column's length: PostgreSQL refuses a longer value (SQLite would keep it)
    responsible_unit: str | None = Field(None, max_length=200)


class HazardTransitionRequest(BaseModel):
    action: str = Field(description=", ".join(TRANSITIONS))
    note: str = Field("", max_length=2000)


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


class ScenarioRequest(BaseModel):
    scenario: str = Field(min_length=1, max_length=64)
