"""Shielding and test mode over HTTP: start one, end it early, read a device's audit log.

A router of its own, which the app includes.  Who may: an admin, an institution's duty staff for
their own institution's devices (another's answers 404, as every row they may not see), a tester
test mode only (``auth.DEVICE_MODES``).  The time is bounded by the settings
(``device_mode_max_hours``); the reason is stated.  Each start and cancel is logged with the
account name (``device_mode_events``); the end at its time is the alert service's
(``alerts.mode_ends``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi import Path as UrlPath
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firewatch import device_modes
from firewatch.contract import ID_PATTERN, utc_now
from firewatch.db import Device, DeviceModeEvent
from firewatch.device_modes import MODE_ZH, Mode
from firewatch.settings import Settings
from firewatch.web.auth import DEVICE_MODES, CurrentUser, Principal
from firewatch.web.schemas import DeviceModeEventOut, DeviceModeRequest, DeviceOut

DeviceId = Annotated[str, UrlPath(pattern=ID_PATTERN)]


def mode_router(
    sessions: async_sessionmaker,
    settings: Settings,
    named: Callable[[Any], dict[str, Any]],
) -> APIRouter:
    router = APIRouter(tags=["device modes"])
    longest = timedelta(hours=settings.device_mode_max_hours)

    async def visible(session: AsyncSession, user: Principal, device_id: str) -> Device:
        device = await session.get(Device, device_id)
        if device is None or not user.sees(device.institution_id):
            raise HTTPException(404, f"no device {device_id!r}")
        return device

    def may(user: Principal, mode: Mode) -> None:
        if mode not in DEVICE_MODES[user.role]:
            raise HTTPException(403, f"{user.role} may not set a device to {MODE_ZH[mode]}")

    @router.post("/api/devices/{device_id}/mode", response_model=DeviceOut)
    async def start(device_id: DeviceId, request: DeviceModeRequest, user: CurrentUser) -> Any:
        """Shield the device or put it in test mode for ``minutes``: its alarms are recorded,
        marked, and told to nobody; one in force already is replaced (logged as a start)."""
        may(user, request.mode)
        if timedelta(minutes=request.minutes) > longest:
            raise HTTPException(
                422, f"minutes: at most {settings.device_mode_max_hours:g} hours at a time"
            )
        async with sessions.begin() as session:
            device = await visible(session, user, device_id)
            held = device_modes.holding(device, utc_now())
            if held is not None:
                may(user, held)  # a tester does not turn a shielding into a test
            until = utc_now() + timedelta(minutes=request.minutes)
            device_modes.start(
                session, device, request.mode, until, request.reason, request.note, user.username
            )
            return named(device)

    @router.delete("/api/devices/{device_id}/mode", response_model=DeviceOut)
    async def cancel(device_id: DeviceId, user: CurrentUser) -> Any:
        """End the device's mode now; an alarm it held that is still open is then told."""
        async with sessions.begin() as session:
            device = await visible(session, user, device_id)
            held = device_modes.holding(device, utc_now())
            if held is None:
                raise HTTPException(409, f"device {device_id} is neither shielded nor in test")
            may(user, held)
            device_modes.finish(session, device, "cancel", user.username)
            return named(device)

    @router.get("/api/devices/{device_id}/mode-events", response_model=list[DeviceModeEventOut])
    async def events(device_id: DeviceId, user: CurrentUser) -> Any:
        """The device's audit log of shielding and test mode, newest first."""
        async with sessions() as session:
            await visible(session, user, device_id)
            query = (
                select(DeviceModeEvent)
                .where(DeviceModeEvent.device_id == device_id)
                .order_by(DeviceModeEvent.id.desc())
                .limit(200)
            )
            return list(await session.scalars(query))

    return router
