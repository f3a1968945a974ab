"""Confirmation over HTTP: the alarm statistics, and the one-tap link's page and API (§5).

The link's routes take no login: the signed token is the credential, good for one notice's
alarm, for a limited time (alerts.confirm_links).  What they show is that alarm only: its
device's last readings and the advice for its rule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as UrlPath
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from alerts import confirmation
from alerts.alarm_stats import (
    AlarmGroupBy,
    alarm_rows,
    escalation_budget,
    model_names,
    summarise,
)
from alerts.confirm_links import OTHER_ALARM_ZH, ConfirmLinks, LinkRefused, recipient_name
from alerts.confirmation import CLASSIFICATION_ZH, Classification
from alerts.lifecycle import AlarmTransitionError
from firewatch.contract import utc_now
from firewatch.db import Alarm, Device, Notice
from firewatch.profiles import DeviceProfile
from firewatch.settings import Settings
from firewatch.site import Site
from firewatch.web.auth import CurrentUser, own_institution
from firewatch.web.schemas import (
    AlarmOut,
    Displayable,
    EnteredDate,
    QueryText,
    row_columns,
)

#: a token as issued is ~30 characters; anything much longer is no token of ours
Token = Annotated[str, UrlPath(min_length=1, max_length=100)]


class Figures(BaseModel):
    alarms: int
    confirmed: int
    real: int
    false: int
    test: int
    device_fault: int
    unclassified: int = Field(description="confirmed before classifications existed (未分类)")
    false_alarm_rate: float | None = Field(description="false / classified; none: none yet")
    median_confirm_s: float | None
    p90_confirm_s: float | None = Field(description="nearest-rank 90th percentile")
    within_escalation: int
    within_escalation_share: float | None = Field(
        description="confirmed before the escalation to the head fell due, of those decided"
    )


class FiguresRow(Figures):
    key: str
    label: str


class AlarmStatisticsOut(BaseModel):
    by: AlarmGroupBy
    since: datetime | None
    until: datetime | None
    rows: list[FiguresRow]
    totals: Figures


class ReadingOut(BaseModel):
    field: str
    value: float


class LinkedAlarmOut(BaseModel):
    """What the confirm page shows: the alarm, its device's last readings, the advice."""

    alarm: AlarmOut
    location: str
    device: str
    readings: list[ReadingOut]
    flags: dict[str, bool]
    last_seen: datetime | None
    advice: str
    person: str = Field(description="whom the link was sent to: the confirmation's name")
    expires_at: datetime
    classifications: dict[str, str]


class LinkConfirmation(BaseModel):
    alarm_id: int = Field(ge=1, le=2**31 - 1, description="the alarm the page shows")
    classification: Classification
    note: Displayable = Field("", max_length=500)


def confirm_router(
    sessions: async_sessionmaker,
    site: Site,
    settings: Settings,
    profiles: dict[str, DeviceProfile],
    static_dir: Path,
) -> APIRouter:
    router = APIRouter(tags=["confirmation"])
    names = {i.id: i.name for i in site.institutions}
    links = ConfirmLinks.from_settings(settings)
    budget = escalation_budget(site.escalation, profiles)
    models = model_names(profiles)
    rules = {(d.id, r.name): r for d in site.devices for r in profiles[d.profile].alarms}
    titles = {d.id: f"{profiles[d.profile].title_zh}（{d.id}）" for d in site.devices}
    maintenance_deadline = timedelta(hours=settings.iot_hazard_deadline_hours)
    default_webhook = settings.wecom_webhook_url or ""

    def named(alarm: Alarm) -> dict[str, Any]:
        return {**row_columns(alarm), "institution_name": names.get(alarm.institution_id, "")}

    @router.get("/api/alarms/statistics", response_model=AlarmStatisticsOut)
    async def alarm_statistics(
        user: CurrentUser,
        by: AlarmGroupBy = Query(description="institution | township | model | rule"),
        institution_id: QueryText | None = None,
        since: EnteredDate | None = Query(None, description="raised at or after (ISO 8601)"),
        until: EnteredDate | None = Query(None, description="raised before (ISO 8601)"),
    ) -> dict[str, Any]:
        """Alarms, confirmed, false-alarm rate, time to confirm and the share confirmed within
        the escalation time, per group (alerts.alarm_stats says how each is computed)."""
        scope = own_institution(user, institution_id)
        async with sessions() as session:
            rows = await alarm_rows(session, scope, since, until)
        return {
            **summarise(rows, by, budget, utc_now(), models),
            "since": since,
            "until": until,
        }

    @router.get("/c/{token}", include_in_schema=False)
    async def confirm_page(token: Token) -> FileResponse:
        """The mobile page; it reads the token from its address and asks the API below."""
        return FileResponse(static_dir / "confirm.html", headers={"Cache-Control": "no-store"})

    async def linked(session: AsyncSession, token: str) -> tuple[Notice, Alarm]:
        try:
            notice = await session.get(Notice, links.notice_id(token))
        except LinkRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        alarm = await session.get(Alarm, notice.alarm_id) if notice and notice.alarm_id else None
        if notice is None or alarm is None:
            raise HTTPException(404, "链接无效：找不到对应的报警通知。")
        return notice, alarm

    @router.get("/api/confirm/{token}", response_model=LinkedAlarmOut)
    async def linked_alarm(token: Token) -> dict[str, Any]:
        """The alarm a one-tap link was sent for (no login: the signed token is the right)."""
        async with sessions() as session:
            notice, alarm = await linked(session, token)
            device = await session.get(Device, alarm.device_id) if alarm.device_id else None
        rule = rules.get((alarm.device_id or "", alarm.rule))
        return {
            "alarm": {
                **row_columns(alarm),
                "institution_name": names.get(alarm.institution_id, ""),
            },
            "location": device.location if device else f"网关 {alarm.gateway_id}",
            "device": titles.get(alarm.device_id or "", "物联网网关"),
            "readings": [
                {"field": k, "value": v}
                for k, v in (device.last_readings if device else {}).items()
            ],
            "flags": device.last_flags if device else {},
            "last_seen": device.last_seen if device else None,
            "advice": rule.advice_zh if rule else "",
            "person": recipient_name(site, notice.institution_id, notice.target, default_webhook),
            "expires_at": notice.created_at + links.max_age,
            "classifications": {c.value: CLASSIFICATION_ZH[c] for c in Classification},
        }

    @router.post("/api/confirm/{token}", response_model=AlarmOut)
    async def confirm_by_link(token: Token, request: LinkConfirmation) -> dict[str, Any]:
        """Confirm the link's alarm with a classification, audited with the name of the
        person the link was sent to."""
        async with sessions.begin() as session:
            notice, alarm = await linked(session, token)
            if alarm.id != request.alarm_id:
                raise HTTPException(403, OTHER_ALARM_ZH)
            if alarm.acknowledged_at is not None:
                raise HTTPException(409, f"该报警已由 {alarm.acknowledged_by} 确认，无需重复确认。")
            person = recipient_name(site, notice.institution_id, notice.target, default_webhook)
            try:
                alarm = await confirmation.acknowledge(
                    session,
                    alarm.id,
                    f"{person}，通知#{notice.id}"[:64],
                    request.classification,
                    request.note,
                    maintenance_deadline,
                )
            except AlarmTransitionError:
                raise HTTPException(409, "该报警已关闭，无需确认。") from None
            return named(alarm)

    return router
