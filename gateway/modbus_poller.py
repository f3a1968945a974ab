"""Polling Modbus devices: one connection per endpoint, shared by every unit id behind it.

Each device is polled at its profile's interval; its registers are read in as few requests as
the register map allows (contiguous registers merged).  A device that fails the profile's
number of polls in a row is reported, with the reason: ``offline`` if it stopped answering,
``fault`` if it answers but unusably (Modbus exception replies, garbled frames, replies that
cannot be decoded or delivered); ``online`` again on its first good poll.  Whatever goes wrong
with one device is that device's failure, never raised out of the poll loop: the next device
is polled.  A failing device is polled with backoff (once per 2, 4, 8 ... up to
``MAX_BACKOFF_S`` of its intervals, one attempt each), so that the units sharing its line keep
their interval rather than wait out its time-outs.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict, TypeVar

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from firewatch.contract import EventType, utc_now
from firewatch.profiles import DeviceProfile, Table, Transport
from firewatch.site import Device, ModbusEndpoint
from gateway.block_decoder import BlockDecoder, block_decoders

log = logging.getLogger(__name__)

V = TypeVar("V", float, bool)

#: the longest a failing device waits between probes
MAX_BACKOFF_S = 30.0
#: Modbus exception codes (application protocol spec, 7) in the words of a reason
EXCEPTION_CODES = {
    1: "非法功能码 illegal function",
    2: "非法数据地址 illegal data address",
    3: "非法数据值 illegal data value",
    4: "从站设备故障 server device failure",
    5: "确认 acknowledge",
    6: "从站设备忙 server device busy",
    8: "存储奇偶校验错 memory parity error",
    10: "网关路径不可用 gateway path unavailable",
    11: "网关目标设备无响应 gateway target device failed to respond",
}
#: codes a serial server answers for a unit behind it that does not answer: silence, not fault
NO_ANSWER_CODES = frozenset({10, 11})


class BatchValues(Mapping[str, V]):
    """A poll's readings (or flags) as the members of their JSON object in its batch, ``json``
    (``"name":value,...``, made by ReadingBatchEncoder.members or gateway/block_decoder.py);
    read as a mapping, the values are parsed from it on first use.

    Why not a dict: the gateway itself needs only the JSON, which the decoder makes straight
    from the words read (see BlockDecoder); a dict built on every poll for whoever reads the
    values one by one (a test, a tool) would cost every poll what only they need.
    """

    __slots__ = ("json", "_parsed")

    def __init__(self, json_members: str) -> None:
        self.json = json_members
        self._parsed: dict[str, V] | None = None

    def _values(self) -> dict[str, V]:
        if self._parsed is None:
            self._parsed = json.loads(f"{{{self.json}}}")
        return self._parsed

    def __getitem__(self, name: str) -> V:
        return self._values()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())

    def __repr__(self) -> str:
        return f"BatchValues({{{self.json}}})"


#: called after a good poll with (device, readings, flags, when they were read)
OnReadings = Callable[[Device, BatchValues[float], BatchValues[bool], datetime], Awaitable[None]]
#: called with (device, online|offline, reason) when reachability changes
OnEvent = Callable[[Device, EventType, str], Awaitable[None]]


@dataclass
class PollStats:
    """What a technician needs to see about one device's link.

    ``state``: what the gateway last reported of it (online, offline, fault; "" before).
    ``consecutive_misses``: failed polls in a row, of any kind.  ``unusable``: why the last
    good reply could not be decoded or delivered ("" if it was): the next poll counts as
    failed (a reply is only known to be unusable after it was read).
    """

    polls: int = 0
    answered: int = 0
    missed: int = 0
    exceptions: int = 0
    garbled: int = 0
    consecutive_misses: int = 0
    state: str = ""
    last_error: str = ""
    unusable: str = ""
    by_error: dict[str, int] = field(default_factory=dict)

    def count_error(self, exc: Exception) -> None:
        self.last_error = str(exc)
        key = self.last_error.split(":")[0][:60]
        self.by_error[key] = self.by_error.get(key, 0) + 1


#: a poll's replies, each with the decoder of its block
RawBlocks = list[tuple[BlockDecoder, list[int] | list[bool]]]
#: decodes a poll's replies and hands them to the outbox: (device, replies, when read)
Deliver = Callable[[Device, RawBlocks, datetime], None]


def _decoded(blocks: RawBlocks, stats: PollStats) -> tuple[BatchValues[float], BatchValues[bool]]:
    """The poll's readings and flags.  A float register holding NaN or infinity (what many
    devices send for "no value") is left out and counted: the batch carries the device's other
    values, and the contract, which takes finite numbers only, is not broken by one register."""
    readings: list[str] = []
    flags: list[str] = []
    unusable: list[str] = []
    for decoder, words in blocks:
        unusable += decoder.decode(words, readings, flags)
    if unusable:
        stats.count_error(ValueError(f"not a number: {', '.join(unusable)}"))
    return BatchValues(",".join(readings)), BatchValues(",".join(flags))


class DeliveryTick:
    """Polls read in one event-loop iteration, decoded and handed to the outbox by one callback.

    Flat out, several lines' replies arrive in the same iteration; one callback per poll cost
    a handle and a trip through the loop's ready queue each.  The pollers of a gateway share
    one, so that the polls of all its lines that finished together are delivered together,
    and stamped with one time (read within microseconds of each other), which the batch
    encoder then formats once.
    """

    def __init__(self) -> None:
        self._read: list[tuple[Deliver, Device, RawBlocks]] = []

    def add(self, deliver: Deliver, device: Device, blocks: RawBlocks) -> None:
        """``deliver(device, blocks, read_at)`` soon: when the poll's next request is on the
        wire."""
        if not self._read:
            asyncio.get_running_loop().call_soon(self._deliver_all)
        self._read.append((deliver, device, blocks))

    def _deliver_all(self) -> None:
        read, self._read = self._read, []
        read_at = utc_now()
        for deliver, device, blocks in read:
            deliver(device, blocks, read_at)


class PollFailed(Exception):
    """A poll that read nothing usable.  ``event``: what it says of the device if it keeps
    failing; ``what``: the kind of failure, in the words of the reason."""

    event = EventType.FAULT
    what = "读数无法处理 unusable replies"


class DeviceUnreachable(PollFailed):
    """No answer: timeout, closed connection, or the connection could not be made."""

    event = EventType.OFFLINE
    what = "no answer"


class DeviceRefused(PollFailed):
    """The device answered with a Modbus exception response."""

    what = "异常应答 exception replies"


class DeviceGarbled(PollFailed):
    """The device answered, but with a frame that does not decode or has the wrong length."""

    what = "应答无法解析 garbled replies"


_READERS = {
    Table.HOLDING_REGISTER: ("read_holding_registers", "registers"),
    Table.INPUT_REGISTER: ("read_input_registers", "registers"),
    Table.COIL: ("read_coils", "bits"),
    Table.DISCRETE_INPUT: ("read_discrete_inputs", "bits"),
}


class _ClientOptions(TypedDict):
    """What a TCP and a serial client are both given."""

    timeout: float
    retries: int
    reconnect_delay: float
    reconnect_delay_max: float
    trace_packet: Callable[[bool, bytes], bytes]


def _client(
    endpoint: ModbusEndpoint,
    port: int,
    timeout: float,
    heard: Callable[[bool, bytes], bytes],
) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """The one connection of an endpoint: a TCP socket, or the serial port of an RS-485 line.
    ``heard`` sees every frame sent and every byte received (pymodbus's trace_packet)."""
    common: _ClientOptions = {
        "timeout": timeout,
        "retries": 0,
        "reconnect_delay": 0.5,
        "reconnect_delay_max": 10,
        "trace_packet": heard,
    }
    if endpoint.transport is Transport.MODBUS_RTU:
        assert endpoint.serial is not None  # the site model requires it
        return AsyncModbusSerialClient(
            endpoint.serial,
            framer=FramerType.RTU,
            baudrate=endpoint.baudrate,
            bytesize=endpoint.bytesize,
            parity=endpoint.parity,
            stopbits=endpoint.stopbits,
            **common,
        )
    framer = (
        FramerType.RTU if endpoint.transport is Transport.MODBUS_RTU_OVER_TCP else FramerType.SOCKET
    )
    return AsyncModbusTcpClient(endpoint.host, port=port, framer=framer, **common)


class EndpointPoller:
    """Polls every device behind one endpoint (TCP, serial server or serial line) over one
    connection, as an RS-485 master does: one request at a time per line."""

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        port: int,
        devices: list[tuple[Device, DeviceProfile]],
        on_readings: OnReadings,
        on_event: OnEvent,
        deliveries: DeliveryTick | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.deliveries = deliveries or DeliveryTick()
        self.devices = devices
        self.on_readings = on_readings
        self.on_event = on_event
        self.stats: dict[str, PollStats] = {d.id: PollStats() for d, _ in devices}
        #: whether any byte came back since the last request went out: a request that fails
        #: after some did was answered with garbage, not met with silence
        self._heard = False
        self.client = _client(endpoint, port, min(p.timeout_s for _, p in devices), self._trace)
        self._where = endpoint.serial or f"{endpoint.host}:{port}"
        #: per profile, its merged reads: (client method, start, count, reply field, decoder);
        #: one plan for all the devices sharing a profile keeps what a poll touches small and warm
        plans = {
            id(p): [
                (
                    getattr(self.client, _READERS[table][0]),
                    start,
                    count,
                    _READERS[table][1],
                    decoder,
                )
                for table, start, count, decoder in block_decoders(p.registers)
            ]
            for _, p in devices
        }
        self._plans = {d.id: plans[id(p)] for d, p in devices}
        self._connect_lock = asyncio.Lock()
        #: deliveries not yet in the outbox: future -> polls waiting on it (the outbox gives
        #: every poll of one group commit the same future)
        self._handing_over: dict[asyncio.Future[None], int] = {}
        self._undelivered = 0
        self._max_handing_over = 2 * len(devices) + 16

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if data and not sending:
            self._heard = True
        return data

    async def run(self) -> None:
        try:
            await self._poll_in_turn()
        finally:
            self.client.close()
            await asyncio.sleep(0)  # the last poll's delivery, scheduled, is made
            if self._handing_over:  # let what was read reach the outbox before it closes
                await asyncio.wait(self._handing_over)

    @property
    def phase_s(self) -> float:
        """When in its first second this line starts polling: a fixed fraction taken from its
        id.  Gateways that start together (one process running many, or a county's gateways
        back from a power cut) would otherwise poll every line at the same instant, every
        interval, and their readings would reach the broker and the alert service in bursts."""
        shortest = min((p.poll_interval_s for _, p in self.devices), default=1.0)
        return zlib.crc32(self.endpoint.id.encode()) / 2**32 * min(shortest, 1.0)

    async def _connect(self) -> None:
        async with self._connect_lock:
            if not self.client.connected and not await self.client.connect():
                raise DeviceUnreachable(f"cannot connect to {self._where}")

    async def _poll_in_turn(self) -> None:
        """Poll the devices one at a time, each when its interval comes round, as a bus master.

        One loop per line rather than a task per device: requests go out back to back with no
        hand-over of the connection between tasks, and what a poll read goes to the outbox
        while the next request is on the wire.  A device whose poll is late (slow link) is
        polled once now rather than once per missed slot; a failing one after its backoff.
        """
        loop = asyncio.get_running_loop()
        this_task = asyncio.current_task()
        start = loop.time() + self.phase_s
        due = [(start, i) for i in range(len(self.devices))]  # a heap already
        stats = [self.stats[device.id] for device, _ in self.devices]
        now = loop.time()
        while due:
            at, i = due[0]
            if at > now:
                await asyncio.sleep(at - now)
            device, profile = self.devices[i]
            await self.poll_once(device, profile, wait=False)
            # Python 3.11's asyncio.wait_for (inside pymodbus) swallows a cancellation that
            # arrives as the reply does; the request is still counted, so honour it here or a
            # shutdown would wait for this loop forever.
            if this_task is not None and this_task.cancelling():
                raise asyncio.CancelledError
            now = loop.time()
            interval = profile.poll_interval_s
            if misses := stats[i].consecutive_misses:
                interval = min(interval * 2 ** min(misses, 16), max(MAX_BACKOFF_S, interval))
            heapq.heapreplace(due, (max(at + interval, now), i))

    async def _hand_over(self, delivery: Awaitable[None], wait: bool) -> None:
        """Deliver a poll's result, or start delivering it and return (bounded)."""
        if wait:
            await asyncio.shield(delivery)  # a shared future is not cancelled for all
            return
        await self._make_room()
        self._track(asyncio.ensure_future(delivery))  # the outbox's future as it is

    async def _make_room(self) -> None:
        while self._undelivered >= self._max_handing_over:
            await asyncio.wait(self._handing_over, return_when=asyncio.FIRST_COMPLETED)

    def _track(self, future: asyncio.Future[None]) -> None:
        if future in self._handing_over:
            self._handing_over[future] += 1
        else:
            self._handing_over[future] = 1
            future.add_done_callback(self._handed_over)
        self._undelivered += 1

    def _handed_over(self, future: asyncio.Future[None]) -> None:
        """A delivery is done.  One the outbox failed to store is counted and logged there;
        it is no reason to stop polling."""
        self._undelivered -= self._handing_over.pop(future)
        if not future.cancelled():
            future.exception()  # retrieved: not "never retrieved" at exit

    def _deliver(self, device: Device, blocks: RawBlocks, read_at: datetime) -> None:
        """Decode a poll's replies and hand them to the outbox: called soon after the poll,
        when the next request is already on the wire, so that the work overlaps its round
        trip rather than adding to it.  A reply that cannot be decoded, or a batch that cannot
        be built, is the device's failure, counted at its next poll (see PollStats.unusable)."""
        stats = self.stats[device.id]
        try:
            delivery = self.on_readings(device, *_decoded(blocks, stats), read_at)
            self._track(
                delivery
                if isinstance(delivery, asyncio.Future)
                else asyncio.ensure_future(delivery)
            )
        except Exception as exc:
            if not stats.unusable:
                log.warning(
                    "device %s: a reply could not be decoded or delivered: %r", device.id, exc
                )
            stats.unusable = f"{type(exc).__name__}: {exc}"
            return
        stats.unusable = ""

    async def poll_once(self, device: Device, profile: DeviceProfile, wait: bool = True) -> None:
        """Poll one device; with ``wait`` off, return before its result is in the outbox."""
        stats = self.stats[device.id]
        stats.polls += 1
        try:
            # a failing device is probed once, not retried: the line is its neighbours' too
            blocks = await self._read(
                device, profile, 1 if stats.consecutive_misses else profile.retries + 1
            )
        except PollFailed as exc:
            await self._failed(device, profile, stats, exc, wait)
            return
        except Exception as exc:  # whatever else one device's poll raises is its own failure
            log.exception("device %s: poll failed unexpectedly", device.id)
            await self._failed(device, profile, stats, PollFailed(repr(exc)), wait)
            return
        if stats.unusable:  # the last reply was read but could not be used
            await self._failed(device, profile, stats, PollFailed(stats.unusable), wait)
        elif self._answered(stats):
            await self._came_online(device, stats, wait)
        if wait:
            self._deliver(device, blocks, utc_now())
            if self._handing_over:
                await asyncio.wait(self._handing_over)
        else:
            if self._undelivered >= self._max_handing_over:
                await self._make_room()
            self.deliveries.add(self._deliver, device, blocks)

    async def _read(self, device: Device, profile: DeviceProfile, attempts: int) -> RawBlocks:
        """The device's merged reads, each reply checked for length (decoded later)."""
        error: PollFailed = DeviceUnreachable("no attempt")
        for attempt in range(attempts):
            try:
                if not self.client.connected:
                    await self._connect()
                blocks: RawBlocks = []
                for read, start, count, attr, decoder in self._plans[device.id]:
                    self._heard = False
                    reply = await read(start, count=count, device_id=device.unit_id)
                    if reply.isError():
                        raise _refusal(reply, start)
                    words = getattr(reply, attr)
                    if len(words) < count:
                        raise DeviceGarbled(f"{len(words)} values in a reply to a read of {count}")
                    blocks.append((decoder, words))
                return blocks
            except PollFailed as exc:
                error = exc
            except (TimeoutError, ModbusException, OSError, IndexError, ValueError) as exc:
                # no reply, or one that did not decode
                text = f"{type(exc).__name__}: {exc}".strip(": ")
                error = (
                    DeviceGarbled(f"garbled reply: {text}")
                    if self._heard or isinstance(exc, IndexError | ValueError)
                    else DeviceUnreachable(text)
                )
            if isinstance(error, DeviceRefused):
                break  # the device said no: asking again gets the same answer
            if attempt + 1 < attempts:
                await asyncio.sleep(0.05 * 2**attempt)
        raise error

    @staticmethod
    def _answered(stats: PollStats) -> bool:
        """Count a good poll; True if the device was not known to be online until now."""
        stats.answered += 1
        stats.consecutive_misses = 0
        return stats.state != "online"

    async def _came_online(self, device: Device, stats: PollStats, wait: bool) -> None:
        if stats.state:
            log.info("device %s answers again (was %s)", device.id, stats.state)
        stats.state = "online"
        await self._hand_over(self.on_event(device, EventType.ONLINE, "device answers polls"), wait)

    async def _failed(
        self,
        device: Device,
        profile: DeviceProfile,
        stats: PollStats,
        exc: PollFailed,
        wait: bool,
    ) -> None:
        """Count a failed poll; after the profile's misses in a row, report the device offline
        or faulty (as the last failure says), once per change."""
        if isinstance(exc, DeviceUnreachable):
            stats.missed += 1
        elif isinstance(exc, DeviceRefused):
            stats.exceptions += 1
        elif isinstance(exc, DeviceGarbled):
            stats.garbled += 1
        stats.consecutive_misses += 1
        stats.count_error(exc)
        state = exc.event.value
        if stats.consecutive_misses >= profile.offline_after_misses and stats.state != state:
            stats.state = state
            reason = (
                f"{exc.what} to {stats.consecutive_misses} polls in a row from "
                f"{self.endpoint.id} unit {device.unit_id}: {exc}"
            )
            log.warning("device %s %s: %s", device.id, state, reason)
            await self._hand_over(self.on_event(device, exc.event, reason), wait)


def _refusal(reply: object, start: int) -> DeviceRefused | DeviceUnreachable:
    """A Modbus exception response as the failure it is: a serial server's "no answer from
    the unit" codes are silence, any other code the device refusing."""
    code = getattr(reply, "exception_code", None)
    meaning = EXCEPTION_CODES.get(code, "?") if isinstance(code, int) else "?"
    text = f"exception code {code} ({meaning}) at register {start}"
    return DeviceUnreachable(text) if code in NO_ANSWER_CODES else DeviceRefused(text)
