"""The escalation scheduler: APScheduler 3 (AsyncIOScheduler) timing each subject's next step.

Every subject with a step ahead has one date job (``alarm:7`` at its head step, ``hazard:3`` at
its deadline or its re-check date).  When a job fires it has the escalator take the due steps and
schedules the subject's next one.  A sweep every ``sweep_every_s`` finds new subjects (alarms the
alert service raised, entries the web app signed off), takes steps that fell due while the
service was down, and removes the jobs of subjects that need no more steps: acknowledging an
alarm cancels its pending steps.

The jobs live in memory on purpose.  What is due, and when, follows from the alarms, ledger
entries and steps taken, which are in the database; the first sweep after a start rebuilds
every job from them, so a re-check due in 90 days survives restarts without a job store of its
own.  (APScheduler 3's persistent job stores are synchronous: with one, an alarm storm's
hundreds of new jobs were hundreds of blocking commits in the event loop that also has to apply
the next gateway message and send the notices, and the alarm benchmark's notices came seconds
late.)

Nothing one subject does stops the schedule: a job whose step raises, or a subject APScheduler
will not take, is set aside by the escalator (logged once, counted) and looked at again by the
next sweep; a sweep that fails (the database away) is logged, counted, and the next one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from alerts.escalator import Escalator
from firewatch.contract import utc_now

log = logging.getLogger(__name__)


class EscalationScheduler:
    def __init__(self, escalator: Escalator, *, sweep_every_s: float = 15.0) -> None:
        self.escalator = escalator
        self.sweep_every_s = sweep_every_s
        self.scheduler: AsyncIOScheduler | None = None
        self.jobs_scheduled = 0
        #: sweeps that failed, by error class
        self.sweep_errors: Counter[str] = Counter()
        self._last_sweep_error = ""  # logged once until a sweep goes through

    async def run(self) -> None:
        self.scheduler = AsyncIOScheduler(
            # a step whose time passed while the loop was busy is still taken, once
            job_defaults={"misfire_grace_time": None, "coalesce": True},
            timezone=UTC,
        )
        self.scheduler.start()
        try:
            while True:
                try:
                    await self.sweep()
                except Exception as exc:
                    self._sweep_failed(exc)
                else:
                    self._last_sweep_error = ""
                await asyncio.sleep(self.sweep_every_s)
        finally:
            self.scheduler.shutdown(wait=False)  # runs on the loop's next turn
            await asyncio.sleep(0)

    async def sweep(self) -> None:
        schedule = await self.escalator.sweep(utc_now())
        jobs = {job.id: job for job in self._scheduler.get_jobs()}
        for key, at in schedule.items():
            try:
                self._schedule(key, at, jobs.get(key))
            except Exception as exc:
                self.escalator.put_aside(key, exc)
        for key in jobs.keys() - schedule.keys():
            self._remove(key)  # acknowledged, re-checked, closed, set aside: no step now
        self.jobs_scheduled = len(self._scheduler.get_jobs())

    async def advance(self, key: str) -> None:
        """A subject's job: never raises into APScheduler (the next sweep looks again)."""
        try:
            plan = await self.escalator.advance(key, utc_now())
            self._schedule(key, plan.next_at, self._scheduler.get_job(key))
        except Exception as exc:
            self.escalator.put_aside(key, exc)

    def _sweep_failed(self, exc: Exception) -> None:
        self.sweep_errors[type(exc).__name__] += 1
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_sweep_error:
            log.error(
                "escalation sweep failed (%s); sweeping again in %g s",
                text,
                self.sweep_every_s,
                exc_info=exc,
            )
            self._last_sweep_error = text

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
            return  # already there
        self._scheduler.add_job(
            self.advance, "date", run_date=at, id=key, name=key, args=[key], replace_existing=True
        )

    def _remove(self, key: str) -> None:
        with contextlib.suppress(JobLookupError):  # it fired meanwhile
            self._scheduler.remove_job(key)

    def status(self) -> dict[str, Any]:
        return {
            "escalation_steps_taken": self.escalator.steps_taken,
            "escalation_jobs_scheduled": self.jobs_scheduled,
            "escalation_set_aside": len(self.escalator.set_aside),
            "escalation_sweep_errors": sum(self.sweep_errors.values()),
        }
