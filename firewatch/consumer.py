"""Consuming gateway messages: subscribe, validate, dead-letter, and acknowledge only when done.

Ingest and alerts both consume the gateways' messages.  This module is what they share:

* a persistent MQTT session (clean_session off) with plain subscriptions, one per partition
  of the site's gateways (firewatch.partition), so that QoS 1 messages published while the
  consumer is down, or while the broker restarts, wait on the broker for it;
* *manual* acknowledgement: the PUBACK goes back only after the handler has made the message's
  effect durable, so a crash in between means redelivery, never loss;
* payloads that break the contract, or that the consumer's admission check refuses (another
  gateway's device, a time far off: see ``firewatch.admission``), and messages whose own
  content makes the handler fail go to the dead-letter store with the reason, and the
  consumer carries on; only a database or store away is waited for (``firewatch.faults``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar, cast

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import CursorResult, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from firewatch.contract import (
    DeviceEvent,
    GatewayMessage,
    InvalidPayload,
    ReadingBatch,
    parse_message,
    utc_now,
)
from firewatch.db import ProcessedMessage, Writer
from firewatch.dead_letters import DeadLetters
from firewatch.faults import Fault, classify, reason_of
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[list[GatewayMessage]], Awaitable[None]]
#: ``admit(message, received_at)``: the message to apply, or InvalidPayload with the reason
Admit = Callable[[GatewayMessage, datetime], GatewayMessage]
#: topic filters per SUBSCRIBE packet: far below any broker's packet limit (EMQX: 1 MiB)
FILTERS_PER_SUBSCRIBE = 100


async def forget_applied(writer: Writer, consumer: str, before: datetime, chunk: int = 2000) -> int:
    """Drop the record of the messages ``consumer`` applied before ``before``; how many.

    The record is there to recognise a redelivery, which comes when a consumer reconnects
    (seconds) or its broker returns (minutes, hours).  Kept for ever it would grow by a row per
    gateway message, 86 million a day at 1,000 devices polled every second, and slow every
    claim.  Deleted in small transactions, on the consumer's writer between its other
    transactions, so that the alarms written meanwhile never wait long for the database.
    """
    forgotten = 0
    while True:
        done = await writer.run(
            partial(_forget_some, consumer=consumer, before=before, chunk=chunk)
        )
        forgotten += done
        if done < chunk:
            return forgotten
        await asyncio.sleep(0)


def _forget_some(session: Session, consumer: str, before: datetime, chunk: int) -> int:
    key = (
        ProcessedMessage.consumer,
        ProcessedMessage.gateway_id,
        ProcessedMessage.incarnation,
        ProcessedMessage.seq,
    )
    old = (
        select(*key)
        .where(ProcessedMessage.consumer == consumer, ProcessedMessage.processed_at < before)
        .limit(chunk)
    )
    # a DELETE's result is a CursorResult; Session.execute is annotated with the base class
    deleted = cast(
        CursorResult[Any], session.execute(delete(ProcessedMessage).where(tuple_(*key).in_(old)))
    )
    return deleted.rowcount


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
    connection = session.connection()
    new = {
        (gateway_id, incarnation, seq)
        for gateway_id, incarnation, seq in connection.execute(
            _CLAIMS[connection.dialect.name],
            [
                {"consumer": consumer, "gateway_id": g, "incarnation": i, "seq": s}
                for g, i, s in unique
            ],
        )
    }
    return [m for key, m in unique.items() if key in new]


def _claim_statement(dialect: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING of ``dialect``, on the table itself (Core):
    the ORM's bulk insert cost a quarter of an alert transaction's CPU."""
    table = ProcessedMessage.__table__
    return (
        dialect.insert(table)
        .on_conflict_do_nothing()
        .returning(table.c.gateway_id, table.c.incarnation, table.c.seq)
    )


#: per dialect name, built once
_CLAIMS = {"sqlite": _claim_statement(sqlite), "postgresql": _claim_statement(postgresql)}


