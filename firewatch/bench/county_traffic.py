"""The traffic of a county's gateways under report by exception, as the capacity benchmark
publishes it (firewatch.bench.capacity, docs/benchmarks.md).

* 95 % of the devices are idle: each sends its batch once a minute (its heartbeat), at a phase
  of its own within the minute;
* 5 % change every second and send a batch each second;
* every gateway (ten devices) sends its heartbeat every 15 s (the site's default);
* one-key presses, each released a second later, every ``PRESS_EVERY_S``, each at another
  institution, and a gas detector past its ``gas_high`` set point for three seconds every
  ``BREACH_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from firewatch.bench.alarms import BUTTON, DEVICES_EACH, GAS
from firewatch.bench.replay import ReplayedGateway, normal
from firewatch.profiles import DeviceProfile

ACTIVE_SHARE = 0.05
IDLE_EVERY_S = 60
GATEWAY_HEARTBEAT_S = 15
PRESS_EVERY_S = 0.5
BREACH_EVERY_S = 2.0
SLICES = 10  # each second's messages in slices, as gateways at their own phases send them


@dataclass
class _Device:
    gateway: int  # index into the gateways
    entry: dict[str, Any]
    profile: DeviceProfile
    phase: int  # the second of the minute it sends at, when idle
    active: bool = False
    breach_until: float = 0.0


@dataclass
class Press:
    institution: str
    sent_at: float
    arrived_at: float | None = None


@dataclass
class Counts:
    readings: int = 0  # reading batches published and acknowledged by the broker
    heartbeats: int = 0
    presses: list[Press] = field(default_factory=list)
    breaches: int = 0


class Traffic:
    """The county's first ``devices`` devices as their gateways would publish them."""

    def __init__(
        self, site: dict[str, Any], profiles: dict[str, DeviceProfile], devices: int
    ) -> None:
        ids = [g["id"] for g in site["gateways"]][: max(1, devices // DEVICES_EACH)]
        self.gateways = [ReplayedGateway(g) for g in ids]
        index = {g: i for i, g in enumerate(ids)}
        chosen = [d for d in site["devices"] if d["gateway"] in index]
        rng = random.Random(1)
        self.devices = [
            _Device(index[d["gateway"]], d, profiles[d["profile"]], rng.randrange(IDLE_EVERY_S))
            for d in chosen
        ]
        for device in rng.sample(self.devices, round(ACTIVE_SHARE * len(self.devices))):
            device.active = device.profile.model != BUTTON
        # one button per institution pressed, in turn: a press and its release are two notices
        # to its robot, which takes 20 a minute
        self.buttons = [
            d for d in self.devices if d.entry["id"].endswith("-0") and d.profile.model == BUTTON
        ]
        self.gas = [d for d in self.devices if d.profile.model == GAS]
        self.rng = rng

    def second(self, n: int, now: float) -> list[tuple[int, tuple[str, bytes]]]:
        """(gateway, message) of second ``n``: active and breaching devices, the idle ones
        whose minute has come, the gateways whose heartbeat has."""
        out = []
        for d in self.devices:
            if d.active or d.breach_until > now or n % IDLE_EVERY_S == d.phase:
                readings = normal(d.profile, self.rng.uniform(-1, 1) if d.active else 0.0)
                if d.breach_until > now:
                    readings["gas_concentration"] = 60.0
                flags = {"button_pressed": False} if d.profile.model == BUTTON else {}
                out.append(
                    (d.gateway, self.gateways[d.gateway].batch(d.entry, d.profile, readings, flags))
                )
        for i, gateway in enumerate(self.gateways):
            if n % GATEWAY_HEARTBEAT_S == i % GATEWAY_HEARTBEAT_S:
                out.append((i, gateway.heartbeat()))
        self.rng.shuffle(out)  # the gateways' phases are their own
        out.sort(key=lambda item: item[0] % SLICES)  # stable: each gateway's order is kept
        return out

    def press(self, n: int, pressed: bool) -> tuple[int, dict[str, Any], tuple[str, bytes]]:
        d = self.buttons[n % len(self.buttons)]
        message = self.gateways[d.gateway].batch(
            d.entry, d.profile, normal(d.profile), {"button_pressed": pressed}
        )
        return d.gateway, d.entry, message


class Publisher:
    def __init__(self, clients: list[aiomqtt.Client]) -> None:
        self.clients = clients

    async def send(self, gateway: int, message: tuple[str, bytes]) -> None:
        topic, payload = message
        await self.clients[gateway % len(self.clients)].publish(topic, payload, qos=1)


async def drive(
    traffic: Traffic, publisher: Publisher, counts: Counts, seconds: float, measure: bool
) -> None:
    """Publish ``seconds`` of traffic, presses and breaches among it."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task] = set()

    async def send(gateway: int, message: tuple[str, bytes], heartbeat: bool) -> None:
        await publisher.send(gateway, message)
        if heartbeat:
            counts.heartbeats += 1
        else:
            counts.readings += 1

    async def presses() -> None:
        n = 0
        while True:
            gateway, entry, message = traffic.press(n, True)
            press = Press(entry["institution"], time.perf_counter())
            await send(gateway, message, False)
            if measure:
                counts.presses.append(press)
            await asyncio.sleep(PRESS_EVERY_S / 2)
            await send(gateway, traffic.press(n, False)[2], False)
            await asyncio.sleep(PRESS_EVERY_S / 2)
            n += 1

    async def breaches() -> None:
        while True:
            gas = traffic.rng.choice(traffic.gas)
            gas.breach_until = loop.time() + 3
            counts.breaches += measure
            await asyncio.sleep(BREACH_EVERY_S)

    side = [asyncio.create_task(presses()), asyncio.create_task(breaches())]
    try:
        n = 0
        while loop.time() - start < seconds:
            second_at = start + n
            messages = traffic.second(int(time.time()), loop.time())
            for s in range(SLICES):
                for gateway, message in messages[s::SLICES]:
                    task = asyncio.create_task(send(gateway, message, "/heartbeats/" in message[0]))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.sleep(max(0.0, second_at + (s + 1) / SLICES - loop.time()))
            n += 1
        await asyncio.gather(*pending)
    finally:
        for task in side:
            task.cancel()
