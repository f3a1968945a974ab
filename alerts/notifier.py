"""Sending stored notices: marked sent only on the provider's success answer, retried otherwise.

The alert service stores a notice in the same transaction as its alarm; this loop sends what is
due, oldest first, each on its channel (``alerts.channels``).  A failure (network, time-out,
HTTP error, provider error code) is recorded and retried with exponential backoff, or after
the pause a throttling provider asks for.  Each channel's per-target rate (20 a minute for a
WeChat Work robot, 1 a minute for a mobile number) is respected by holding back what would
exceed it instead of having it refused.

A notice whose channel keeps failing (``after_attempts`` failures, or ``after_s`` since it was
stored) is handed, once, to the fallback channel: the same row, so it is still one notice
and is sent once.  Notices are read from the database on every round, so a restarted notifier
carries on with what is pending and never resends what is marked sent.

A send that raises anything but :class:`SendFailed` (a template variable the settings name but
no message has, a webhook URL httpx cannot parse, a channel's bug) would fail again on every
retry: it is final for that channel, and one notice's error never stops the others (see
``Notifier._cannot_send``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from alerts.channels import Channel, SendFailed
from alerts.confirm_links import ConfirmLinks
from alerts.notices import NoticeMessage
from alerts.outbox import Routing
from firewatch.contract import utc_now
from firewatch.db import Notice, Writer

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300
#: how much of an error's text a notice keeps (``last_error``) and a log line shows
ERROR_TEXT_LIMIT = 500
T = TypeVar("T")


def error_text(exc: BaseException) -> str:
    """``Class: message``, cut to ``ERROR_TEXT_LIMIT``: what a notice that failed keeps."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


class RateLimiter:
    """At most ``limit`` sends per key in any 60-second window."""

    def __init__(self) -> None:
        self._sent: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def wait_s(self, key: tuple[str, str], limit: int, now: float) -> float:
        sent = self._sent[key]
        while sent and now - sent[0] >= 60:
            sent.popleft()
        return 0.0 if len(sent) < limit else 60 - (now - sent[0])

    def record(self, key: tuple[str, str], now: float) -> None:
        self._sent[key].append(now)


@dataclass(frozen=True)
class Fallback:
    after_attempts: int
    after_s: float


