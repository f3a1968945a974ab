"""Replicas that take over each other's share: leases on partitions, held in the shared database.

Several alert-service replicas split the gateways into ``n`` partitions (firewatch.partition).
Each partition is a persistent MQTT session of its own (client id ``fw-alerts-p0of2``) that the
broker keeps, with its subscriptions and its queued QoS 1 messages, whether a replica holds it or
not.  So moving a partition is only a matter of which replica connects as that client: the new
holder receives what was queued and what the old one had not acknowledged, and loses nothing.
What this module decides is *who* connects, such that a partition is consumed by at most one
replica at a time and a replica that goes away has its partitions taken over.

Why a lease row in the relational database, and not something of our own or the broker's:

* every replica already depends on that database (it commits each message's effect there), so
  the lease adds no new part that could fail on its own: a replica cut off from the database
  could not apply messages anyway;
* one conditional UPDATE is atomic on PostgreSQL and on SQLite alike; a row per partition with
  a holder, an ``epoch`` (the fencing token, one more per new holder) and a renewal counter is
  the whole protocol.  No clustering library, no consensus of our own;
* MQTT retained "owner" messages with a last will were the other candidate: the broker tells
  everyone when an owner's connection drops, but two replicas that both see "no owner" both
  claim, and nothing on the broker settles who won.  The broker's own client-id takeover (a
  second connection with the same client id closes the first) does settle it, but by kicking:
  two replicas wanting one partition would take it from each other for ever.

The protocol (each replica, every quarter of ``lease_s``):

* it renews the leases it holds (``renewals + 1`` where holder and epoch are still its own); a
  lease it finds taken stops its partition at once;
* a lease nobody holds (released, or never held) is taken; a lease whose row has not changed
  for ``lease_s`` *on the contender's own clock* (it watches the renewal counter, as
  Kubernetes' leader election does, so clocks that disagree between hosts do not matter) is
  taken over, by an UPDATE that succeeds only if the row is still the one it saw;
* fencing: a holder stops consuming a partition once ``3/4 lease_s`` have passed since the
  start of its last renewal that went through, i.e. a quarter of the lease before anyone may
  take it over.  A holder whose database or event loop stalls therefore stops before another
  starts.  Two more fences stand behind that one: every transaction that applies a partition's
  messages checks, inside itself, that the lease is still this replica's at this epoch
  (PostgreSQL: ``FOR SHARE``, which makes a takeover wait for it; SQLite: the transaction
  holds the write lock), and the broker closes a stale connection that shares the client id;
* a replica's *home* partition (``FIREWATCH_CONSUMER_PARTITION``) comes back to it: it marks
  the lease ``wanted_by`` itself, and the replica holding it stops consuming, then releases it.

A partition that moves loses no alarm state: everything the rules remember per device (an on- or
off-delay running, the samples of a rate-of-rise rule, the device's place in its gateway's
stream, its open alarms) is written in the same transaction as each message's effect, and the
new holder reads it from the database with the next message.  What does move with the replica is
the link watch's memory of when each gateway was last heard, which the database has to within
``persist_every`` (at most 15 s): a gateway silent at the takeover is found silent that much
later.  The time a partition is not consumed, about ``lease_s`` after a replica dies, is time
its messages wait on the broker, not time they are lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from firewatch.contract import utc_now
from firewatch.db import ConsumerLease
from firewatch.faults import Unavailable, reason_of

log = logging.getLogger(__name__)


class LeaseLost(Unavailable):
    """A transaction of a partition this replica no longer holds: rolled back, and the
    message left to the new holder (a transient error for the consumer's isolation)."""


@dataclass(frozen=True)
class Duty:
    """Work that runs on one replica at a time, while it holds the lease ``name``."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    home: bool = False  # this replica's own: asked back from whoever holds it


def holder_id(instance: str) -> str:
    """This process among the replicas: its instance name and a random part, so that a replica
    restarted at once is a new holder and never mistakes its predecessor's leases for its own."""
    return f"{instance}-{secrets.token_hex(4)}"


class LeaseKeeper:
    """Holds, renews, takes over and gives back leases; runs each duty while it holds its lease."""

    def __init__(
        self, sessions: async_sessionmaker, holder: str, lease_s: float, duties: list[Duty]
    ) -> None:
        self.sessions = sessions
        self.holder = holder
        self.lease_s = lease_s
        self.duties = {d.name: d for d in duties}
        self.takeovers = 0
        self._epochs: dict[str, int] = {}  # the epoch of each lease this replica took
        self._renewed: dict[str, float] = {}  # loop time at the start of the last renewal
        self._running: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, tuple[tuple[str, int, int], float]] = {}
        self._last_error = ""

    @property
    def held(self) -> set[str]:
        """The leases whose duties run here now."""
        return set(self._running)

    def epoch(self, name: str) -> int | None:
        """This replica's epoch of ``name`` while its duty runs here, else None."""
        return self._epochs.get(name) if name in self._running else None

    def check(self, session: Session, name: str) -> None:
        """Inside a transaction that does ``name``'s work: raise LeaseLost unless this replica
        still holds it (the fence a stalled holder cannot pass; see the module's docstring)."""
        epoch = self.epoch(name)
        row = session.execute(
            select(ConsumerLease.holder, ConsumerLease.epoch)
            .where(ConsumerLease.name == name)
            .with_for_update(read=True)
        ).first()
        if epoch is None or row is None or tuple(row) != (self.holder, epoch):
            raise LeaseLost(f"lease {name} is no longer held by {self.holder}")

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._fence())
                while True:
                    try:
                        await self._round()
                        self._last_error = ""
                    except Exception as exc:  # the database away: the fence stops what it must
                        if reason_of(exc) != self._last_error:
                            log.warning("leases not renewed (%s); trying again", reason_of(exc))
                            self._last_error = reason_of(exc)
                    await asyncio.sleep(self.lease_s / 4)
        finally:
            for name in list(self._running):
                await self._stop(name, "this replica stops")

    async def _round(self) -> None:
        """One look at every lease, and one transaction for what it changes: a renewal that
        waited for the database behind other writes would eat into the lease."""
        loop = asyncio.get_running_loop()
        rows = await self._rows()
        read_at = loop.time()
        for name, row in rows.items():  # stop what its home replica asks back for, first
            if self._given_back(row):
                await self._stop(name, f"its home replica {row.wanted_by} wants it back")
        started = loop.time()
        changes: list[tuple[Duty, bool]] = []  # (duty, whether it is ours after the commit)
        async with self.sessions() as session, session.begin():
            for name, duty in self.duties.items():
                row = rows[name]
                if self._mine(row):
                    given_back = self._given_back(row)
                    values = (
                        {"holder": None}
                        if given_back
                        else {"renewals": row.renewals + 1, "renewed_at": utc_now()}
                    )
                    kept = await self._update(session, row, **values)
                    changes.append((duty, kept and not given_back))
                elif row.holder is None and row.wanted_by in (None, self.holder):
                    changes.append((duty, await self._take(session, row)))
                else:  # another's, or given back to a replica that has not taken it yet
                    changes.append((duty, await self._watch(session, duty, row, read_at)))
        for duty, ours in changes:
            if ours:
                self._renewed[duty.name] = started
                self._start(duty)
            else:
                await self._stop(duty.name, "another replica holds its lease")

    def _mine(self, row: ConsumerLease) -> bool:
        return row.holder == self.holder and row.epoch == self._epochs.get(row.name)

    def _given_back(self, row: ConsumerLease) -> bool:
        """A lease of ours that another replica, whose home partition it is, wants back."""
        return (
            self._mine(row)
            and row.wanted_by not in (None, self.holder)
            and not self.duties[row.name].home
        )

    async def _rows(self) -> dict[str, ConsumerLease]:
        async with self.sessions() as session, session.begin():
            found = {
                row.name: row
                for row in await session.scalars(
                    select(ConsumerLease).where(ConsumerLease.name.in_(self.duties))
                )
            }
            missing = [name for name in self.duties if name not in found]
            if not missing:
                return found
            dialect = {"sqlite": sqlite, "postgresql": postgresql}[session.bind.dialect.name]
            await session.execute(
                dialect.insert(ConsumerLease).on_conflict_do_nothing(),
                [{"name": name, "epoch": 0, "renewals": 0} for name in missing],
            )
        return await self._rows()

    async def _take(self, session: AsyncSession, row: ConsumerLease) -> bool:
        """Take ``row`` if it is still as read."""
        taken = await self._update(
            session,
            row,
            holder=self.holder,
            epoch=row.epoch + 1,
            renewals=0,
            wanted_by=None,
            renewed_at=utc_now(),
        )
        if taken:
            self._epochs[row.name] = row.epoch + 1
            if row.holder is not None:
                self.takeovers += 1
            why = "free" if row.holder is None else f"{row.holder} stopped renewing it"
            log.warning("lease %s taken (%s) by %s", row.name, why, self.holder)
        return taken

    async def _watch(
        self, session: AsyncSession, duty: Duty, row: ConsumerLease, read_at: float
    ) -> bool:
        """Someone else's lease: take it over once it has not moved for ``lease_s`` (a
        replica that asked for it back and then went away, too); ask for it back if it is
        this replica's home.  True if it is ours now."""
        key = (row.holder or "", row.epoch, row.renewals)
        seen = self._seen.get(duty.name)
        if seen is None or seen[0] != key:
            self._seen[duty.name] = (key, read_at)
        elif asyncio.get_running_loop().time() - seen[1] >= self.lease_s:
            return await self._take(session, row)
        if duty.home and row.wanted_by != self.holder:
            await self._update(session, row, wanted_by=self.holder)
        return False

    @staticmethod
    async def _update(session: AsyncSession, row: ConsumerLease, **values: Any) -> bool:
        """Change ``row`` if it is still as it was read: True if it was."""
        done = cast(
            CursorResult[Any],
            await session.execute(
                update(ConsumerLease)
                .where(
                    ConsumerLease.name == row.name,
                    ConsumerLease.holder.is_(None)
                    if row.holder is None
                    else ConsumerLease.holder == row.holder,
                    ConsumerLease.epoch == row.epoch,
                    ConsumerLease.renewals == row.renewals,
                )
                .values(**values)
            ),
        )
        return done.rowcount == 1

    def _start(self, duty: Duty) -> None:
        task = self._running.get(duty.name)
        if task is not None and not task.done():
            return
        if task is not None:  # the duty ended on its own: log why, and run it again
            error = None if task.cancelled() else task.exception()
            log.error("duty %s ended (%r); starting it again", duty.name, error)
        self._running[duty.name] = asyncio.create_task(duty.run(), name=duty.name)

    async def _stop(self, name: str, why: str) -> None:
        task = self._running.pop(name, None)
        if task is None:
            return
        log.warning("%s stopped here: %s", name, why)
        task.cancel()
        await asyncio.wait([task])

    async def _fence(self) -> None:
        """Stop each duty whose lease went unrenewed for 3/4 of ``lease_s``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.lease_s / 20)
            for name in list(self._running):
                if loop.time() - self._renewed[name] > self.lease_s * 3 / 4:
                    await self._stop(name, "its lease went unrenewed")
