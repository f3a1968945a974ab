"""The ingest service: gateway reading batches from the broker into the time-series store."""

from __future__ import annotations

import logging
from typing import Any

from firewatch.consumer import DeadLetters, GatewayMessageConsumer
from firewatch.contract import DeviceEvent, ReadingBatch
from firewatch.mqtt import BrokerAddress
from ingest.store import TimeSeriesStore

log = logging.getLogger(__name__)


class IngestService:
    def __init__(
        self,
        store: TimeSeriesStore,
        broker: BrokerAddress,
        dead_letters: DeadLetters,
        *,
        shared_subscription: bool,
        instance: str = "0",
    ) -> None:
        self.store = store
        self.written = 0
        self.duplicates = 0
        self.consumer = GatewayMessageConsumer(
            "ingest", broker, self._apply, dead_letters,
            shared_subscription=shared_subscription, instance=instance,
        )

    async def _apply(self, message: ReadingBatch | DeviceEvent) -> None:
        if not isinstance(message, ReadingBatch):
            return  # reachability events are the alert service's business
        if await self.store.write(message):
            self.written += 1
        else:
            self.duplicates += 1

    async def run(self) -> None:
        await self.consumer.run()

    def status(self) -> dict[str, Any]:
        return {
            "store": self.store.name,
            "broker_connected": self.consumer.connected,
            "batches_written": self.written,
            "duplicates_dropped": self.duplicates,
            "dead_letters": self.consumer.dead_letters.count,
        }
