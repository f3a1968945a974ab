"""The ingest service: gateway reading batches from the broker into the time-series store.

Messages are taken in batches (up to ``max_batch``, waiting at most ``max_wait_s``) and written
in one store request, then acknowledged.  While the store fails they are acknowledged into the
disk spool instead, and a drainer writes the spool into the store once it answers again.
With the SQLite store, ingest also runs its compaction (retention and downsampling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from firewatch.consumer import Admit, GatewayMessageConsumer, Isolation
from firewatch.contract import (
    GatewayMessage,
    ReadingBatch,
    events_filter,
    readings_filter,
    readings_topic,
)
from firewatch.dead_letters import DeadLetters
from firewatch.faults import Fault, classify, reason_of
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.supervise import Job, supervise
from ingest.retention import SqliteCompactor
from ingest.spool import Spool
from ingest.store import TimeSeriesStore

log = logging.getLogger(__name__)

DRAIN_CHUNK = 5000


class IngestService:
    def __init__(
        self,
        store: TimeSeriesStore,
        spool: Spool,
        broker: BrokerAddress,
        dead_letters: DeadLetters,
        *,
        gateway_ids: Iterable[str] = (),
        partition: Partition = Partition(),
        max_batch: int = 5000,
        max_wait_s: float = 0.05,
        compactor: SqliteCompactor | None = None,
        admit: Admit | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.compactor = compactor
        self.written = 0
        self.duplicates = 0
        self.store_available = True
        self._spooled = asyncio.Event()
        self._from_spool = Isolation(
            f"ingest spool -> {store.name}",
            self._write_spooled,
            self._set_aside,
            key=lambda row: row[0],
        )
        self.consumer = GatewayMessageConsumer(
            "ingest",
            broker,
            self._apply,
            dead_letters,
            streams=(readings_filter, events_filter),
            gateway_ids=gateway_ids,
            partition=partition,
            max_batch=max_batch,
            max_wait_s=max_wait_s,
            admit=admit,
        )

    async def _apply(self, messages: list[GatewayMessage]) -> None:
        # reachability events are the alert service's business
        batches = [m for m in messages if isinstance(m, ReadingBatch)]
        if not batches:
            return
        if self.spool.size == 0:
            try:
                self._count(len(batches), await self.store.write(batches))
                return
            except Exception as exc:
                if classify(exc) is not Fault.TRANSIENT:
                    raise  # a batch refused for its content: the consumer finds and sets it aside
                self.store_available = False
                log.warning(
                    "time-series store %s failed (%s): spooling to disk",
                    self.store.name,
                    reason_of(exc),
                )
        await self.spool.put(batches)
        self._spooled.set()

    def _count(self, offered: int, new: int) -> None:
        self.written += new
        self.duplicates += offered - new

    async def _drain(self) -> None:
        """Write the spool into the store, oldest first, once it answers again.

        The store away keeps the rows spooled and tried again; a batch it refuses for good (a
        4xx, an overflowing value) is dead-lettered with the reason, so that it does not hold
        up the batches after it (see ``firewatch.consumer.Isolation``).
        """
        if self.spool.size:
            self._spooled.set()  # left over from before a restart
        while True:
            await self._spooled.wait()
            rows = await self.spool.oldest(DRAIN_CHUNK)
            if not rows:
                self._spooled.clear()
                continue
            await self._from_spool(await self._readable(rows))
            await self.spool.remove_through(rows[-1][0])
            if not self.store_available:
                self.store_available = True
                log.info("time-series store %s is back; catching up", self.store.name)

    async def _readable(self, rows: list[tuple[int, bytes]]) -> list[tuple[int, ReadingBatch]]:
        """The spooled batches that still read; a row that does not is dead-lettered."""
        readable = []
        for row_id, data in rows:
            try:
                readable.append((row_id, ReadingBatch.model_validate_json(data)))
            except Exception as exc:
                await self.consumer.dead_letters.put(
                    f"ingest spool row {row_id}",
                    data,
                    f"spooled batch no longer reads: {reason_of(exc)}",
                    type(exc).__name__,
                )
        return readable

    async def _write_spooled(self, rows: list[tuple[int, ReadingBatch]]) -> None:
        self._count(len(rows), await self.store.write([batch for _, batch in rows]))

    async def _set_aside(self, row: tuple[int, ReadingBatch], reason: str, kind: str) -> None:
        batch = row[1]
        await self.consumer.dead_letters.put(
            readings_topic(batch.gateway_id, batch.device_id),
            batch.to_bytes(),
            f"refused by the time-series store {self.store.name}: {reason}",
            kind,
        )

    async def run(self) -> None:
        await self.spool.open()
        jobs: dict[str, Job] = {
            "consumer": self.consumer.run,
            "drain": self._drain,
            "dead-letter-retention": self.consumer.dead_letters.expire,
        }
        if self.compactor is not None:
            jobs["compaction"] = self.compactor.run
        try:
            await supervise(jobs)
        finally:
            await self.spool.close()

    def status(self) -> dict[str, Any]:
        return {
            "store": self.store.name,
            "store_available": self.store_available,
            "broker_connected": self.consumer.connected,
            "batches_written": self.written,
            "duplicates_dropped": self.duplicates,
            "spooled": self.spool.size,
            "dead_letters": self.consumer.dead_letters.count,
        }
