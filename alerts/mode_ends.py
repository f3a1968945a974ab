"""Ends shielding and test modes, and tells the alarms they held that are still open.

A mode is over at its ``mode_until`` wherever it is read (firewatch.device_modes); this sweep,
a few seconds apart in the alert service, makes that durable: it writes the device back to
normal with an ``end`` in the audit log, and an alarm raised under a mode that is now over
(ended by time, or cancelled early from the console) and still open is told as if raised now —
a real fire during maintenance that still burns when the maintenance ends must not stay silent.

It decides from the rows, not from events: whatever order a raise and a cancel commit in (two
processes, PostgreSQL's read committed), the next sweep finds a held alarm open on a device no
longer held and tells it.  Each device and alarm is its own transaction on the alert service's
writer: one that raises is counted, logged once and looked at again next time, and the others
go on.  Only the devices of the service's own gateways are swept, so that two replicas never
tell one alarm twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from firewatch.contract import utc_now
from firewatch.db import ACTIVE_ALARM, Alarm, Device
from firewatch.device_modes import SYSTEM, Mode, finish, holding, in_force

if TYPE_CHECKING:
    from alerts.service import AlertService

log = logging.getLogger(__name__)


class ModeEnds:
    def __init__(
        self, service: AlertService, owns_device: Callable[[str], bool], every_s: float
    ) -> None:
        self.service = service
        #: whether a device is of the gateways the service reads now (they move between
        #: replicas)
        self.owns_device = owns_device
        self.every_s = every_s
        self.ended = 0
        self.released = 0
        #: devices and alarms whose step raised, by error class (logged once per new reason)
        self.errors: Counter[str] = Counter()
        self._set_aside: dict[str, str] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.sweep(utc_now())

    async def sweep(self, now: datetime) -> None:
        """End the modes over at ``now`` and tell the alarms they held that are still open.

        The few devices in a mode and alarms held are read, then this replica's kept: a
        county's every device id in the query, twice every two seconds, cost the alert
        service more than the sweep's own work."""
        async with self.service.sessions() as session:
            expired = list(
                await session.scalars(
                    select(Device.id).where(
                        Device.mode != Mode.NORMAL.value, Device.mode_until <= now
                    )
                )
            )
            held = list(
                await session.execute(
                    select(Alarm.id, Alarm.device_id, Device.mode, Device.mode_until)
                    .join(Device, Device.id == Alarm.device_id)
                    .where(
                        Alarm.mode.is_not(None),
                        Alarm.released_at.is_(None),
                        Alarm.status.in_(ACTIVE_ALARM),
                    )
                )
            )
        for device_id in filter(self.owns_device, expired):
            end = partial(self._end, device_id=device_id, now=now)
            await self._step(f"device:{device_id}", end)
        for alarm_id, device_id, mode, until in held:
            if self.owns_device(device_id) and in_force(mode, until, now) is None:
                release = partial(self._release, alarm_id=alarm_id, now=now)
                await self._step(f"alarm:{alarm_id}", release)

    async def _step(self, key: str, work: partial[bool]) -> None:
        try:
            done = await self.service.writer.run(work)
        except (OperationalError, InterfaceError):
            raise  # the database away: the task restarts, the next sweep tries all again
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self._set_aside.get(key) != reason:
                self.errors[type(exc).__name__] += 1
                log.error("device mode %s set aside (%s); the others go on", key, reason)
            self._set_aside[key] = reason
            return
        self._set_aside.pop(key, None)
        if done and key.startswith("alarm:"):
            self.released += 1
            self.service.notices_waiting.set()
        elif done:
            self.ended += 1

    @staticmethod
    def _end(session: Session, device_id: str, now: datetime) -> bool:
        device = session.get_one(Device, device_id)
        if device.mode == Mode.NORMAL.value or holding(device, now) is not None:
            return False  # cancelled, or started again, since the read
        finish(session, device, "end", SYSTEM)
        return True

    def _release(self, session: Session, alarm_id: int, now: datetime) -> bool:
        alarm = session.get_one(Alarm, alarm_id)
        assert alarm.device_id is not None  # held alarms are devices' alarms
        device = session.get_one(Device, alarm.device_id)
        if (
            alarm.released_at is not None
            or alarm.status not in ACTIVE_ALARM
            or holding(device, now) is not None
        ):
            return False
        self.service.book.release(session, alarm, device)
        return True
