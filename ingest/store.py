"""What every time-series store offers ingest and the web app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from firewatch.contract import ReadingBatch


@dataclass(frozen=True)
class HistoryPoint:
    """One interval of a trend chart."""

    time: datetime
    mean: float
    min: float
    max: float
    count: int

    @classmethod
    def from_epoch(cls, epoch: float, mean: float, low: float, high: float, count: int):
        return cls(datetime.fromtimestamp(epoch, UTC), mean, low, high, count)


class TimeSeriesStore(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, batches: list[ReadingBatch]) -> int:
        """Store batches durably in one go; returns how many were new, or raises."""
        ...

    async def history(
        self, device_id: str, field: str, start: datetime, end: datetime, every_s: float
    ) -> list[HistoryPoint]: ...
