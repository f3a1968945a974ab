"""Voice calls until someone answers: each call's result asked of its provider; an unanswered
call goes to the next person on the institution's call list (值班表), then the bureau.

A voice notice (``alerts.channels.aliyun_vms``/``tencent_vms``) is marked sent when the
provider accepted the call, with the provider's CallId; that says nothing of whether anyone
picked up.  Every few seconds this looks at the calls placed whose result is unknown, asks the
provider, and stores the result on the notice (``outcome``).  A call not answered, or with no
result ``wait`` after it was placed, makes a new voice notice, in the same transaction, to the
next person on the call list (``Institution.call_list``: the duty roster, then the head; after
them the bureau's duty officer), unless the alarm has been acknowledged meanwhile.  The
notifier then places that call like any other notice.

One call never stops the others: a call whose query raises is set aside with its reason,
counted and logged once, and looked at again next round.  A provider that is away (SendFailed)
is asked again next round, until the wait is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime, timedelta
from functools import partial

import httpx
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from alerts.channels import Channel, Outcome, SendFailed, VoiceChannel
from firewatch.contract import utc_now
from firewatch.db import Alarm, Notice, Writer
from firewatch.site import Contact, Site

log = logging.getLogger(__name__)


class CallWatcher:
    def __init__(
        self,
        site: Site,
        sessions: async_sessionmaker,
        writer: Writer,
        channels: dict[str, Channel],
        notices_waiting: asyncio.Event,
        *,
        wait_s: float,
        every_s: float = 5.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.writer = writer
        self.notices_waiting = notices_waiting
        self.voice = {n: c for n, c in channels.items() if isinstance(c, VoiceChannel)}
        bureau = [site.bureau.duty] if site.bureau else []
        self.call_lists: dict[str, list[Contact]] = {
            i.id: [*i.call_list(), *bureau] for i in site.institutions
        }
        self.wait = timedelta(seconds=wait_s)
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.outcomes: Counter[str] = Counter()
        #: calls whose result could not be handled, by error class
        self.errors: Counter[str] = Counter()
        #: those calls, by notice id: the error, logged once until it changes
        self.set_aside: dict[int, str] = {}

    async def run(self) -> None:
        if not self.voice:
            return  # no voice provider configured: no call is ever placed
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            while True:
                try:
                    await self.look(http, utc_now())
                except DBAPIError as exc:  # the database away: the calls wait for it
                    log.warning("calls placed not read (%s); trying again", exc.orig)
                await asyncio.sleep(self.every_s)

    async def look(self, http: httpx.AsyncClient, now: datetime) -> None:
        """Ask the result of each call placed whose result is unknown; store what is known."""
        async with self.sessions() as session:
            calls = list(
                await session.scalars(
                    select(Notice).where(
                        Notice.channel.in_(self.voice),
                        Notice.status == "sent",
                        Notice.outcome.is_(None),
                    )
                )
            )
        for call in calls:
            try:
                await self._look_at(http, call, now)
            except DBAPIError:
                raise
            except Exception as exc:  # this call's own trouble: the others go on
                text = f"{type(exc).__name__}: {exc}"
                if self.set_aside.get(call.id) != text:
                    log.exception("result of call (notice %d) not handled: %s", call.id, text)
                    self.errors[type(exc).__name__] += 1
                self.set_aside[call.id] = text

    async def _look_at(self, http: httpx.AsyncClient, call: Notice, now: datetime) -> None:
        sent_at = call.sent_at or call.created_at
        result: Outcome | None = None
        if call.provider_ref:
            try:
                result = await self.voice[call.channel].outcome(http, call.provider_ref, sent_at)
            except SendFailed as exc:  # the provider away: asked again next round
                log.warning("result of call (notice %d) not known yet: %s", call.id, exc)
        if result is None and now - sent_at >= self.wait:
            result = Outcome.NO_RESULT
        if result is None:
            return
        if await self.writer.run(partial(self._record, notice_id=call.id, result=result)):
            self.notices_waiting.set()
        self.outcomes[result.value] += 1
        self.set_aside.pop(call.id, None)

    def _record(self, session: Session, notice_id: int, result: Outcome) -> bool:
        """Store the call's result; unanswered, call the next person: True if a call was
        stored."""
        row = session.get_one(Notice, notice_id)
        if row.outcome is not None:
            return False  # another round, or another replica, took it already
        row.outcome = result.value
        if result is Outcome.ANSWERED or row.alarm_id is None:
            return False
        alarm = session.get(Alarm, row.alarm_id)
        if alarm is None or alarm.acknowledged_at is not None:
            return False  # someone has it in hand: nobody else is woken
        rank = (row.call_rank or 0) + 1
        people = self.call_lists.get(row.institution_id, [])
        if rank >= len(people):
            log.warning("notice %d: nobody left to call for alarm %d", row.id, alarm.id)
            return False
        log.info("call (notice %d) %s; calling %s next", row.id, result.value, people[rank].name)
        session.add(
            Notice(
                alarm_id=row.alarm_id,
                institution_id=row.institution_id,
                channel=row.channel,
                target=people[rank].phone,
                body=row.body,
                status="pending",
                next_attempt_at=utc_now(),
                call_rank=rank,
            )
        )
        return True

    def status(self) -> dict[str, int]:
        return {
            "calls_answered": self.outcomes[Outcome.ANSWERED.value],
            "calls_not_answered": self.outcomes[Outcome.UNANSWERED.value]
            + self.outcomes[Outcome.NO_RESULT.value],
        }
