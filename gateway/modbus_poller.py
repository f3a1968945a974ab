"""Polling Modbus devices: one connection per endpoint, shared by every unit id behind it.

Each device is polled at its profile's interval; its registers are read in as few requests as
the register map allows (contiguous registers merged).  A device that stops answering is
reported ``offline`` (with the reason) after the profile's number of missed polls and
``online`` again on its first answer.  Exception responses and garbled frames are counted,
never raised out of the poll loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusTcpClient

from firewatch.contract import EventType
from firewatch.profiles import DeviceProfile, Register, Table, Transport, read_blocks
from firewatch.site import Device, ModbusEndpoint

log = logging.getLogger(__name__)

#: called with (device, readings, flags) after a good poll
OnReadings = Callable[[Device, dict[str, float], dict[str, bool]], Awaitable[None]]
#: called with (device, online|offline, reason) when reachability changes
OnEvent = Callable[[Device, EventType, str], Awaitable[None]]


@dataclass
class PollStats:
    """What a technician needs to see about one device's link."""

    polls: int = 0
    answered: int = 0
    missed: int = 0
    exceptions: int = 0
    consecutive_misses: int = 0
    online: bool | None = None
    last_error: str = ""
    by_error: dict[str, int] = field(default_factory=dict)


class DeviceUnreachable(Exception):
    """No usable answer: timeout, closed connection or a frame that did not decode."""


class DeviceRefused(Exception):
    """The device answered with a Modbus exception response."""


_READERS = {
    Table.HOLDING_REGISTER: ("read_holding_registers", "registers"),
    Table.INPUT_REGISTER: ("read_input_registers", "registers"),
    Table.COIL: ("read_coils", "bits"),
    Table.DISCRETE_INPUT: ("read_discrete_inputs", "bits"),
}


def decode_registers(
    registers: list[Register], start: int, words: list[int] | list[bool]
) -> tuple[dict[str, float], dict[str, bool]]:
    """One block's raw words -> physical readings and named flags, per the profile."""
    readings: dict[str, float] = {}
    flags: dict[str, bool] = {}
    for reg in registers:
        offset = reg.address - start
        raw = reg.decode(list(words[offset : offset + reg.count]))
        if reg.flags:
            for bit, name in reg.flags.items():
                flags[name] = bool(int(raw) >> bit & 1)
        else:
            readings[reg.name] = round(reg.to_physical(raw), 6)
    return readings, flags


class EndpointPoller:
    """Polls every device behind one Modbus TCP endpoint (or serial server) over one connection."""

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        port: int,
        devices: list[tuple[Device, DeviceProfile]],
        on_readings: OnReadings,
        on_event: OnEvent,
    ) -> None:
        self.endpoint = endpoint
        self.devices = devices
        self.on_readings = on_readings
        self.on_event = on_event
        self.stats: dict[str, PollStats] = {d.id: PollStats() for d, _ in devices}
        timeout = min(p.timeout_s for _, p in devices)
        framer = (
            FramerType.RTU
            if endpoint.transport is Transport.MODBUS_RTU_OVER_TCP
            else FramerType.SOCKET
        )
        self.client = AsyncModbusTcpClient(
            endpoint.host, port=port, framer=framer, timeout=timeout, retries=0,
            reconnect_delay=0.5, reconnect_delay_max=10,
        )
        self._plans = {
            d.id: read_blocks([r for r in p.registers]) for d, p in devices
        }
        self._connect_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for device, profile in self.devices:
                    tasks.create_task(self._poll_forever(device, profile))
        finally:
            self.client.close()

    async def _ensure_connected(self) -> None:
        async with self._connect_lock:
            if not self.client.connected and not await self.client.connect():
                raise DeviceUnreachable(
                    f"cannot connect to {self.endpoint.host}:{self.client.comm_params.port}"
                )

    async def _poll_forever(self, device: Device, profile: DeviceProfile) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        this_task = asyncio.current_task()
        while True:
            await self.poll_once(device, profile)
            # Python 3.11's asyncio.wait_for (inside pymodbus) swallows a cancellation that
            # arrives as the reply does; the request is still counted, so honour it here or a
            # shutdown would wait for this loop forever.
            if this_task is not None and this_task.cancelling():
                raise asyncio.CancelledError
            next_at += profile.poll_interval_s
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (slow link): skip missed slots rather than bunch up
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def poll_once(self, device: Device, profile: DeviceProfile) -> None:
        stats = self.stats[device.id]
        stats.polls += 1
        try:
            readings, flags = await self._read(device, profile)
        except DeviceRefused as exc:
            stats.exceptions += 1
            self._count(stats, exc)
            await self._answered(device, stats)
            return
        except DeviceUnreachable as exc:
            await self._missed(device, profile, stats, exc)
            return
        await self._answered(device, stats)
        await self.on_readings(device, readings, flags)

    async def _read(
        self, device: Device, profile: DeviceProfile
    ) -> tuple[dict[str, float], dict[str, bool]]:
        readings: dict[str, float] = {}
        flags: dict[str, bool] = {}
        for attempt in range(profile.retries + 1):
            try:
                await self._ensure_connected()
                for table, start, count, registers in self._plans[device.id]:
                    method, attr = _READERS[table]
                    reply = await getattr(self.client, method)(
                        start, count=count, device_id=device.unit_id
                    )
                    if reply.isError():
                        code = getattr(reply, "exception_code", "?")
                        raise DeviceRefused(f"exception response code {code} at {start}")
                    block_readings, block_flags = decode_registers(
                        registers, start, getattr(reply, attr)
                    )
                    readings.update(block_readings)
                    flags.update(block_flags)
                return readings, flags
            except (ModbusException, OSError, asyncio.TimeoutError) as exc:
                error: Exception = exc
            except (IndexError, ValueError) as exc:  # a short or malformed frame
                error = exc
            if attempt < profile.retries:
                await asyncio.sleep(0.05 * 2**attempt)
        raise DeviceUnreachable(f"{type(error).__name__}: {error}".strip(": "))

    @staticmethod
    def _count(stats: PollStats, exc: Exception) -> None:
        stats.last_error = str(exc)
        key = str(exc).split(":")[0][:60]
        stats.by_error[key] = stats.by_error.get(key, 0) + 1

    async def _answered(self, device: Device, stats: PollStats) -> None:
        stats.answered += 1
        stats.consecutive_misses = 0
        if stats.online is not True:
            was_known = stats.online is not None
            stats.online = True
            if was_known:
                log.info("device %s answers again", device.id)
            await self.on_event(device, EventType.ONLINE, "device answers polls")

    async def _missed(
        self, device: Device, profile: DeviceProfile, stats: PollStats, exc: Exception
    ) -> None:
        stats.missed += 1
        stats.consecutive_misses += 1
        self._count(stats, exc)
        if stats.consecutive_misses >= profile.offline_after_misses and stats.online is not False:
            stats.online = False
            reason = (
                f"no answer to {stats.consecutive_misses} polls in a row from "
                f"{self.endpoint.id} unit {device.unit_id}: {exc}"
            )
            log.warning("device %s offline: %s", device.id, reason)
            await self.on_event(device, EventType.OFFLINE, reason)
