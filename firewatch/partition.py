"""Which gateways' messages a consumer replica takes: its partition of the site's gateways.

Replicas of a consumer (ingest, alerts) split the gateways between them, not the messages:
partition ``i`` of ``n`` takes every gateway whose id hashes to ``i`` (CRC-32 modulo ``n``, the
same on every machine and Python), and subscribes to those gateways' topics on a persistent
session of its own (client id ``fw-<consumer>-p<i>of<n>``).  Two things follow by construction:

* nothing published while a replica is away is lost: its session and subscriptions are plain
  MQTT state the broker keeps (Mosquitto writes them to its persistence file and restores them
  after a restart) and queues QoS 1 messages for.  Shared subscriptions (``$share/...``) looked
  like the way to split a stream, but Mosquitto 2.0 forgets a persistent session's shared
  subscriptions when it restarts, and the gateways, back in the same second, published their
  backlog to nobody: acknowledged by the broker, deleted from their outboxes, stored nowhere;
* every message of one gateway goes to one replica, in the order the gateway sent it.

MQTT has no wildcard for "the gateways hashing to i", so a partition subscribes to each of its
gateways' topics by name (a few filters per gateway, sent a hundred to a SUBSCRIBE packet by
firewatch.consumer); the one partition of one takes the wildcard filters, which also
cover a gateway missing from the site file (its messages are then refused downstream, with the
reason, rather than never read).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Partition:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"consumer partition {self.index} does not exist: there are "
                f"{self.count}, numbered 0 to {self.count - 1}"
            )

    def __str__(self) -> str:
        return f"p{self.index}of{self.count}"

    def owns(self, gateway_id: str) -> bool:
        return zlib.crc32(gateway_id.encode()) % self.count == self.index

    def filters(
        self, streams: Sequence[Callable[[str], str]], gateway_ids: Iterable[str]
    ) -> list[str]:
        """The topic filters of this partition: for each of ``streams`` (a function of the
        gateway id, from firewatch.contract), one per gateway it owns."""
        if self.count == 1:
            return [stream("+") for stream in streams]
        return [
            stream(gateway_id)
            for gateway_id in sorted(set(gateway_ids))
            if self.owns(gateway_id)
            for stream in streams
        ]
