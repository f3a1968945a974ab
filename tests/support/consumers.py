"""Gateway message consumers run by tests: a handler that records, and consumers running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from firewatch.consumer import GatewayMessageConsumer
from firewatch.contract import GatewayMessage, readings_filter
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition


class NoDeadLetters:
    count = 0

    async def put(self, topic: str, payload: bytes, reason: str) -> None:
        raise AssertionError(f"dead letter on {topic}: {reason}")


class Collected:
    """A consumer's handler: the seq of each message it applied, by gateway, in order."""

    def __init__(self) -> None:
        self.seqs: dict[str, list[int]] = {}

    async def __call__(self, messages: list[GatewayMessage]) -> None:
        for message in messages:
            self.seqs.setdefault(message.gateway_id, []).append(message.seq)

    async def until(self, count: int) -> None:
        for _ in range(1000):
            if sum(map(len, self.seqs.values())) >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} messages expected, got {self.seqs}")


def consumer(
    broker: BrokerAddress,
    handler,
    partition: Partition = Partition(),
    gateway_ids: Sequence[str] = (),
    streams: Sequence[Callable[[str], str]] = (readings_filter,),
    name: str = "test",
) -> GatewayMessageConsumer:
    return GatewayMessageConsumer(
        name,
        broker,
        handler,
        NoDeadLetters(),
        streams=streams,
        gateway_ids=gateway_ids,
        partition=partition,
        max_batch=100,
    )


@contextlib.asynccontextmanager
async def running(*consumers: GatewayMessageConsumer) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        async with asyncio.timeout(10):
            for c in consumers:
                await c.ready.wait()
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
