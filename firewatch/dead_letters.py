"""The dead-letter store's writer: what a consumer set aside, with the reason, within bounds.

A letter keeps a bounded part of its payload, is kept for a while, and a flood of them from
one source is counted rather than stored (see STORED_PER_SOURCE_PER_MINUTE).  Every consumer
(ingest, alerts, the web app's change listener) writes its refusals through :class:`DeadLetters`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from firewatch.contract import TOPIC_ROOT, utc_now
from firewatch.db import DeadLetter
from firewatch.faults import Fault, classify, reason_of, storable

log = logging.getLogger(__name__)

#: what a dead letter keeps of a payload; its original length is kept beside it
MAX_STORED_PAYLOAD = 64 * 1024
#: how long a dead letter is kept by default (FIREWATCH_DEAD_LETTER_KEEP_DAYS)
DEAD_LETTER_KEEP = timedelta(days=30)
#: letters one source (a gateway's topics, or one other topic) may store a minute.  A broken or
#: hostile gateway can send hundreds of refused messages a second; stored one transaction each
#: they cost the consumer more than every real alarm of the county (measured: the alert service
#: took 0.21 of the real stream under 500 a second).  Beyond the budget a letter is counted by
#: reason (firewatch_dead_letters_unstored_total) and logged once a minute, not stored: the
#: first ones of each minute show an operator what is wrong.
STORED_PER_SOURCE_PER_MINUTE = 60
#: sources remembered for the budget; a flood of made-up topics must not grow it without end
MAX_SOURCES = 10_000


def source_of(topic: str) -> str:
    """Whose letter it is: the gateway level of a Firewatch topic, else the topic itself."""
    levels = topic.split("/", 4)
    if len(levels) >= 4 and f"{levels[0]}/{levels[1]}" == TOPIC_ROOT:
        return levels[3]
    return topic[:200]


class DeadLetters:
    """The messages one consumer set aside, each with its reason, counted by reason class.

    A letter keeps the first ``MAX_STORED_PAYLOAD`` bytes of its payload (an 8 MiB payload
    must not become 8 MiB rows) and the original length.  ``expire`` keeps them ``keep``.
    """

    def __init__(
        self, sessions: async_sessionmaker, consumer: str, keep: timedelta = DEAD_LETTER_KEEP
    ) -> None:
        self.sessions = sessions
        self.consumer = consumer
        self.keep = keep
        #: letters stored, by reason class: "contract" or the exception type
        self.by_reason: Counter[str] = Counter()
        #: letters over their source's budget, counted and not stored, by reason class
        self.unstored: Counter[str] = Counter()
        #: per source: when its minute began, and letters stored in it
        self._budget: dict[str, list[float]] = {}

    @property
    def count(self) -> int:
        return self.by_reason.total()

    async def put(
        self, topic: str, payload: bytes, reason: str, reason_class: str = "contract"
    ) -> None:
        """Store the letter; a database away is waited for, so that the message is acknowledged
        only once its letter is stored.  Over its source's budget, it is counted instead."""
        if not self._within_budget(source_of(topic), reason_class, reason):
            return
        topic, reason = storable(topic), storable(reason)
        delay = 0.1
        while True:
            try:
                async with self.sessions.begin() as session:
                    session.add(
                        DeadLetter(
                            consumer=self.consumer,
                            topic=topic,
                            payload=payload[:MAX_STORED_PAYLOAD],
                            payload_size=len(payload),
                            reason=reason,
                            reason_class=reason_class[:32],
                        )
                    )
                break
            except Exception as exc:
                if classify(exc) is not Fault.TRANSIENT:
                    raise  # bounded and cleaned above: a bug, for the supervisor
                log.warning(
                    "%s: a dead letter not stored (%s); retrying in %.1f s",
                    self.consumer,
                    reason_of(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self.by_reason[reason_class] += 1
        log.warning("%s: dead-lettered a message on %s: %s", self.consumer, topic, reason)

    def _within_budget(self, source: str, reason_class: str, reason: str) -> bool:
        now = time.monotonic()
        minute = self._budget.get(source)
        if minute is None or now - minute[0] >= 60:
            if len(self._budget) >= MAX_SOURCES:
                self._budget.clear()
            minute = self._budget[source] = [now, 0]
        if minute[1] < STORED_PER_SOURCE_PER_MINUTE:
            minute[1] += 1
            return True
        self.unstored[reason_class] += 1
        if minute[1] == STORED_PER_SOURCE_PER_MINUTE:  # once a minute per source
            minute[1] += 1
            log.warning(
                "%s: more than %d letters a minute from %s: counted, not stored, "
                "until the minute is over (the last: %s)",
                self.consumer,
                STORED_PER_SOURCE_PER_MINUTE,
                source,
                storable(reason)[:200],
            )
        return False

    async def expire(self, every_s: float = 3600, chunk: int = 500) -> None:
        """Forget letters older than ``keep``, every ``every_s``, ``chunk`` rows a transaction
        (a flood of hostile messages must not become one long delete)."""
        while True:
            before = utc_now() - self.keep
            while True:
                async with self.sessions.begin() as session:
                    old = (
                        select(DeadLetter.id)
                        .where(
                            DeadLetter.consumer == self.consumer, DeadLetter.received_at < before
                        )
                        .limit(chunk)
                    )
                    done = (
                        await session.execute(delete(DeadLetter).where(DeadLetter.id.in_(old)))
                    ).rowcount
                if done < chunk:
                    break
                await asyncio.sleep(0)
            await asyncio.sleep(every_s)