#: tries of a message whose handler fails with an error neither transient nor of its content,
#: before it is dead-lettered: a bug that fails one message must not hold up the stream
MAX_ATTEMPTS = 5


class Isolation(Generic[T]):
    """Applies items in batches until each is applied or set aside: a poison item found and
    set aside with its reason, a bad day waited out.

    A transient error (database or store away) is retried with backoff, the items held, for as
    long as it lasts: nothing is lost to a bad day.  Any other error splits the batch in halves
    to find the item(s) it comes from: an item that fails alone with an error of its content
    is set aside at once, one that fails with an unknown error after ``MAX_ATTEMPTS`` tries;
    the others are applied.  ``apply`` must apply a batch all or nothing, or be idempotent.
    """

    def __init__(
        self,
        name: str,
        apply: Callable[[list[T]], Awaitable[None]],
        set_aside: Callable[[T, str, str], Awaitable[None]],
        key: Callable[[T], Hashable],
    ) -> None:
        self.name = name
        self.apply = apply
        self.set_aside = set_aside  # (item, reason, reason class)
        self.key = key
        #: failed tries of an item with an unknown error
        self._attempts: dict[Hashable, int] = {}

    async def __call__(self, items: list[T]) -> None:
        if not items:
            return
        delay = 0.1
        while True:
            try:
                await self.apply(items)
            except Exception as exc:
                fault = classify(exc)
                if fault is Fault.TRANSIENT:
                    log.warning(
                        "%s: could not apply %d items (%s); retrying in %.1f s",
                        self.name,
                        len(items),
                        reason_of(exc),
                        delay,
                    )
                elif len(items) > 1:
                    half = len(items) // 2
                    await self(items[:half])
                    await self(items[half:])
                    return
                elif await self._gave_up(items[0], fault, exc):
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            if self._attempts:
                for item in items:
                    self._attempts.pop(self.key(item), None)
            return

    async def _gave_up(self, item: T, fault: Fault, exc: Exception) -> bool:
        """Count a failed try of ``item`` alone; set it aside if that was its last."""
        key = self.key(item)
        tries = self._attempts.pop(key, 0) + 1
        if fault is Fault.CONTENT or tries >= MAX_ATTEMPTS:
            log.error(
                "%s: an item fails to apply after %d tries; set aside",
                self.name,
                tries,
                exc_info=exc,
            )
            await self.set_aside(
                item, f"not applied after {tries} tries: {reason_of(exc)}", type(exc).__name__
            )
            return True
        if len(self._attempts) >= 10_000:  # tries of items never seen again
            self._attempts.clear()
        self._attempts[key] = tries
        log.warning(
            "%s: an item failed alone (%s); try %d of %d",
            self.name,
            reason_of(exc),
            tries,
            MAX_ATTEMPTS,
        )
        return False


@dataclass
class _Item:
    """A valid message with what its dead letter would keep."""

    message: GatewayMessage
    topic: str
    payload: bytes


