"""A light publisher: many gateways' traffic as contract messages, without Modbus or gateways.

In the field the gateways run at the institutions; what reaches the central side (broker,
ingest, alert service, web) is their messages.  This module makes those messages directly with
firewatch.contract, each gateway a stream of its own (an incarnation, sequence numbers from 1),
so that one process can stand in for a thousand gateways: the capacity benchmark and the
scale-out test drive the central side with it.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from firewatch.contract import (
    DeviceKind,
    GatewayHeartbeat,
    ReadingBatch,
    heartbeat_topic,
    readings_topic,
    utc_now,
)
from firewatch.profiles import DeviceProfile


@dataclass
class ReplayedGateway:
    """One gateway's stream: its messages numbered in the order they are made."""

    gateway_id: str
    incarnation: str = field(default_factory=lambda: secrets.token_hex(8))
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def batch(
        self,
        device: dict[str, Any],
        profile: DeviceProfile,
        readings: dict[str, float],
        flags: dict[str, bool] | None = None,
        ts: datetime | None = None,
    ) -> tuple[str, bytes]:
        """(topic, payload) of a reading batch of ``device`` (a site file's device entry)."""
        message = ReadingBatch(
            gateway_id=self.gateway_id,
            incarnation=self.incarnation,
            seq=next(self._seq),
            device_id=device["id"],
            institution_id=device["institution"],
            kind=DeviceKind(profile.kind),
            ts=ts or utc_now(),
            profile=profile.model,
            readings=readings,
            flags=flags or {},
        )
        return readings_topic(self.gateway_id, device["id"]), message.to_bytes()

    def heartbeat(self) -> tuple[str, bytes]:
        message = GatewayHeartbeat(
            gateway_id=self.gateway_id,
            incarnation=self.incarnation,
            seq=next(self._seq),
            ts=utc_now(),
        )
        return heartbeat_topic(self.gateway_id), message.to_bytes()


def normal(profile: DeviceProfile, jitter: float = 0.0) -> dict[str, float]:
    """A device's usual readings (its profile's simulation), moved by ``jitter`` of its noise."""
    noise = profile.simulation.noise
    return {
        name: round(value + jitter * noise.get(name, 0.0), 2)
        for name, value in profile.simulation.normal.items()
    }


def presses(
    gateway: ReplayedGateway,
    button: dict[str, Any],
    profile: DeviceProfile,
    count: int,
    start: datetime,
) -> list[tuple[str, bytes]]:
    """``count`` presses of a one-key button, each followed by its release, a second apart."""
    steps = [
        gateway.batch(
            button,
            profile,
            normal(profile),
            {"button_pressed": n % 2 == 0},
            start + timedelta(seconds=n),
        )
        for n in range(2 * count)
    ]
    return steps
