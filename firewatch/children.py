"""``firewatch up``'s child processes: the services of the production shape, started by one command.

One Python process cannot carry a county: the alert service, ingest and the gateways each want
a good share of a core at 1,000 devices, and a press waited behind the others' work in one
event loop.  ``firewatch up`` therefore runs ``firewatch alerts``, ``ingest`` and ``gateway``
(the same commands the production containers run) as children of its own, with the standard
library's asyncio subprocesses: no process manager of ours beyond what this module says.

* **Supervised**: each child is a job of a :class:`firewatch.supervise.Supervisor`; one that
  exits while the stack runs is logged and started again after the supervisor's capped,
  jittered backoff, and its restarts show in ``/metrics`` and ``/api/health`` like a task's.
* **One Ctrl-C**: the children run in a session of their own, so the terminal's SIGINT reaches
  the parent only; stopping, it sends each child SIGTERM (its own clean stop: outboxes and
  databases closed) and waits for it, and kills one that does not stop within
  :data:`STOP_TIMEOUT_S`.
* **No orphans**: each child's stdin is a pipe from the parent.  When the parent goes away by
  any means, even SIGKILL, the pipe closes and the child stops itself as SIGTERM would, or
  exits :data:`STOP_TIMEOUT_S` later (:func:`stop_when_parent_goes`).
* **Logs keep their process name**: a child writes to the parent's stdout and stderr, each line
  marked with its name (``firewatch --child NAME``; see firewatch.logs).
* **Counts in one place**: each child serves its Prometheus metrics on a local port; the parent
  reads them (:meth:`Child.scrape`) and serves them at the web app's ``/metrics`` with a
  ``process`` label, and its ``/api/health`` names a child's failing tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: how long a child may take to stop cleanly after SIGTERM before it is killed
STOP_TIMEOUT_S = 30.0


class ChildExited(Exception):
    """A child stopped while the stack ran: its supervisor starts it again."""


@dataclass
class Child:
    """One ``firewatch <args>`` child, with its environment and its metrics port."""

    name: str
    args: list[str]
    env: Mapping[str, str]
    #: where it serves its Prometheus metrics; None for one that has none (the broker)
    metrics_port: int | None
    #: what its ``/metrics`` said last, as parsed families
    families: list[Metric] = field(default_factory=list)
    pid: int | None = None
    #: set by :meth:`stop`: the stack is stopping, and this child is not to run again
    stopped: bool = False
    _process: asyncio.subprocess.Process | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def run(self) -> None:
        """Run the child until it exits (raises :class:`ChildExited`) or this is cancelled
        (the child is stopped with SIGTERM, then killed if it will not stop)."""
        if self.stopped:
            return
        process = self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firewatch.cli",
            "--child",
            self.name,
            *self.args,
            env={**os.environ, **self.env},
            stdin=asyncio.subprocess.PIPE,  # closed when the parent goes: see stop_when_parent_goes
            start_new_session=True,  # the terminal's Ctrl-C is the parent's to pass on
        )
        self.pid = process.pid
        log.info("started %s (pid %d)", self.name, process.pid)
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            await asyncio.shield(_stop(process, self.name))
            raise
        finally:
            if process.stdin is not None:
                process.stdin.close()
            self.families = []
        if self.stopped:
            return  # stopped on purpose, in its turn (:meth:`stop`)
        raise ChildExited(f"{self.name} (pid {process.pid}) exited with code {code}")

    async def stop(self) -> None:
        """Stop it for good, now: a stack stops its children in turn, the gateways while the
        broker still takes their last messages, the broker last."""
        self.stopped = True
        if self._process is not None:
            await _stop(self._process, self.name)

    async def scrape(self, client: httpx.AsyncClient) -> None:
        """Read the child's metrics (none until it first answers, and again once it exits)."""
        if self.metrics_port is None:
            return
        with contextlib.suppress(httpx.HTTPError):  # a busy child: its last counts stand
            reply = await client.get(self.metrics_url)
            reply.raise_for_status()
            self.families = list(text_string_to_metric_families(reply.text))

    def value(self, metric: str) -> float:
        """The sum of a metric's samples, as last scraped (0 before the first answer)."""
        return sum(s.value for f in self.families for s in f.samples if s.name == metric)

    def problems(self) -> list[str]:
        """Not running yet (starting, restarting), or tasks of its own waiting to restart."""
        if not self.families and self.metrics_port is not None:
            return [f"process {self.name} not running yet"]
        restarts = {
            s.labels["task"]: s.value
            for f in self.families
            for s in f.samples
            if s.name == "firewatch_task_restarts_total"
        }
        return [
            f"task {self.name}/{s.labels['task']} restarting "
            f"({restarts.get(s.labels['task'], 0):.0f} restarts)"
            for f in self.families
            for s in f.samples
            if s.name == "firewatch_task_running"
            and s.value == 0
            and restarts.get(s.labels["task"])
        ]


async def _stop(process: asyncio.subprocess.Process, name: str) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.error("%s did not stop within %.0f s of SIGTERM: killed", name, STOP_TIMEOUT_S)
        process.kill()
        code = await process.wait()
    if code != 0:
        log.warning("%s stopped with exit code %d", name, code)


class ChildrenCollector(Collector):
    """The children's metrics as last scraped, each sample labelled with its ``process``."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for child in self.children:
            for family in child.families:
                if family.name not in merged:
                    merged[family.name] = Metric(family.name, family.documentation, family.type)
                merged[family.name].samples.extend(
                    s._replace(labels={**s.labels, "process": child.name}) for s in family.samples
                )
        yield from merged.values()


async def scrape_all(children: list[Child], client: httpx.AsyncClient) -> None:
    await asyncio.gather(*(c.scrape(client) for c in children))


def stop_when_parent_goes(stdin_fd: int = 0) -> None:
    """In a child of ``firewatch up``: when the parent's end of stdin closes (the parent stopped,
    crashed or was killed), stop this process as SIGTERM would, cleanly."""

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError):
            while os.read(stdin_fd, 4096):
                pass
        os.kill(os.getpid(), signal.SIGTERM)
        # a clean stop can hang on what went with the parent (a gateway's reconnect loop to
        # the embedded broker loses the cancellation on Python 3.11); what it keeps is on disk
        time.sleep(STOP_TIMEOUT_S)
        os._exit(1)

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()
