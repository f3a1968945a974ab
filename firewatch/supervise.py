"""Supervision of long-running tasks: one that raises is restarted, the others run on.

``asyncio.TaskGroup`` cancels every sibling when one child fails: right for work that succeeds
together, wrong for a process's independent loops (a gateway's pollers, the alert service's
consumer beside its notifier).  Before this module one data error in any of them ended
``firewatch up`` for the whole county.  A :class:`Supervisor` runs each job on its own, after
aiotools' ``Supervisor``: a job that raises any ``Exception`` is logged (its traceback once per
distinct error, a line for each repeat), counted, and started again after a capped, jittered,
exponential delay, which returns to its first value once the job has run healthily for a
while.  A job that returns is done.  Cancellation (Ctrl-C, SIGTERM) is never caught: it stops
every job at once.

A service that runs jobs of its own inside a supervised job (the alert service's consumer and
its pruning) calls :func:`supervise`: the jobs join the supervisor of the job they run in, named
below it (``alerts/consumer``), so that one :meth:`Supervisor.status` covers the process for
``/api/health`` and ``/metrics``.  Outside any supervisor (a test running one service) they get
a supervisor of their own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: a job: called again for each restart, since a coroutine runs only once
Job = Callable[[], Awaitable[None]]

#: the supervisor of the job the current task runs in, and that job's name
_running_in: ContextVar[tuple[Supervisor, str] | None] = ContextVar("supervised", default=None)


@dataclass
class Backoff:
    """How long a failed job waits before its next start."""

    first_s: float = 0.5
    max_s: float = 30.0
    #: a job that ran this long before failing starts again after ``first_s``
    healthy_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.healthy_after_s < 0:
            raise ValueError(f"backoff out of range: {self}")

    def jittered(self, delay: float) -> float:
        """Between half and all of ``delay``: jobs failing together do not restart together."""
        return delay * random.uniform(0.5, 1.0)


@dataclass
class TaskRecord:
    """What the supervisor knows of one job, for /api/health and /metrics."""

    state: str = "running"  # running | restarting | done
    restarts: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None  # time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self.tasks: dict[str, TaskRecord] = {}

    async def run(self, jobs: Mapping[str, Job]) -> None:
        """Run the jobs until each is done; cancelled, cancel them all and wait for them.

        The group of supervised jobs is a TaskGroup only for cancellation: a supervised job
        never raises an ``Exception``, so one never cancels the others.
        """
        async with asyncio.TaskGroup() as group:
            for name, job in jobs.items():
                group.create_task(self._supervise(name, job), name=name)

    async def _supervise(self, name: str, job: Job) -> None:
        # a job started again by its parent's restart keeps its count
        record = self.tasks.setdefault(name, TaskRecord())
        _running_in.set((self, name))  # this task's own context: what its job supervises
        delay = self.backoff.first_s
        while True:
            record.state = "running"
            started = time.monotonic()
            try:
                await job()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started >= self.backoff.healthy_after_s:
                    delay = self.backoff.first_s
                wait = self.backoff.jittered(delay)
                if error != record.last_error:
                    log.exception("task %s failed; restarting in %.1f s", name, wait)
                else:
                    log.error("task %s failed again (%s); restarting in %.1f s", name, error, wait)
                record.state, record.last_error = "restarting", error
                record.restarts += 1
                record.last_failure_at = time.monotonic()
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.backoff.max_s)
                continue
            record.state = "done"
            log.info("task %s done", name)
            return

    def problems(self) -> list[str]:
        """Why the process is not doing its whole job: tasks failed within a healthy spell."""
        now = time.monotonic()
        return [
            f"task {name} restarting ({record.restarts} restarts, last: {record.last_error})"
            for name, record in self.tasks.items()
            if record.last_failure_at is not None
            and (
                record.state == "restarting"
                or now - record.last_failure_at < self.backoff.healthy_after_s
            )
        ]

    def status(self) -> dict[str, Any]:
        return {
            "tasks": {name: r.as_dict() for name, r in self.tasks.items()},
            "problems": self.problems(),
        }


async def supervise(jobs: Mapping[str, Job]) -> None:
    """Run ``jobs`` each on its own under the supervisor of the job this runs in, if any."""
    running_in = _running_in.get()
    if running_in is None:
        await Supervisor().run(jobs)
        return
    supervisor, parent = running_in
    await supervisor.run({f"{parent}/{name}": job for name, job in jobs.items()})