class Notifier:
    def __init__(
        self,
        sessions: async_sessionmaker,
        writer: Writer,
        waiting: asyncio.Event,
        channels: dict[str, Channel],
        routing: Routing,
        fallback: Fallback,
        *,
        timeout_s: float = 10,
        backoff_s: float = 1,
        links: ConfirmLinks | None = None,
        claim: bool = False,
    ) -> None:
        """``claim``: other replicas' notifiers send from the same table; each notice is
        claimed (its next attempt moved past the time a send can take) before it is sent, by
        whichever notifier's UPDATE finds it still due.  A notifier that dies after claiming
        leaves the notice to be sent when the claim runs out."""
        self.sessions = sessions
        self.writer = writer  # the status writes queue with the alert service's transactions
        self.waiting = waiting
        self.channels = channels
        self.routing = routing
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.claim_for = timedelta(seconds=max(60, 3 * timeout_s)) if claim else None
        self.limiter = RateLimiter()
        self.links = links  # the one-tap confirmation link each alarm's notice carries
        self._in_flight: set[int] = set()  # notice ids handed to a sender, not yet recorded
        self._senders: dict[tuple[str, str], asyncio.Task] = {}  # the last one per target
        self.sent = 0
        self.failures = 0
        self.fallbacks = 0
        #: notices whose send raised an error that does not pass, by (channel, error class)
        self.errors: Counter[tuple[str, str]] = Counter()
        #: rounds that failed for a reason of no one notice, by error class
        self.round_errors: Counter[str] = Counter()
        self._last_round_error = ""  # logged once until a round goes through again
        #: when it last looked for notices due: the alert service's pulse reports it
        self.looked_at: datetime | None = None

    async def run(self) -> None:
        async with (
            httpx.AsyncClient(timeout=self.timeout_s) as http,
            asyncio.TaskGroup() as senders,
        ):
            while True:
                # also look again every second for retries that have come due
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.waiting.wait(), timeout=1.0)
                self.waiting.clear()
                try:
                    await self.send_due(http, senders)
                    self.looked_at = utc_now()
                except DBAPIError as exc:  # the database away: what is due waits for it
                    log.warning("notices due not read (%s); trying again", exc.orig)
                except Exception as exc:  # a bug: logged, counted, and the next round runs
                    self._round_failed(exc, "notices due not handed out")
                else:
                    self._last_round_error = ""

    def _round_failed(self, exc: Exception, what: str) -> None:
        """Count a failure that is no one notice's; log it once until things go well again."""
        reason = type(exc).__name__
        self.round_errors[reason] += 1
        text = error_text(exc)
        if text != self._last_round_error:
            log.exception("%s (%s); the notifier goes on", what, text)
            self._last_round_error = text

    async def send_due(self, http: httpx.AsyncClient, senders: asyncio.TaskGroup) -> None:
        """Hand what is due to the senders and return at once.

        Sending and recording the provider's answer go on in the background: a new alarm's
        notice must not wait for the status writes of the last ones, which queue for the
        database behind the alert service's transactions.  A notice is in flight from here
        until its answer is recorded, and is not picked up again meanwhile.
        """
        async with self.sessions() as session:
            due = [
                n
                for n in await session.scalars(
                    select(Notice)
                    .where(Notice.status == "pending", Notice.next_attempt_at <= utc_now())
                    .order_by(Notice.id)
                    .limit(100 + len(self._in_flight))
                )
                if n.id not in self._in_flight
            ]
        if self.claim_for is not None and due:
            ids = await self._store(partial(self._claim, ids=[n.id for n in due]))
            due = [n for n in due if n.id in ids]
        # one robot, phone or account after another in order; different ones at the same time,
        # so that a slow provider or a long queue for one institution holds up no one else
        queues: dict[tuple[str, str], list[Notice]] = {}
        for notice in due:
            queues.setdefault((notice.channel, notice.target), []).append(notice)
        for key, queue in queues.items():
            self._in_flight.update(n.id for n in queue)
            self._senders[key] = senders.create_task(
                self._send_after(self._senders.get(key), http, key, queue)
            )

    def _claim(self, session: Session, ids: list[int]) -> set[int]:
        """Of ``ids``, those still due, now this notifier's to send."""
        assert self.claim_for is not None
        now = utc_now()
        return set(
            session.scalars(
                update(Notice)
                .where(
                    Notice.id.in_(ids),
                    Notice.status == "pending",
                    Notice.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + self.claim_for)
                .returning(Notice.id)
            )
        )

    async def _send_after(
        self,
        previous: asyncio.Task | None,
        http: httpx.AsyncClient,
        key: tuple[str, str],
        notices: list[Notice],
    ) -> None:
        """``notices`` once the sends to the same target handed out before them are done.

        Never raises: a sender that failed would end the senders' task group, and with it the
        notifier.  What it leaves unsent is still pending and is handed out again.
        """
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own
        try:
            await self._send_in_order(http, notices)
        except Exception as exc:
            self._round_failed(exc, f"sending to {key[0]} stopped")
        finally:
            self._in_flight.difference_update(n.id for n in notices)
            if self._senders.get(key) is asyncio.current_task():
                del self._senders[key]

    async def _send_in_order(self, http: httpx.AsyncClient, notices: list[Notice]) -> None:
        for notice in notices:
            try:
                sent, reference = await self._send_one(http, notice)
            except Exception as exc:  # the notice's own error, or a channel's bug
                await self._cannot_send(notice, exc)
                continue
            if sent:  # recorded outside the guard: a notice the provider took is never resent
                await self._update(
                    notice.id,
                    status="sent",
                    sent_at=utc_now(),
                    attempts=notice.attempts + 1,
                    provider_ref=reference,
                )
                self.sent += 1

    async def _send_one(self, http: httpx.AsyncClient, notice: Notice) -> tuple[bool, str | None]:
        """Send ``notice`` if its channel and rate allow: (True, the provider's reference for
        it) once the provider took it."""
        loop = asyncio.get_running_loop()
        channel = self.channels.get(notice.channel)
        if channel is None:
            await self._update(
                notice.id,
                status="unconfigured",
                last_error=f"channel {notice.channel} is not configured",
            )
            return False, None
        key = (notice.channel, notice.target)
        hold = self.limiter.wait_s(key, channel.per_minute, loop.time())
        if hold > 0:
            await self._update(notice.id, next_attempt_at=utc_now() + timedelta(seconds=hold))
            return False, None
        self.limiter.record(key, loop.time())
        message = NoticeMessage.model_validate(notice.body)
        if self.links is not None and notice.alarm_id is not None and channel.carries_link:
            message.link = self.links.url(notice.id, notice.created_at)
        try:
            reference = await channel.send(http, notice.target, message, notice.id)
        except SendFailed as exc:
            self.failures += 1
            await self._failed(notice.id, exc)
            return False, None
        return True, reference

    async def _cannot_send(self, notice: Notice, exc: Exception) -> None:
        """A notice whose send raised what no retry on its channel mends: hand it to the
        fallback channel at once, or mark it failed with the error.

        Such an error belongs to the notice on that channel: a template variable the settings
        name that this message lacks, a webhook URL httpx cannot parse, a channel's bug.  Another
        channel renders the message in its own form to its own address, so it may still reach
        the person, and a fire notice that might reach someone is worth the one more try.  A
        stored body that is no :class:`NoticeMessage` at all is the same on every channel: it
        is marked failed at once.
        """
        self.errors[(notice.channel, type(exc).__name__)] += 1
        text = error_text(exc)
        unreadable = isinstance(exc, ValidationError)
        # the traceback of a channel's bug is what mends it; a body's errors say it all
        log.error(
            "notice %d cannot be sent on %s: %s",
            notice.id,
            notice.channel,
            text,
            exc_info=not unreadable,
        )
        handed = await self._store(
            partial(
                self._record_final, notice_id=notice.id, error=text, try_fallback=not unreadable
            )
        )
        if handed:
            self.waiting.set()

    async def _update(self, notice_id: int, **values: Any) -> None:
        def update(session: Session) -> None:
            row = session.get_one(Notice, notice_id)
            for name, value in values.items():
                setattr(row, name, value)

        await self._store(update)

    async def _failed(self, notice_id: int, exc: SendFailed) -> None:
        if await self._store(partial(self._record_failure, notice_id=notice_id, exc=exc)):
            self.waiting.set()

    async def _store(self, write: Callable[[Session], T]) -> T:
        """A notice's new status, stored however long the database takes to take it.

        A notice the provider accepted must be recorded as sent, or it would go out again, and
        a failure must be recorded, or the notice would be retried at once.  A database locked
        for longer than its busy timeout (another process's long write) or briefly away is
        waited for; the notice stays in flight meanwhile, and the others are still sent.
        """
        delay = 0.1
        while True:
            try:
                return await self.writer.run(write)
            except DBAPIError as exc:
                log.warning(
                    "a notice's status not stored (%s); retrying in %.1f s", exc.orig, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    def _record_failure(self, session: Session, notice_id: int, exc: SendFailed) -> bool:
        """Back off, or hand the notice to the fallback channel: True if it was handed."""
        row = session.get_one(Notice, notice_id)
        row.attempts += 1
        row.last_error = str(exc)
        now = utc_now()
        keeps_failing = (
            row.attempts >= self.fallback.after_attempts
            or now - row.created_at >= timedelta(seconds=self.fallback.after_s)
        )
        if keeps_failing and self._handed_over(
            row, f"{row.channel} failed {row.attempts} times ({exc})"
        ):
            return True
        backoff = min(self.backoff_s * 2**row.attempts, MAX_BACKOFF_S)
        wait = max(backoff, exc.retry_after or 0)
        log.warning("notice %d not sent (%s); retrying in %g s", row.id, exc, wait)
        row.next_attempt_at = now + timedelta(seconds=wait)
        return False

    def _record_final(
        self, session: Session, notice_id: int, error: str, try_fallback: bool
    ) -> bool:
        """Hand the notice to the fallback channel, or mark it failed: True if it was handed."""
        row = session.get_one(Notice, notice_id)
        row.attempts += 1
        if try_fallback and self._handed_over(row, f"{row.channel}: {error}"):
            return True
        row.status, row.last_error = "failed", error
        return False

    def _handed_over(self, row: Notice, why: str) -> bool:
        """Put ``row`` on the fallback channel, once, if it has an address there."""
        fallback = self.routing.fallback
        target = self.routing.target(row.institution_id, fallback)
        if fallback is None or target is None or fallback == row.channel:
            return False
        log.warning("notice %d: %s; handing it to %s", row.id, why, fallback)
        row.last_error = f"{why}; sent on {fallback}"
        row.channel, row.target, row.attempts = fallback, target, 0
        row.next_attempt_at = utc_now()
        self.fallbacks += 1
        return True

    def status(self) -> dict[str, Any]:
        return {
            "notices_sent": self.sent,
            "send_failures": self.failures,
            "fallbacks": self.fallbacks,
            "notices_failed": sum(self.errors.values()),
            "round_errors": sum(self.round_errors.values()),
        }
