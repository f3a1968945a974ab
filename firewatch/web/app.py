"""The web app: the JSON API (browser, tests, integrators) and the bureau's live map page."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts import ledger
from alerts.ledger import TRANSITIONS, LedgerError, NewEntry, Source
from firewatch import __version__
from firewatch.contract import utc_now
from firewatch.db import Alarm, DeadLetter, Device, Hazard, Institution, Notice
from firewatch.profiles import HazardCategory
from firewatch.site import Site
from ingest.store import TimeSeriesStore

STATIC_DIR = Path(__file__).resolve().parent / "static"


class Simulators(Protocol):
    def scenarios(self, device_id: str) -> list[str]: ...

    async def trigger(self, device_id: str, scenario: str) -> None: ...

    def status(self) -> list[dict[str, Any]]: ...


@dataclass
class AppContext:
    """What the web app reads from: the stores, and the status of the services beside it."""

    sessions: async_sessionmaker
    timeseries: TimeSeriesStore
    site: Site
    site_dir: Path
    statuses: dict[str, Callable[[], dict[str, Any]]]
    simulators: Simulators | None = None


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
    device_id: str
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
    by: str = Field(min_length=1, max_length=64, description="Who acknowledges (name).")
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
    responsible_unit: str | None = None
    filed_by: str = Field(min_length=1, max_length=64)


class HazardTransitionRequest(BaseModel):
    action: str = Field(description=", ".join(TRANSITIONS))
    by: str = Field(min_length=1, max_length=64)
    note: str = Field("", max_length=2000)


class HazardEventOut(BaseModel):
    id: int
    action: str
    actor: str
    note: str
    from_status: str | None
    to_status: str
    at: datetime


class ScenarioRequest(BaseModel):
    scenario: str = Field(min_length=1, max_length=64)


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="Firewatch",
        version=__version__,
        description="智慧消防物联网监测 — devices, alarms and the hazard ledger (重大事故隐患台账).",
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    names: dict[str, str] = {i.id: i.name for i in ctx.site.institutions}

    def named(row: Any) -> dict[str, Any]:
        """A row's columns plus the name of its institution, which every list shows."""
        return {**_columns(row), "institution_name": names.get(row.institution_id, "")}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        try:
            async with ctx.sessions() as session:
                await session.execute(text("SELECT 1"))
            database = "ok"
        except Exception as exc:  # report, don't fail: health must answer when parts are down
            database = f"error: {exc}"
        services = {name: status() for name, status in ctx.statuses.items()}
        ok = database == "ok"
        return {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "database": database,
            "timeseries": ctx.timeseries.name,
            "services": services,
        }

    @app.get("/api/institutions", response_model=list[InstitutionOut])
    async def institutions() -> Any:
        async with ctx.sessions() as session:
            return list(await session.scalars(select(Institution).order_by(Institution.id)))

    @app.get("/api/devices", response_model=list[DeviceOut])
    async def devices() -> Any:
        async with ctx.sessions() as session:
            rows = await session.scalars(select(Device).order_by(Device.id))
            return [
                named(d) for d in rows
            ]

    @app.get("/api/devices/{device_id}/history", response_model=list[HistoryPointOut])
    async def history(
        device_id: str,
        field: str = Query(description="reading name, e.g. residual_current"),
        hours: float = Query(24, gt=0, le=24 * 31),
        every_s: float = Query(300, ge=1),
    ) -> Any:
        end = utc_now()
        try:
            points = await ctx.timeseries.history(
                device_id, field, end - timedelta(hours=hours), end, every_s
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return [vars(p) for p in points]

    @app.get("/api/alarms", response_model=list[AlarmOut])
    async def alarms(
        limit: int = Query(100, ge=1, le=1000),
        status: str | None = Query(None, description="active | acknowledged | cleared | closed"),
    ) -> Any:
        query = select(Alarm).order_by(Alarm.id.desc()).limit(limit)
        if status:
            query = query.where(Alarm.status == status)
        async with ctx.sessions() as session:
            rows = await session.scalars(query)
            return [named(a)
                    for a in rows]

    @app.post("/api/alarms/{alarm_id}/acknowledge", response_model=AlarmOut)
    async def acknowledge(alarm_id: int, ack: Acknowledgement) -> Any:
        async with ctx.sessions.begin() as session:
            alarm = await session.get(Alarm, alarm_id)
            if alarm is None:
                raise HTTPException(404, f"no alarm {alarm_id}")
            if alarm.acknowledged_at is not None:
                raise HTTPException(409, f"alarm {alarm_id} was acknowledged by "
                                         f"{alarm.acknowledged_by}")
            alarm.acknowledged_at = utc_now()
            alarm.acknowledged_by = ack.by
            alarm.ack_note = ack.note
            if alarm.status == "active":
                alarm.status = "acknowledged"
            return named(alarm)

    @app.get("/api/hazards", response_model=list[HazardOut])
    async def hazards(limit: int = Query(100, ge=1, le=1000)) -> Any:
        async with ctx.sessions() as session:
            rows = await session.scalars(select(Hazard).order_by(Hazard.id.desc()).limit(limit))
            return [named(h)
                    for h in rows]

    @app.post("/api/hazards", response_model=HazardOut, status_code=201)
    async def file_hazard(filing: HazardFiling) -> Any:
        entry = NewEntry(**filing.model_dump(exclude={"filed_by"}))
        async with ctx.sessions.begin() as session:
            try:
                hazard = await ledger.file_entry(session, entry, filing.filed_by)
            except LedgerError as exc:
                raise HTTPException(422, str(exc)) from None
            return named(hazard)

    @app.post("/api/hazards/{hazard_id}/transitions", response_model=HazardOut)
    async def move_hazard(hazard_id: int, request: HazardTransitionRequest) -> Any:
        async with ctx.sessions.begin() as session:
            try:
                hazard = await ledger.transition(
                    session, hazard_id, request.action, request.by, request.note)
            except LedgerError as exc:
                raise HTTPException(409, str(exc)) from None
            return named(hazard)

    @app.get("/api/hazards/{hazard_id}/events", response_model=list[HazardEventOut])
    async def hazard_events(hazard_id: int) -> Any:
        async with ctx.sessions() as session:
            if await session.get(Hazard, hazard_id) is None:
                raise HTTPException(404, f"no hazard entry {hazard_id}")
            return await ledger.history(session, hazard_id)

    @app.get("/api/notices", response_model=list[NoticeOut])
    async def notices(limit: int = Query(100, ge=1, le=1000)) -> Any:
        async with ctx.sessions() as session:
            return list(await session.scalars(
                select(Notice).order_by(Notice.id.desc()).limit(limit)))

    @app.get("/api/dead-letters")
    async def dead_letters(limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        async with ctx.sessions() as session:
            rows = await session.scalars(
                select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit))
            return [
                {"id": d.id, "consumer": d.consumer, "topic": d.topic, "reason": d.reason,
                 "received_at": d.received_at,
                 "payload": d.payload.decode("utf-8", errors="replace")}
                for d in rows
            ]

    @app.get("/api/map/outline")
    async def outline() -> dict[str, Any]:
        if not ctx.site.county.outline:
            return {"type": "FeatureCollection", "features": [],
                    "properties": {"name": ctx.site.county.name}}
        return json.loads((ctx.site_dir / ctx.site.county.outline).read_text(encoding="utf-8"))

    @app.get("/api/simulator/devices")
    async def simulated_devices() -> list[dict[str, Any]]:
        return _simulators(ctx).status()

    @app.post("/api/simulator/devices/{device_id}/scenario")
    async def trigger(device_id: str, request: ScenarioRequest) -> dict[str, str]:
        simulators = _simulators(ctx)
        try:
            valid = simulators.scenarios(device_id)
        except KeyError:
            raise HTTPException(404, f"no simulated device {device_id!r}") from None
        if request.scenario not in valid:
            raise HTTPException(
                422, f"device {device_id} has no scenario {request.scenario!r}; "
                     f"valid: {', '.join(valid)}")
        await simulators.trigger(device_id, request.scenario)
        return {"device_id": device_id, "scenario": request.scenario}

    return app


def _simulators(ctx: AppContext) -> Simulators:
    if ctx.simulators is None:
        raise HTTPException(409, "this stack runs no simulators (started with --no-simulate)")
    return ctx.simulators


def _columns(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
