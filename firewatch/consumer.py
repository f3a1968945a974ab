"""Consuming gateway messages: subscribe, validate, dead-letter, and acknowledge only when done.

Ingest and alerts both consume the gateways' messages.  This module is what they share:

* a persistent MQTT session (clean_session off) so that QoS 1 messages published while the
  consumer is down wait on the broker for it;
* *manual* acknowledgement: the PUBACK goes back only after the handler has made the message's
  effect durable, so a crash in between means redelivery, never loss;
* a shared subscription (``$share/<group>/...``) where the broker has them, so replicas split
  the stream;
* payloads that break the contract, or that the consumer's admission check refuses (another
  gateway's device, a time far off: see ``firewatch.admission``), go to the dead-letter store
  with the reason, and the consumer carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial

import aiomqtt
from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from firewatch.contract import (
    EVENTS_FILTER,
    READINGS_FILTER,
    DeviceEvent,
    GatewayMessage,
    InvalidPayload,
    ReadingBatch,
    parse_message,
    shared,
    utc_now,
)
from firewatch.db import DeadLetter, ProcessedMessage, Writer
from firewatch.mqtt import BrokerAddress

log = logging.getLogger(__name__)

Handler = Callable[[list[GatewayMessage]], Awaitable[None]]
#: ``admit(message, received_at)``: the message to apply, or InvalidPayload with the reason
Admit = Callable[[GatewayMessage, datetime], GatewayMessage]


async def forget_applied(writer: Writer, consumer: str, before: datetime,
                         chunk: int = 2000) -> int:
    """Drop the record of the messages ``consumer`` applied before ``before``; how many.

    The record is there to recognise a redelivery, which comes when a consumer reconnects
    (seconds) or its broker returns (minutes, hours).  Kept for ever it would grow by a row per
    gateway message, 86 million a day at 1,000 devices polled every second, and slow every
    claim.  Deleted in small transactions, on the consumer's writer between its other
    transactions, so that the alarms written meanwhile never wait long for the database.
    """
    forgotten = 0
    while True:
        done = await writer.run(partial(_forget_some, consumer=consumer, before=before,
                                        chunk=chunk))
        forgotten += done
        if done < chunk:
            return forgotten
        await asyncio.sleep(0)


def _forget_some(session: Session, consumer: str, before: datetime, chunk: int) -> int:
    key = (ProcessedMessage.consumer, ProcessedMessage.gateway_id, ProcessedMessage.incarnation,
           ProcessedMessage.seq)
    old = (select(*key)
           .where(ProcessedMessage.consumer == consumer, ProcessedMessage.processed_at < before)
           .limit(chunk))
    return session.execute(delete(ProcessedMessage).where(tuple_(*key).in_(old))).rowcount


def claim(
    session: Session, consumer: str, messages: list[ReadingBatch | DeviceEvent]
) -> list[ReadingBatch | DeviceEvent]:
    """Record that ``consumer`` applies these messages; those it already applied are left out.

    A message is known by (gateway, incarnation of its outbox, seq): a gateway whose outbox
    was replaced numbers its messages from 1 again, under a new incarnation.  Call inside the
    transaction that applies them, so the two commit together.  One statement: the record of
    each message not applied yet goes in, and says which ones those were (INSERT ... ON
    CONFLICT DO NOTHING RETURNING).  Two replicas claiming the same message at once meet on
    the primary key: the second waits for the first's transaction, and takes the message only
    if that one rolled back.
    """
    unique: dict[tuple[str, str, int], ReadingBatch | DeviceEvent] = {}
    for message in messages:  # a message twice in one batch is applied once
        unique.setdefault((message.gateway_id, message.incarnation, message.seq), message)
    dialect = {"sqlite": sqlite, "postgresql": postgresql}[session.bind.dialect.name]
    new = {(gateway_id, incarnation, seq) for gateway_id, incarnation, seq in session.execute(
        dialect.insert(ProcessedMessage).on_conflict_do_nothing()
        .returning(ProcessedMessage.gateway_id, ProcessedMessage.incarnation,
                   ProcessedMessage.seq),
        [{"consumer": consumer, "gateway_id": g, "incarnation": i, "seq": s}
         for g, i, s in unique],
    )}
    return [m for key, m in unique.items() if key in new]


class DeadLetters:
    def __init__(self, sessions: async_sessionmaker, consumer: str) -> None:
        self.sessions = sessions
        self.consumer = consumer
        self.count = 0

    async def put(self, topic: str, payload: bytes, reason: str) -> None:
        async with self.sessions.begin() as session:
            session.add(DeadLetter(consumer=self.consumer, topic=topic, payload=payload,
                                   reason=reason))
        self.count += 1
        log.warning("%s: dead-lettered a message on %s: %s", self.consumer, topic, reason)


class GatewayMessageConsumer:
    """Hands valid gateway messages to ``handler`` in batches, acknowledging them after.

    ``max_batch=1`` (alerts) applies each message as it comes; a larger batch (ingest) takes
    what has arrived, waiting at most ``max_wait_s`` for more, so one store write carries many.
    """

    def __init__(
        self,
        name: str,
        broker: BrokerAddress,
        handler: Handler,
        dead_letters: DeadLetters,
        *,
        shared_subscription: bool,
        instance: str = "0",
        max_batch: int = 1,
        max_wait_s: float = 0.0,
        admit: Admit | None = None,
        topics: tuple[str, ...] = (READINGS_FILTER, EVENTS_FILTER),
    ) -> None:
        self.name = name
        self.broker = broker
        self.handler = handler
        self.dead_letters = dead_letters
        self.shared_subscription = shared_subscription
        self.instance = instance
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.admit = admit
        self.topics = topics
        self.connected = False
        self.handled = 0
        self.ready = asyncio.Event()

    @property
    def filters(self) -> list[str]:
        if self.shared_subscription:
            return [shared(self.name, t) for t in self.topics]
        return list(self.topics)

    async def run(self) -> None:
        delay = 0.2
        while True:
            client = self.broker.client(f"fw-{self.name}-{self.instance}", persistent=True)
            # aiomqtt has no public switch for it: the PUBACK must wait until the message's
            # effect is durable, so take acknowledgement into our own hands on paho's client.
            client._client.manual_ack_set(True)
            try:
                async with client:
                    self.connected = True
                    delay = 0.2
                    for topic in self.filters:
                        await client.subscribe(topic, qos=1)
                    self.ready.set()
                    log.info("%s subscribed to %s on %s", self.name, self.filters,
                             self.broker.url)
                    await self._consume(client)
            except* aiomqtt.MqttError as group:
                self.connected = False
                log.warning("%s: broker %s unreachable (%s); retrying in %.1f s",
                            self.name, self.broker.url, group.exceptions[0], delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def _consume(self, client: aiomqtt.Client) -> None:
        incoming = aiter(client.messages)
        while True:
            batch = await self._next_batch(client, incoming)
            await self._handle(batch)
            for message in batch:
                client._client.ack(message.mid, message.qos)

    async def _next_batch(
        self, client: aiomqtt.Client, incoming: AsyncIterator[aiomqtt.Message]
    ) -> list[aiomqtt.Message]:
        """The next message and, for a batching consumer, what else arrives within max_wait_s.

        One sleep per batch rather than one wake-up per message: paho keeps reading the socket
        meanwhile, and under load the queue is already full.  The queued messages are taken
        straight from aiomqtt's queue, whose iterator would cost a task per message.
        """
        batch = [await anext(incoming)]
        if self.max_batch > 1:
            if len(client.messages) < self.max_batch - 1:
                await asyncio.sleep(self.max_wait_s)
            queued: asyncio.Queue[aiomqtt.Message] = client._queue
            while len(batch) < self.max_batch and not queued.empty():
                batch.append(queued.get_nowait())
        return batch

    async def _handle(self, batch: list[aiomqtt.Message]) -> None:
        valid = []
        received_at = utc_now()
        for raw in batch:
            topic, payload = str(raw.topic), bytes(raw.payload)
            try:
                message = parse_message(topic, payload)
                valid.append(message if self.admit is None else self.admit(message, received_at))
            except InvalidPayload as exc:
                await self.dead_letters.put(topic, payload, exc.reason)
        if not valid:
            return
        delay = 0.1
        while True:
            try:
                await self.handler(valid)
            except Exception:
                # the store is down or busy: keep the messages unacknowledged and try again
                log.exception("%s: could not apply %d messages; retrying in %.1f s",
                              self.name, len(valid), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            self.handled += len(valid)
            return
