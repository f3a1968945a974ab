"""The ingest service: gateway reading batches from the broker into the time-series store.

Messages are taken in batches (up to ``max_batch``, waiting at most ``max_wait_s``) and written
in one store request, then acknowledged.  While the store fails they are acknowledged into the
disk spool instead, and a drainer writes the spool into the store once it answers again.
With the SQLite store, ingest also runs its compaction (retention and downsampling).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from firewatch.consumer import Admit, DeadLetters, GatewayMessageConsumer
from firewatch.contract import GatewayMessage, ReadingBatch
from firewatch.mqtt import BrokerAddress
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
        shared_subscription: bool,
        instance: str = "0",
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
        self.consumer = GatewayMessageConsumer(
            "ingest", broker, self._apply, dead_letters,
            shared_subscription=shared_subscription, instance=instance,
            max_batch=max_batch, max_wait_s=max_wait_s, admit=admit,
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
                self.store_available = False
                log.warning("time-series store %s failed (%s): spooling to disk",
                            self.store.name, exc)
        await self.spool.put(batches)
        self._spooled.set()

    def _count(self, offered: int, new: int) -> None:
        self.written += new
        self.duplicates += offered - new

    async def _drain(self) -> None:
        delay = 0.5
        if self.spool.size:
            self._spooled.set()  # left over from before a restart
        while True:
            await self._spooled.wait()
            rows = await self.spool.oldest(DRAIN_CHUNK)
            if not rows:
                self._spooled.clear()
                continue
            try:
                new = await self.store.write([batch for _, batch in rows])
            except Exception as exc:
                log.info("store still failing (%s); %d batches spooled, retry in %.1f s",
                         exc, self.spool.size, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            await self.spool.remove_through(rows[-1][0])
            self._count(len(rows), new)
            if not self.store_available:
                self.store_available = True
                log.info("time-series store %s is back; catching up", self.store.name)
            delay = 0.5

    async def run(self) -> None:
        await self.spool.open()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.consumer.run())
                tasks.create_task(self._drain())
                if self.compactor is not None:
                    tasks.create_task(self.compactor.run())
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
