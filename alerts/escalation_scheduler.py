"""The escalation scheduler: APScheduler 3 (AsyncIOScheduler), its jobs kept in the database.

Every subject with a step ahead has one date job (``alarm:7`` at its head step, ``hazard:3`` at
its deadline or its re-check date).  When a job fires it has the escalator take the due steps and
schedules the subject's next one.  Jobs live in a ``SQLAlchemyJobStore`` so that a re-check due
in 90 days survives restarts.  A sweep every ``sweep_every_s`` finds new subjects (alarms the
alert service raised, entries the web app signed off), takes steps that fell due while the
service was down, and removes the jobs of subjects that need no more steps: acknowledging an
alarm cancels its pending steps.

On SQLite the job store is a file beside the database: APScheduler 3's job stores are
synchronous and run in the event loop's thread, and a job-store write waiting for SQLite's write
lock while an async transaction of this process holds it would block the very loop that has to
commit that transaction.  On PostgreSQL the jobs are a table of the same database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url

from alerts.escalator import Escalator
from firewatch.contract import utc_now

log = logging.getLogger(__name__)

JOBS_TABLE = "scheduler_jobs"
#: the schedulers running in this process, by name: what a stored job (a reference to
#: ``take_due_steps`` and its arguments, pickled) finds its escalator through
_RUNNING: dict[str, EscalationScheduler] = {}


def jobstore_url(database_url: str) -> str:
    """The synchronous SQLAlchemy URL of the job store, from the app's async database URL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("the escalation job store needs an SQLite file, not :memory:")
        path = Path(url.database)
        return url.set(drivername="sqlite",
                       database=str(path.with_name(f"{path.stem}-scheduler.db"))).render_as_string()
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"no escalation job store for {url.get_backend_name()} databases")


async def take_due_steps(scheduler_name: str, key: str) -> None:
    """The job APScheduler stores (by reference) and runs when a subject's step falls due."""
    await _RUNNING[scheduler_name].advance(key)


class EscalationScheduler:
    def __init__(
        self, escalator: Escalator, jobstore_url: str, *, sweep_every_s: float = 15.0,
        name: str = "escalation",
    ) -> None:
        self.escalator = escalator
        self.jobstore_url = jobstore_url
        self.sweep_every_s = sweep_every_s
        self.name = name
        self.scheduler: AsyncIOScheduler | None = None
        self.jobs_scheduled = 0

    async def run(self) -> None:
        if self.name in _RUNNING:
            raise RuntimeError(f"an escalation scheduler named {self.name!r} already runs")
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=self.jobstore_url, tablename=JOBS_TABLE)},
            # a step that fell due while the service was down is still taken, once
            job_defaults={"misfire_grace_time": None, "coalesce": True},
            timezone=UTC,
        )
        _RUNNING[self.name] = self
        self.scheduler.start()
        try:
            while True:
                await self.sweep()
                await asyncio.sleep(self.sweep_every_s)
        finally:
            del _RUNNING[self.name]
            self.scheduler.shutdown(wait=False)  # runs on the loop's next turn
            await asyncio.sleep(0)

    async def sweep(self) -> None:
        schedule = await self.escalator.sweep(utc_now())
        jobs = {job.id: job for job in self._scheduler.get_jobs()}
        for key, at in schedule.items():
            self._schedule(key, at, jobs.get(key))
        for key in jobs.keys() - schedule.keys():
            self._remove(key)  # acknowledged, re-checked, closed: no step left
        self.jobs_scheduled = len(self._scheduler.get_jobs())

    async def advance(self, key: str) -> None:
        plan = await self.escalator.advance(key, utc_now())
        self._schedule(key, plan.next_at, self._scheduler.get_job(key))

    @property
    def _scheduler(self) -> AsyncIOScheduler:
        if self.scheduler is None:
            raise RuntimeError("the escalation scheduler is not running")
        return self.scheduler

    def _schedule(self, key: str, at: datetime | None, job: Job | None) -> None:
        if at is None:
            if job is not None:
                self._remove(key)
            return
        if job is not None and abs(job.next_run_time - at) < timedelta(milliseconds=1):
            return  # already there (the store keeps times as float seconds)
        self._scheduler.add_job(take_due_steps, "date", run_date=at, id=key, name=key,
                                args=[self.name, key], replace_existing=True)

    def _remove(self, key: str) -> None:
        try:
            self._scheduler.remove_job(key)
        except JobLookupError:
            pass  # it fired meanwhile

    def status(self) -> dict[str, Any]:
        return {"escalation_steps_taken": self.escalator.steps_taken,
                "escalation_jobs_scheduled": self.jobs_scheduled}
