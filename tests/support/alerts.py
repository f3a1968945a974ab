"""An alert service on a real database, and simulated devices feeding it as a gateway would.

:class:`Feed` runs a simulator device model (``simulators.device``: the profile's normal
values, noise and scenario ramps) on a virtual clock and hands its readings to the service
once a second, so scenarios that take minutes (a slow temperature rise) run in seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import count

from alerts.outbox import Outbox, Routing
from alerts.service import AlertService
from firewatch import db
from firewatch.contract import ReadingBatch
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import Site, load_site
from firewatch.stack import sync_site
from simulators.device import SimulatedDevice

WEBHOOK = "http://127.0.0.1:9/cgi-bin/webhook/send?key=k"
PROFILES = load_profiles()
SITE = load_site(SITES_DIR / "demo-county.yaml", PROFILES)
START = datetime(2026, 11, 22, 12, tzinfo=UTC)


def robot_outbox(webhook: str = WEBHOOK, storm_window_s: float = 0) -> Outbox:
    """Every demo institution's notices to one WeChat Work robot."""
    recipients = {i.id: {"wecom_robot": webhook} for i in SITE.institutions}
    return Outbox(
        Routing("wecom_robot", None, frozenset({"wecom_robot"}), recipients), storm_window_s
    )


#: a writer per database made by :func:`database`, closed with it
_writers: dict[int, db.Writer] = {}


def alert_service(
    sessions,
    outbox: Outbox,
    site: Site = SITE,
    broker: BrokerAddress = BrokerAddress("127.0.0.1", 1),
    silent_after: timedelta = timedelta(seconds=60),
) -> AlertService:
    """An alert service on a database from :func:`database` (sharing its writer); it
    consumes from ``broker`` when run."""
    return AlertService(
        site,
        PROFILES,
        sessions,
        broker,
        outbox=outbox,
        hazard_deadline=timedelta(hours=24),
        notices_waiting=asyncio.Event(),
        writer=_writers[id(sessions)],
        silent_after=silent_after,
    )


@asynccontextmanager
async def database(url: str, site: Site = SITE) -> AsyncIterator:
    """The site's (by default the demo's) institutions and devices in an empty database;
    yields a sessionmaker.  The alert services and notifiers on it share one writer (see
    :func:`writer`), as in a process of the alert side."""
    engine = db.create_engine(url)
    await db.create_schema(engine)
    sessions = db.sessionmaker(engine)
    await sync_site(sessions, site, PROFILES)
    try:
        async with db.Writer(sessions, "test-writer") as _writers[id(sessions)]:
            yield sessions
    finally:
        _writers.pop(id(sessions), None)
        await engine.dispose()


def writer(sessions) -> db.Writer:
    """The writer of a database from :func:`database`."""
    return _writers[id(sessions)]


class Feed:
    """One simulated device, read once a (virtual) second into ``service``."""

    seq = count(1)

    def __init__(self, service: AlertService, device_id: str) -> None:
        self.service = service
        device = next(d for d in SITE.devices if d.id == device_id)
        self.device = device
        self.sim = SimulatedDevice(device, PROFILES[device.profile], rng=random.Random(device_id))
        self.t = 0.0

    @property
    def now(self) -> datetime:
        return START + timedelta(seconds=self.t)

    async def run(self, scenario: str, seconds: int) -> None:
        """Switch to ``scenario`` and feed ``seconds`` one-second polls."""
        if scenario != self.sim.scenario:
            self.sim.set_scenario(scenario, self.t)
        for _ in range(seconds):
            self.t += 1
            self.sim.tick(self.t)
            await self._poll(self.sim.readings)

    async def hold(self, readings: dict[str, float], seconds: int) -> None:
        """Feed ``seconds`` one-second polls that read ``readings`` (no noise, no scenario):
        a level between two set points, say."""
        for _ in range(seconds):
            self.t += 1
            await self._poll({**self.sim.readings, **readings})

    async def _poll(self, readings: dict[str, float]) -> None:
        await self.service.apply(
            ReadingBatch(
                gateway_id=self.device.gateway,
                seq=next(self.seq),
                device_id=self.device.id,
                institution_id=self.device.institution,
                kind=self.sim.profile.kind,
                ts=self.now,
                profile=self.device.profile,
                readings=dict(readings),
                flags=dict(self.sim.flags),
            )
        )
