"""The web app: the JSON API (browser, tests, integrators) and the bureau's console pages.

Every data route is guarded by ``firewatch.web.auth``: a login token, a role, and duty staff
scoped to their own institution.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as UrlPath
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import TypeAdapter
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts import confirmation, ledger, lifecycle
from alerts.alarm_stats import confirmation_reports, escalation_budget, model_names
from alerts.confirm_links import ConfirmLinks
from alerts.ledger import TRANSITIONS, LedgerError, NewEntry
from firewatch import __version__
from firewatch.contract import ID_PATTERN, utc_now
from firewatch.db import Alarm, DeadLetter, Device, Hazard, Institution, Notice
from firewatch.hub import ChangeHub
from firewatch.profiles import load_profiles
from firewatch.settings import Settings
from firewatch.site import Site
from firewatch.web import auth, pages, push
from firewatch.web.auth import (
    ACKNOWLEDGERS,
    FILING_SOURCES,
    HAZARD_ACTIONS,
    OPERATORS,
    CurrentUser,
    Principal,
    require_roles,
    scope,
)
from firewatch.web.confirm_routes import confirm_router
from firewatch.web.ledger_routes import ledger_router
from firewatch.web.mode_routes import mode_router
from firewatch.web.schemas import (
    Acknowledgement,
    AlarmEventOut,
    AlarmOut,
    Closing,
    DeviceOut,
    HazardEventOut,
    HazardFiling,
    HazardOut,
    HazardTransitionRequest,
    HistoryPointOut,
    InstitutionOut,
    NoticeOut,
    QueryText,
    ScenarioRequest,
    row_columns,
)
from firewatch.web.snapshot import Scope, Snapshot
from ingest.store import TimeSeriesStore

#: an alarm or ledger entry number: PostgreSQL's INTEGER ids are 32-bit, and a larger number
#: would fail in the database driver (a 500) instead of being refused (422)
RowId = Annotated[int, UrlPath(ge=1, le=2**31 - 1)]
#: a device id in a path: what the site file allows, so that no NUL reaches PostgreSQL (a 500)
DeviceId = Annotated[str, UrlPath(pattern=ID_PATTERN)]

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
    settings: Settings = field(default_factory=Settings)  # secret key, token life, map tiles
    metrics: CollectorRegistry | None = None  # served at /metrics for Prometheus
    #: awaited before /metrics is served: `firewatch up` reads its children's counts afresh
    refresh_metrics: Callable[[], Awaitable[None]] | None = None
    # the live pages' changes: this app's own commits, and what a ChangeListener feeds it
    hub: ChangeHub = field(default_factory=ChangeHub)


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="Firewatch",
        version=__version__,
        description=(
            "智慧消防物联网监测 — devices, alarms and the hazard ledger (重大事故隐患台账)."
        ),
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    names: dict[str, str] = {i.id: i.name for i in ctx.site.institutions}
    profiles = load_profiles(ctx.settings.profiles_dir)  # rules' advice and categories
    app.state.auth = auth.AuthConfig.from_settings(ctx.sessions, ctx.settings)
    app.state.hub = hub = ctx.hub
    hub.watch(ctx.sessions)

    def with_name(columns: dict[str, Any]) -> dict[str, Any]:
        """A row's columns plus the name of its institution, which every list shows."""
        return {**columns, "institution_name": names.get(columns["institution_id"], "")}

    def named(row: Any) -> dict[str, Any]:
        return with_name(row_columns(row))

    app.include_router(auth.router)
    app.include_router(
        push.events_router(
            hub, {"device": DeviceOut, "alarm": AlarmOut, "hazard": HazardOut}, with_name
        )
    )
    app.include_router(pages.console_router(STATIC_DIR, ctx.settings))
    app.include_router(
        ledger_router(
            ctx.sessions,
            ctx.site,
            confirmation_reports(
                escalation_budget(ctx.site.escalation, profiles), model_names(profiles)
            ),
        ),
        dependencies=[Depends(auth.current_user)],
    )
    app.include_router(mode_router(ctx.sessions, ctx.settings, named))
    app.include_router(confirm_router(ctx.sessions, ctx.site, ctx.settings, profiles, STATIC_DIR))
    links = ConfirmLinks.from_settings(ctx.settings)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(operator: Annotated[bool, Depends(auth.is_admin_or_scraper)]) -> Response:
        """For a logged-in admin, or Prometheus with FIREWATCH_METRICS_TOKEN as bearer token."""
        if not operator:
            raise HTTPException(
                detail="需要管理员登录或监控令牌 (admin login or metrics token)",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if ctx.metrics is None:
            raise HTTPException(404, "this app serves no metrics")
        if ctx.refresh_metrics is not None:
            await ctx.refresh_metrics()
        return Response(generate_latest(ctx.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/health")
    async def health(
        operator: Annotated[bool, Depends(auth.is_admin_or_scraper)],
    ) -> dict[str, Any]:
        """Anonymous readers (load balancers, container health checks) get the status only;
        an admin or the metrics token also gets what is wrong (errors name hosts, versions)."""
        try:
            async with ctx.sessions() as session:
                await session.execute(text("SELECT 1"))
            database = "ok"
        except Exception as exc:  # report, don't fail: health must answer when parts are down
            database = f"error: {exc}"
        services = {name: status() for name, status in ctx.statuses.items()}
        reasons = [p for name, s in services.items() for p in _problems(name, s)]
        if database != "ok":
            reasons.insert(0, f"database: {database}")
        status = "degraded" if reasons else "ok"
        if not operator:
            return {"status": status}
        return {
            "status": status,
            "reasons": reasons,
            "version": __version__,
            "database": database,
            "timeseries": ctx.timeseries.name,
            "services": services,
        }

    async def institution_rows(institution_id: Scope) -> bytes:
        query = select(*Institution.__table__.columns).order_by(Institution.id)
        if institution_id is not None:
            query = query.where(Institution.id == institution_id)
        async with ctx.sessions() as session:
            rows = (await session.execute(query)).mappings()
            return _INSTITUTIONS.dump_json(_INSTITUTIONS.validate_python([dict(r) for r in rows]))

    async def device_rows(institution_id: Scope) -> bytes:
        """Read as plain rows and serialised in one go, not as ORM objects that FastAPI would
        validate a second time."""
        query = select(*Device.__table__.columns).order_by(Device.id)
        if institution_id is not None:
            query = query.where(Device.institution_id == institution_id)
        async with ctx.sessions() as session:
            rows = (await session.execute(query)).mappings()
            return _DEVICES.dump_json(_DEVICES.validate_python([with_name(dict(r)) for r in rows]))

    max_age_s = ctx.settings.web_snapshot_max_age_s
    listed_institutions = Snapshot(institution_rows, (), max_age_s)
    listed_devices = Snapshot(device_rows, ("device",), max_age_s)
    listed_institutions.follow(hub)
    listed_devices.follow(hub)

    @app.get("/api/institutions", response_model=list[InstitutionOut])
    async def institutions(user: CurrentUser, request: Request) -> Response:
        """The institutions the user may see (ready bytes: firewatch.web.snapshot)."""
        return await listed_institutions.response(request, user.institution_id)

    @app.get("/api/devices", response_model=list[DeviceOut])
    async def devices(user: CurrentUser, request: Request) -> Response:
        """Every device the user may see.  The map asks for all of them at once (2,000 in a
        county), from every console: ready bytes per scope, rebuilt when a device's state
        changes (firewatch.web.snapshot), with an ETag for a conditional request."""
        return await listed_devices.response(request, user.institution_id)

    async def visible_device(user: Principal, device_id: str) -> Device:
        async with ctx.sessions() as session:
            device = await session.get(Device, device_id)
        if device is None or not user.sees(device.institution_id):
            raise HTTPException(404, f"no device {device_id!r}")
        return device

    @app.get("/api/devices/{device_id}", response_model=DeviceOut)
    async def device(device_id: DeviceId, user: CurrentUser) -> Any:
        return named(await visible_device(user, device_id))

    @app.get("/api/devices/{device_id}/history", response_model=list[HistoryPointOut])
    async def history(
        device_id: DeviceId,
        user: CurrentUser,
        field: QueryText = Query(description="reading name, e.g. residual_current"),
        hours: float = Query(24, gt=0, le=24 * 31),
        every_s: float = Query(300, ge=1, le=24 * 31 * 3600),
    ) -> Any:
        await visible_device(user, device_id)
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
        user: CurrentUser,
        limit: int = Query(100, ge=1, le=1000),
        status: list[QueryText] | None = Query(
            None, description="active | acknowledged | cleared | closed (repeat for several)"
        ),
        device_id: QueryText | None = None,
    ) -> Any:
        query = scope(
            select(Alarm).order_by(Alarm.id.desc()).limit(limit), user, Alarm.institution_id
        )
        if status:
            query = query.where(Alarm.status.in_(status))
        if device_id:
            query = query.where(Alarm.device_id == device_id)
        async with ctx.sessions() as session:
            rows = await session.scalars(query)
            return [named(a) for a in rows]

    maintenance_deadline = timedelta(hours=ctx.settings.iot_hazard_deadline_hours)

    @app.post("/api/alarms/{alarm_id}/acknowledge", response_model=AlarmOut)
    async def acknowledge(
        alarm_id: RowId,
        ack: Acknowledgement,
        user: Annotated[Principal, Depends(require_roles(*ACKNOWLEDGERS))],
    ) -> Any:
        """Confirm an alarm with what it was; the ledger follows (alerts.confirmation)."""
        step = partial(
            confirmation.acknowledge,
            classification=ack.classification,
            note=ack.note,
            maintenance_deadline=maintenance_deadline,
        )
        return await alarm_step(step, alarm_id, user)

    @app.post("/api/alarms/{alarm_id}/close", response_model=AlarmOut)
    async def close_alarm(
        alarm_id: RowId,
        closing: Closing,
        user: Annotated[Principal, Depends(require_roles(*ACKNOWLEDGERS))],
    ) -> Any:
        """A cleared alarm is closed by a person, with a note on what was found."""
        step = partial(
            confirmation.close,
            classification=closing.classification,
            note=closing.note,
            maintenance_deadline=maintenance_deadline,
        )
        return await alarm_step(step, alarm_id, user)

    async def alarm_step(step: Callable[..., Any], alarm_id: int, user: Principal) -> Any:
        async with ctx.sessions.begin() as session:
            alarm = await session.get(Alarm, alarm_id)
            if alarm is None or not user.sees(alarm.institution_id):
                raise HTTPException(404, f"no alarm {alarm_id}")
            try:
                alarm = await step(session, alarm_id, user.username)
            except lifecycle.AlarmTransitionError as exc:
                raise HTTPException(409, str(exc)) from None
            return named(alarm)

    @app.get("/api/alarms/{alarm_id}/events", response_model=list[AlarmEventOut])
    async def alarm_events(alarm_id: RowId, user: CurrentUser) -> Any:
        async with ctx.sessions() as session:
            alarm = await session.get(Alarm, alarm_id)
            if alarm is None or not user.sees(alarm.institution_id):
                raise HTTPException(404, f"no alarm {alarm_id}")
            return await lifecycle.history(session, alarm_id)

    @app.get("/api/hazards", response_model=list[HazardOut])
    async def hazards(
        user: CurrentUser,
        limit: int = Query(100, ge=1, le=1000),
        status: list[QueryText] | None = Query(None, description="repeat for several"),
        category: QueryText | None = None,
        source: QueryText | None = None,
        township: QueryText | None = None,
        institution_id: QueryText | None = None,
    ) -> Any:
        query = scope(
            select(Hazard).order_by(Hazard.id.desc()).limit(limit), user, Hazard.institution_id
        )
        if status:
            query = query.where(Hazard.status.in_(status))
        for column, value in (
            (Hazard.category, category),
            (Hazard.source, source),
            (Hazard.township, township),
            (Hazard.institution_id, institution_id),
        ):
            if value:
                query = query.where(column == value)
        async with ctx.sessions() as session:
            rows = await session.scalars(query)
            return [named(h) for h in rows]

    @app.post("/api/hazards", response_model=HazardOut, status_code=201)
    async def file_hazard(filing: HazardFiling, user: CurrentUser) -> Any:
        if filing.source not in FILING_SOURCES[user.role]:
            raise HTTPException(403, f"{user.role} may not file {filing.source} entries")
        if not user.sees(filing.institution_id):
            raise HTTPException(422, f"no institution {filing.institution_id!r}")
        entry = NewEntry(**filing.model_dump())
        async with ctx.sessions.begin() as session:
            try:
                hazard = await ledger.file_entry(session, entry, user.username)
            except LedgerError as exc:
                raise HTTPException(422, str(exc)) from None
            return named(hazard)

    @app.post("/api/hazards/{hazard_id}/transitions", response_model=HazardOut)
    async def move_hazard(
        hazard_id: RowId, request: HazardTransitionRequest, user: CurrentUser
    ) -> Any:
        if request.action in TRANSITIONS and request.action not in HAZARD_ACTIONS[user.role]:
            raise HTTPException(403, f"{user.role} may not {request.action!r} a ledger entry")
        async with ctx.sessions.begin() as session:
            entry = await session.get(Hazard, hazard_id)
            if entry is None or not user.sees(entry.institution_id):
                raise HTTPException(404, f"no hazard entry {hazard_id}")
            try:
                hazard = await ledger.transition(
                    session, hazard_id, request.action, user.username, request.note
                )
            except LedgerError as exc:
                raise HTTPException(409, str(exc)) from None
            return named(hazard)

    @app.get("/api/hazards/{hazard_id}/events", response_model=list[HazardEventOut])
    async def hazard_events(hazard_id: RowId, user: CurrentUser) -> Any:
        async with ctx.sessions() as session:
            entry = await session.get(Hazard, hazard_id)
            if entry is None or not user.sees(entry.institution_id):
                raise HTTPException(404, f"no hazard entry {hazard_id}")
            return await ledger.history(session, hazard_id)

    @app.get("/api/notices", response_model=list[NoticeOut])
    async def notices(user: CurrentUser, limit: int = Query(100, ge=1, le=1000)) -> Any:
        """``link``: an alarm notice's one-tap confirmation link, as sent; shown to those who
        may acknowledge (it confirms without a login)."""
        query = scope(
            select(Notice).order_by(Notice.id.desc()).limit(limit), user, Notice.institution_id
        )
        async with ctx.sessions() as session:
            rows = list(await session.scalars(query))
        shown = user.role in ACKNOWLEDGERS
        return [
            {
                **row_columns(n),
                "link": links.url(n.id, n.created_at) if shown and n.alarm_id else None,
            }
            for n in rows
        ]

    @app.get("/api/dead-letters", dependencies=[Depends(require_roles(*OPERATORS))])
    async def dead_letters(
        limit: int = Query(100, ge=1, le=1000),
        before: int | None = Query(
            None, ge=1, le=2**31 - 1, description="Letters older than this id: the next page."
        ),
    ) -> dict[str, Any]:
        """The newest dead letters first, a page at a time: ``next_before`` is the ``before``
        of the next page (none after the last), ``total`` counts them all."""
        query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if before is not None:
            query = query.where(DeadLetter.id < before)
        async with ctx.sessions() as session:
            rows = list(await session.scalars(query))
            total = await session.scalar(select(func.count()).select_from(DeadLetter))
        return {
            "total": total,
            "next_before": rows[-1].id if len(rows) == limit else None,
            "items": [
                {
                    "id": d.id,
                    "consumer": d.consumer,
                    "topic": d.topic,
                    "reason": d.reason,
                    "reason_class": d.reason_class,
                    "received_at": d.received_at,
                    "payload_size": d.payload_size,
                    "payload": d.payload.decode("utf-8", errors="replace"),
                }
                for d in rows
            ],
        }

    outline_bytes: list[bytes] = []  # read once: the site file's outline changes with a restart

    @app.get("/api/map/outline")
    async def outline(_user: CurrentUser) -> Response:
        if not outline_bytes:
            if ctx.site.county.outline:
                path = ctx.site_dir / ctx.site.county.outline
                document = json.loads(path.read_text(encoding="utf-8"))
            else:
                document = {
                    "type": "FeatureCollection",
                    "features": [],
                    "properties": {"name": ctx.site.county.name},
                }
            outline_bytes.append(json.dumps(document, ensure_ascii=False).encode())
        return Response(outline_bytes[0], media_type="application/json")

    @app.get("/api/simulator/devices", dependencies=[Depends(require_roles(*OPERATORS))])
    async def simulated_devices() -> list[dict[str, Any]]:
        return _simulators(ctx).status()

    @app.post(
        "/api/simulator/devices/{device_id}/scenario",
        dependencies=[Depends(require_roles(*OPERATORS))],
    )
    async def trigger(device_id: DeviceId, request: ScenarioRequest) -> dict[str, str]:
        simulators = _simulators(ctx)
        try:
            valid = simulators.scenarios(device_id)
        except KeyError:
            raise HTTPException(404, f"no simulated device {device_id!r}") from None
        if request.scenario not in valid:
            raise HTTPException(
                422,
                f"device {device_id} has no scenario {request.scenario!r}; "
                f"valid: {', '.join(valid)}",
            )
        await simulators.trigger(device_id, request.scenario)
        return {"device_id": device_id, "scenario": request.scenario}

    return app


def _problems(name: str, status: dict[str, Any]) -> list[str]:
    """Why the service ``name`` cannot do its whole job, from what its status says."""
    problems = list(status.get("problems", []))  # the supervisor's restarting tasks
    if status.get("degraded"):  # e.g. monitoring interrupted
        problems.append(f"{name}: {status['degraded']}")
    if status.get("broker_connected") is False:
        problems.append(f"{name}: broker unreachable, not connected")
    if status.get("store_available") is False:
        problems.append(f"{name}: time-series store unavailable (spooling)")
    return problems


def _simulators(ctx: AppContext) -> Simulators:
    if ctx.simulators is None:
        raise HTTPException(409, "this stack runs no simulators (started with --no-simulate)")
    return ctx.simulators


_DEVICES = TypeAdapter(list[DeviceOut])
_INSTITUTIONS = TypeAdapter(list[InstitutionOut])
