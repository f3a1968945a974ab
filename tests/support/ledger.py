"""A demo county's relational store for ledger and escalation tests, and the steps people take.

Alarms are stored as the alert service stores them (its own tests cover raising them from
readings); ledger entries are filed and moved with the ledger's own functions.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts import ledger
from alerts.ledger import NewEntry, Source
from firewatch import db
from firewatch.contract import utc_now
from firewatch.profiles import DeviceProfile, HazardCategory
from firewatch.site import Site
from tests.support.alerts import PROFILES, SITE, database, writer


@dataclass
class County:
    database_url: str
    site: Site
    profiles: dict[str, DeviceProfile]
    sessions: async_sessionmaker
    writer: db.Writer  # the alert side's, which the alert service and notifier share
    ids: dict[str, int] = field(default_factory=dict)  # a test's entries, by a name it gives

    async def raise_alarm(self, device_id: str, rule: str, at: datetime) -> int:
        device = next(d for d in self.site.devices if d.id == device_id)
        alarm_rule = next(r for r in self.profiles[device.profile].alarms if r.name == rule)
        async with self.sessions.begin() as session:
            alarm = db.Alarm(
                device_id=device_id,
                institution_id=device.institution,
                rule=rule,
                title=alarm_rule.title_zh,
                severity=alarm_rule.severity.value,
                status="active",
                raised_at=at,
            )
            session.add(alarm)
            await session.flush()
            return alarm.id

    async def set_severity(self, alarm_id: int, severity: str) -> None:
        """Change a stored alarm's severity as a hand-made fix or another version might."""
        async with self.sessions.begin() as session:
            (await session.get_one(db.Alarm, alarm_id)).severity = severity

    async def acknowledge(self, alarm_id: int, by: str = "值班员 李明") -> None:
        """What the console's acknowledge does to the alarm."""
        async with self.sessions.begin() as session:
            alarm = await session.get_one(db.Alarm, alarm_id)
            alarm.acknowledged_at, alarm.acknowledged_by = utc_now(), by
            alarm.status = "acknowledged"

    async def file(
        self,
        deadline: datetime,
        *,
        institution_id: str = "dingqiao-eldercare",
        category: HazardCategory = HazardCategory.EVACUATION,
        source: Source = Source.INSPECTION,
        description: str = "二楼安全出口被杂物堵塞",
        by: str = "县民政局 张科长",
    ) -> int:
        entry = NewEntry(
            institution_id=institution_id,
            category=category,
            source=source,
            description=description,
            responsible_person="赵强",
            responsible_phone="13800000202",
            deadline=deadline,
        )
        async with self.sessions.begin() as session:
            return (await ledger.file_entry(session, entry, by)).id

    async def set_deadline(self, entry_id: int, deadline: datetime) -> None:
        """A deadline as it may already be stored (by duty staff, before the forms checked
        dates, or by hand): whatever the ledger's forms would now accept."""
        async with self.sessions.begin() as session:
            (await session.get_one(db.Hazard, entry_id)).deadline = deadline

    async def move(
        self, entry_id: int, *actions: str, by: str = "县民政局 张科长", note: str = ""
    ) -> None:
        for action in actions:
            async with self.sessions.begin() as session:
                await ledger.transition(session, entry_id, action, by, note)

    async def rows(self, model: type, **where: object) -> list:
        async with self.sessions() as session:
            return list(await session.scalars(select(model).filter_by(**where).order_by(model.id)))


@asynccontextmanager
async def demo_county(database_url: str):
    async with database(database_url) as sessions:
        yield County(database_url, SITE, PROFILES, sessions, writer(sessions))