class GatewayMessageConsumer:
    """Hands valid gateway messages to ``handler`` in batches, acknowledging them after.

    It reads ``streams`` (topic filters of a gateway id from firewatch.contract: readings,
    events, heartbeats) of the gateways ``partition`` owns among ``gateway_ids``, on the
    persistent session ``fw-<name>-<partition>``.  ``max_batch=1`` applies each message as it
    comes; a larger batch (ingest) takes what has arrived, waiting at most ``max_wait_s`` for
    more, so one store write carries many.
    """

    def __init__(
        self,
        name: str,
        broker: BrokerAddress,
        handler: Handler,
        dead_letters: DeadLetters,
        *,
        streams: Sequence[Callable[[str], str]],
        gateway_ids: Iterable[str] = (),
        partition: Partition = Partition(),
        max_batch: int = 1,
        max_wait_s: float = 0.0,
        admit: Admit | None = None,
    ) -> None:
        self.name = name
        self.broker = broker
        self.handler = handler
        self.dead_letters = dead_letters
        self.partition = partition
        self.filters = partition.filters(streams, gateway_ids)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.admit = admit
        self.connected = False
        self.handled = 0
        self.ready = asyncio.Event()
        # a message's tries are kept by a hash, not by its payload, which may be megabytes
        self._isolation = Isolation(
            name, self._apply, self._dead_letter, key=lambda item: hash((item.topic, item.payload))
        )

    @property
    def client_id(self) -> str:
        """One per partition, never per host or container: the broker queues for a partition
        while it is away, and a replacement replica takes its session over."""
        return f"fw-{self.name}-{self.partition}"

    async def run(self) -> None:
        if not self.filters:
            log.warning(
                "%s %s: no gateway of the site falls in this partition; it reads nothing",
                self.name,
                self.partition,
            )
        delay = 0.2
        while True:
            client = self.broker.client(self.client_id, persistent=True)
            # aiomqtt has no public switch for it: the PUBACK must wait until the message's
            # effect is durable, so take acknowledgement into our own hands on paho's client.
            client._client.manual_ack_set(True)
            try:
                async with client, asyncio.TaskGroup() as tasks:
                    self.connected = True
                    delay = 0.2
                    # messages first: what the broker kept for this session comes before the
                    # SUBACK, and amqtt answers the SUBSCRIBE only once those are acknowledged
                    # (or, 5 s later, given up on)
                    tasks.create_task(self._consume(client))
                    await self._subscribe(client)
            except* aiomqtt.MqttError as group:
                self.connected = False
                log.warning(
                    "%s: broker %s unreachable (%s); retrying in %.1f s",
                    self.name,
                    self.broker.url,
                    group.exceptions[0],
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Subscribe again on every connection: the session may be new (first start, a broker
        that lost it), and subscribing again to what a session has is harmless."""
        for start in range(0, len(self.filters), FILTERS_PER_SUBSCRIBE):
            chunk = self.filters[start : start + FILTERS_PER_SUBSCRIBE]
            # paho-mqtt 2 answers with reason codes; aiomqtt's annotation also allows paho 1's
            # granted QoS numbers
            granted = cast(list[ReasonCode], await client.subscribe([(f, 1) for f in chunk]))
            refused = [f for f, code in zip(chunk, granted, strict=True) if code.is_failure]
            if refused:
                log.error(
                    "%s: broker %s refused the subscriptions %s (its ACL?): those "
                    "gateways' messages are not read",
                    self.name,
                    self.broker.url,
                    refused,
                )
        self.ready.set()
        log.info(
            "%s %s subscribed to %d topic filters (%s) on %s as %s",
            self.name,
            self.partition,
            len(self.filters),
            ", ".join(self.filters[:3]) + (", ..." if len(self.filters) > 3 else ""),
            self.broker.url,
            self.client_id,
        )

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
        """Apply or dead-letter every message of ``batch``; return only when each is one or the
        other, so that the caller may acknowledge them all.

        A payload that does not parse, whatever the parser raises, is dead-lettered with the
        reason.  The valid ones go to the handler together (see :meth:`_apply`).
        """
        valid = []
        received_at = utc_now()
        for raw in batch:
            topic, payload = str(raw.topic), bytes(raw.payload)
            try:
                message = parse_message(topic, payload)
                if self.admit is not None:
                    message = self.admit(message, received_at)
                valid.append(_Item(message, topic, payload))
            except InvalidPayload as exc:
                await self.dead_letters.put(topic, payload, exc.reason)
            except Exception as exc:  # hostile input the parser or the check did not foresee
                await self.dead_letters.put(
                    topic,
                    payload,
                    f"payload not readable or not checkable: {reason_of(exc)}",
                    type(exc).__name__,
                )
        await self._isolation(valid)

    async def _apply(self, items: list[_Item]) -> None:
        await self.handler([item.message for item in items])
        self.handled += len(items)

    async def _dead_letter(self, item: _Item, reason: str, reason_class: str) -> None:
        await self.dead_letters.put(item.topic, item.payload, reason, reason_class)
