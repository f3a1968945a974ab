"""Committed changes of devices, alarms and ledger entries, fanned out to the live pages.

The hub watches the ORM sessions instead of being called by each writer: the alert service,
the web routes and any scheduler change rows through the same sessionmaker, and a change is
published only once its transaction has committed, so a page never shows a state that was
rolled back.  A hub sees the commits of its own process only: ``firewatch up`` serves the pages
from the process that writes; when the alert service runs on its own, its hub's changes reach
the web replicas' hubs over the broker (firewatch.change_relay).

A change that cannot be shaped, serialised, relayed or pushed is that change's problem only:
whoever meets it calls :meth:`ChangeHub.failed` (counted by stage, logged once per new error)
and goes on with the next; the commit it came from stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from firewatch.db import Alarm, Device, Hazard

log = logging.getLogger(__name__)

#: the device columns whose change the map must see (readings alone would flood the pages)
DEVICE_STATE_COLUMNS = ("state", "state_reason", "institution_id", "mode", "mode_until")
KINDS: dict[type, str] = {Device: "device", Alarm: "alarm", Hazard: "hazard"}
_CHANGES = "firewatch_hub_changes"


@dataclass(frozen=True)
class Change:
    kind: str  # device | alarm | hazard | resync
    institution_id: str
    data: dict[str, Any]


#: told to a subscriber that fell behind: its queue was dropped, reload everything
RESYNC = Change("resync", "", {})


class Subscription:
    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(queue_size)

    def offer(self, change: Change | None) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC if change is not None else None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        change = await self.queue.get()
        if change is None:
            raise StopAsyncIteration
        return change


class ChangeHub:
    def __init__(self, queue_size: int = 2000) -> None:
        self.queue_size = queue_size
        self.subscribers: set[Subscription] = set()
        self.closed = False
        self.published = 0
        #: change notices set aside, by stage: collect, listen, publish, receive, dead-letter, push
        self.errors: Counter[str] = Counter()
        self._last_error: dict[str, str] = {}  # per stage: logged once until it changes
        #: where the subscribers' queues live; sessions may commit on other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[Change], None]] = []

    def failed(self, stage: str, exc: Exception) -> None:
        """One change notice could not go through ``stage``: count it, log it once."""
        self.errors[stage] += 1
        text = f"{type(exc).__name__}: {exc}"[:500]
        if self._last_error.get(stage) != text:
            log.error(
                "a change notice set aside at %s (%s); the others go on", stage, text, exc_info=exc
            )
            self._last_error[stage] = text

    def watch(self, sessions: async_sessionmaker) -> None:
        """Publish what every session of ``sessions`` commits (a Session subclass per hub)."""
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        session_class = type("HubSession", (Session,), {})
        event.listen(session_class, "after_flush", _collect)
        event.listen(session_class, "after_commit", self._after_commit)
        event.listen(session_class, "after_rollback", _forget)
        sessions.configure(sync_session_class=session_class)

    def on_publish(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` with each change before any subscriber is offered it: what a page
        reads after hearing of a change (firewatch.web.snapshot) already knows of it."""
        self._listeners.append(listener)

    def publish(self, change: Change) -> None:
        self.published += 1
        for listener in self._listeners:
            try:
                listener(change)
            except Exception as exc:  # the pages hear of the change all the same
                self.failed("listen", exc)
        for subscriber in self.subscribers:
            subscriber.offer(change)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        self._loop = asyncio.get_running_loop()
        subscription = Subscription(self.queue_size)
        if self.closed:
            subscription.offer(None)
        self.subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self.subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription: open streams finish, so the web server can stop."""
        self.closed = True
        for subscriber in self.subscribers:
            subscriber.offer(None)

    def _after_commit(self, session: Session) -> None:
        changes = []
        for row in session.info.pop(_CHANGES, {}).values():
            try:
                changes.append(
                    Change(
                        KINDS[type(row)],
                        row.institution_id,
                        {c.key: getattr(row, c.key) for c in row.__table__.columns},
                    )
                )
            except Exception as exc:  # raised here, it would fail a commit that has happened
                self.failed("collect", exc)
        if not changes:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # committed on a thread of its own (firewatch.db.Writer)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._publish_all, changes)
                return
        self._publish_all(changes)

    def _publish_all(self, changes: list[Change]) -> None:
        for change in changes:
            self.publish(change)


def _collect(session: Session, _flush_context: Any) -> None:
    changes = session.info.setdefault(_CHANGES, {})
    for row in (*session.new, *session.dirty):
        kind = KINDS.get(type(row))
        if kind is None:
            continue
        if kind == "device" and row not in session.new and not _state_changed(row):
            continue
        changes[(kind, id(row))] = row


def _state_changed(device: Device) -> bool:
    attrs = inspect(device).attrs
    return any(attrs[name].history.has_changes() for name in DEVICE_STATE_COLUMNS)


def _forget(session: Session) -> None:
    session.info.pop(_CHANGES, None)
