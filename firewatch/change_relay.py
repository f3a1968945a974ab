"""Change notices over the broker: how a web replica's live pages learn what the alert service,
running in another process, committed.

Scale-out goes through MQTT, not a cluster of our own.  The alert service's hub
(firewatch.hub) decides what a change is, exactly as the web app's hub does in ``firewatch up``;
the publisher puts each change on ``firewatch/v1/changes/<institution>`` (QoS 1), and each web
replica's listener, on a plain subscription (not a shared one: every replica must see every
change), hands it to that replica's hub, which pushes it to the pages.

Neither keeps a session on the broker: what a listener misses while it is away is not replayed
but made good by a ``resync`` on every (re)subscription, which has the pages reload.  A
publisher that falls too far behind (its hub queue overflowed) publishes a ``resync`` itself.

Each notice is handled on its own: one the publisher cannot shape or serialise, or the listener
cannot take, is set aside (``ChangeHub.failed``, the listener also dead-letters it) and the
next one goes through.  A notice the broker will not take (it drops the connection, e.g. over its
packet size limit) is tried ``PUBLISH_TRIES`` times on live connections, then set aside and
replaced by a ``resync``, so the pages reload rather than miss it and the notices behind it flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from firewatch.contract import (
    CHANGES_FILTER,
    ChangeKind,
    ChangeNotice,
    InvalidPayload,
    change_topic,
    parse_change,
)
from firewatch.dead_letters import DeadLetters
from firewatch.hub import RESYNC, Change, ChangeHub
from firewatch.mqtt import BrokerAddress

log = logging.getLogger(__name__)

#: publish attempts on a live connection before a notice is set aside for a ``resync``
PUBLISH_TRIES = 3
#: how long one attempt waits for the broker's acknowledgement: a broker that dropped the
#: connection over a notice does not fail the attempt, it leaves it unanswered
PUBLISH_TIMEOUT_S = 5.0


class NoticeRefused(Exception):
    """The broker took a change notice on none of its tries."""


@dataclass
class _Unacknowledged:
    """A notice taken from the hub that the broker has not acknowledged yet."""

    topic: str
    payload: bytes
    tries: int = 0


def notice_of(change: Change) -> ChangeNotice:
    return ChangeNotice(
        kind=ChangeKind(change.kind), institution_id=change.institution_id, data=change.data
    )


def change_of(notice: ChangeNotice) -> Change:
    if notice.kind is ChangeKind.RESYNC:
        return RESYNC
    return Change(notice.kind.value, notice.institution_id, notice.data)


class _Relay:
    """One broker connection, re-established with backoff for as long as the relay runs."""

    role = ""

    def __init__(self, hub: ChangeHub, broker: BrokerAddress, client_id: str) -> None:
        self.hub = hub
        self.broker = broker
        self.client_id = client_id
        self.connected = False
        self.relayed = 0

    async def _connected(self, session: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
        """Run ``session`` on a live connection; reconnect when the broker drops it."""
        delay = 0.2
        while True:
            try:
                async with self.broker.client(self.client_id) as client:
                    self.connected = True
                    delay = 0.2
                    await session(client)
                    return
            except aiomqtt.MqttError as exc:
                log.warning(
                    "change %s: broker %s unreachable (%s); retrying in %.1f s",
                    self.role,
                    self.broker.url,
                    exc,
                    delay,
                )
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    def status(self) -> dict[str, Any]:
        return {"broker_connected": self.connected, f"notices_{self.role}": self.relayed}


class ChangePublisher(_Relay):
    """In the alert service's process: each change its hub sees committed, on the broker."""

    role = "published"

    def __init__(
        self,
        hub: ChangeHub,
        broker: BrokerAddress,
        client_id: str,
        publish_timeout_s: float = PUBLISH_TIMEOUT_S,
    ) -> None:
        super().__init__(hub, broker, client_id)
        self.publish_timeout_s = publish_timeout_s

    async def run(self) -> None:
        # subscribed to the hub before connecting: what commits meanwhile waits in the queue
        async with self.hub.subscribe() as subscription:
            changes = aiter(subscription)
            pending: list[_Unacknowledged] = []  # at most one

            async def publish(client: aiomqtt.Client) -> None:
                while True:
                    if not pending:
                        change = await anext(changes, None)
                        if change is None:
                            return  # the hub closed
                        try:
                            pending.append(_shaped(change))
                        except Exception as exc:  # a kind the contract lacks, a value JSON lacks
                            self.hub.failed("publish", exc)
                            continue
                    notice = pending[0]
                    if notice.tries >= PUBLISH_TRIES:
                        self._set_aside(pending)
                        continue
                    notice.tries += 1
                    await client.publish(
                        notice.topic, notice.payload, qos=1, timeout=self.publish_timeout_s
                    )
                    pending.clear()
                    self.relayed += 1

            log.info("publishing change notices to %s", self.broker.url)
            await self._connected(publish)

    def _set_aside(self, pending: list[_Unacknowledged]) -> None:
        """Give up on a notice the broker keeps refusing; the pages reload instead."""
        refused = pending.pop()
        self.hub.failed(
            "publish",
            NoticeRefused(
                f"the broker took the notice on {refused.topic} ({len(refused.payload)} bytes) "
                f"on none of {refused.tries} tries"
            ),
        )
        resync = _shaped(RESYNC)
        if refused.topic != resync.topic:
            pending.append(resync)


def _shaped(change: Change) -> _Unacknowledged:
    notice = notice_of(change)
    return _Unacknowledged(change_topic(notice), notice.to_bytes())


class ChangeListener(_Relay):
    """In a web replica: the alert service's change notices, handed to this replica's hub.

    A notice that breaks the contract goes to the dead-letter store, as a gateway message does.
    """

    role = "received"

    def __init__(
        self, hub: ChangeHub, broker: BrokerAddress, client_id: str, dead_letters: DeadLetters
    ) -> None:
        super().__init__(hub, broker, client_id)
        self.dead_letters = dead_letters
        self.subscribed = False

    async def run(self) -> None:
        await self._connected(self._listen)

    async def _listen(self, client: aiomqtt.Client) -> None:
        await client.subscribe(CHANGES_FILTER, qos=1)
        self.subscribed = True
        try:
            self.hub.publish(RESYNC)  # nothing missed while away is replayed: pages reload
            log.info("web: following change notices on %s", self.broker.url)
            async for message in client.messages:
                topic, payload = str(message.topic), bytes(message.payload)
                try:
                    self.hub.publish(change_of(parse_change(topic, payload)))
                except InvalidPayload as exc:
                    await self._dead_letter(topic, payload, exc.reason)
                    continue
                except Exception as exc:
                    self.hub.failed("receive", exc)
                    await self._dead_letter(topic, payload, f"{type(exc).__name__}: {exc}")
                    continue
                self.relayed += 1
        finally:
            self.subscribed = False

    async def _dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep a refused notice; one that cannot even be kept is logged, and the next comes."""
        try:
            await self.dead_letters.put(topic, payload, reason)
        except Exception as exc:
            self.hub.failed("dead-letter", exc)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "subscribed": self.subscribed}
