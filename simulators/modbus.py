"""A simulated Modbus endpoint: one pymodbus server, one unit id per simulated device.

Like a serial server in a plant room with several detectors on its RS-485 line, speaking Modbus
TCP or, in transparent mode, RTU frames over TCP; or like the RS-485 line itself, answering RTU
on a serial port (the far end of a null-modem pair, such as two ptys joined by socat).  Each
unit's register map is its profile's (pymodbus's SimDevice/SimData API, the one that stays in
4.0): every register is declared at its own address, which is the request address (profile
address 0 is what a client reads at 0), so an address the device does not have is refused with
exception code 2, as a real device refuses it.
Values are written with the profile's own ``Register.encode``/``to_raw``, the inverse of what the
gateway decodes.

Link faults are made on the wire, on the reply frame after pymodbus has built it:

* ``offline``: no reply leaves; the client times out, as with a dead detector;
* ``slow-replies``: the reply leaves ``slow_reply_s`` late (default 1.5 s, past the usual 1 s
  timeout), with its own transaction id, so a client that has given up discards it;
* ``garbled``: a read reply claims more data bytes than it carries, so it cannot be decoded.
  pymodbus's Modbus TCP client raises while reading it and drops the connection (then
  reconnects), which is what line noise does to it too; in RTU framing the client keeps
  waiting for the rest of the frame and times out.
* ``exception-replies``: every reply is a Modbus exception response, code
  ``EXCEPTION_CODE`` (server device failure), as from a unit whose measuring part has failed
  while its interface still answers.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable

from pymodbus import FramerType
from pymodbus.framer.rtu import FramerRTU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice
from pymodbus.transaction import TransactionManager

from firewatch.profiles import DataType, Register, Table, read_blocks
from firewatch.site import ModbusEndpoint
from simulators.device import (
    EXCEPTION_REPLIES,
    GARBLED,
    OFFLINE,
    SLOW_REPLIES,
    SimulatedDevice,
)

#: the read function code of each table; pymodbus's datastore picks the table by it
FUNCTION_CODE = {
    Table.COIL: 1,
    Table.DISCRETE_INPUT: 2,
    Table.HOLDING_REGISTER: 3,
    Table.INPUT_REGISTER: 4,
}
#: where the unit id is in a frame: after the MBAP header's tid(2) pid(2) length(2) in Modbus
#: TCP, first in RTU.  Then come the function code and, in a read reply, the byte count.
UNIT_ID_AT = {FramerType.SOCKET: 6, FramerType.RTU: 0}
#: the exception code of the ``exception-replies`` scenario: 4, server device failure
EXCEPTION_CODE = 4
#: raw values a register can hold; a reading beyond them saturates, as a sensor's output does
_RAW_RANGE = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


def _unit_id(unit: SimulatedDevice) -> int:
    """The unit's Modbus address: the site model requires one of a Modbus device."""
    assert unit.device.unit_id is not None
    return unit.device.unit_id


def _sim_device(unit: SimulatedDevice) -> SimDevice:
    """The unit's four tables, one SimData per register at the register's own address."""
    tables: dict[Table, list[SimData]] = {table: [] for table in FUNCTION_CODE}
    for reg in unit.profile.registers:
        tables[reg.table].append(
            SimData(reg.address, values=[False], datatype=SimType.BITS)
            if reg.table.is_bit
            else SimData(reg.address, values=[0] * reg.count, datatype=SimType.REGISTERS)
        )
    # SimDevice wants all four tables.  An unused register table is one invalid word (refused);
    # pymodbus has no invalid bits, so an unused bit table answers zeros at bits 0-15.
    for table, data in tables.items():
        if not data:
            data.append(SimData(0, datatype=SimType.BITS if table.is_bit else SimType.INVALID))
    return SimDevice(
        id=_unit_id(unit),
        simdata=(
            tables[Table.COIL],
            tables[Table.DISCRETE_INPUT],
            tables[Table.HOLDING_REGISTER],
            tables[Table.INPUT_REGISTER],
        ),
    )


def _raw(reg: Register, unit: SimulatedDevice) -> float:
    """What the register holds now: a status word from the flags, else the scaled reading."""
    if reg.flags:
        return sum(1 << bit for bit, name in reg.flags.items() if unit.flags[name])
    low, high = _RAW_RANGE.get(reg.type, (-math.inf, math.inf))
    return min(max(reg.to_raw(unit.readings.get(reg.name, 0.0)), low), high)


#: (connection, reply frame) -> the bytes to send now (empty: nothing)
OnReply = Callable[[TransactionManager, bytes], bytes]


class _ReplyHook:
    """A pymodbus server that passes every reply frame, with its connection, to ``on_reply``.

    pymodbus's ``trace_packet`` hook gets the bytes but not the connection, so on its own it
    could only drop or alter a reply, not send it later.  Delaying inside the datastore instead
    (an ``action`` that sleeps) is wrong in pymodbus 3.16: after the await the reply is stamped
    with the transaction id of whatever request came in meanwhile, so a client's retry would be
    answered by the reply to its first try, and a slow device would seem to answer.
    """

    _on_reply: OnReply

    def callback_new_connection(self) -> TransactionManager:
        # a mixin: the pymodbus server class after it in the MRO has the method
        connection = super().callback_new_connection()  # type: ignore[misc]
        connection.trace_packet = functools.partial(self._trace, connection)
        return connection

    def _trace(self, connection: TransactionManager, sending: bool, frame: bytes) -> bytes:
        return self._on_reply(connection, frame) if sending else frame


class _TcpServer(_ReplyHook, ModbusTcpServer):
    def __init__(
        self,
        devices: list[SimDevice],
        host: str,
        port: int,
        framer: FramerType,
        on_reply: OnReply,
    ) -> None:
        super().__init__(devices, address=(host, port), framer=framer, ignore_missing_devices=True)
        self._on_reply = on_reply


class _SerialServer(_ReplyHook, ModbusSerialServer):
    """RTU on a serial port.  Units that are not on the line stay silent, as on RS-485."""

    def __init__(self, devices: list[SimDevice], line: ModbusEndpoint, on_reply: OnReply) -> None:
        assert line.serial is not None  # the site model requires it of a serial line
        super().__init__(
            devices,
            port=line.serial,
            framer=FramerType.RTU,
            baudrate=line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=line.stopbits,
            ignore_missing_devices=True,
        )
        self._on_reply = on_reply


def _send_late(connection: TransactionManager, frame: bytes) -> None:
    if connection.transport is not None:  # the client may have hung up meanwhile
        connection.send(frame)


class SimulatedEndpoint:
    """The Modbus server of one site endpoint, answering for every unit id behind it.

    It listens on ``host``:``port``, or, given a ``serial_line`` (the endpoint's settings with
    ``serial`` naming the simulator's end of the line), answers RTU on that serial port.
    """

    def __init__(
        self,
        host: str,
        port: int,
        units: list[SimulatedDevice],
        *,
        framer: FramerType = FramerType.SOCKET,
        slow_reply_s: float = 1.5,
        serial_line: ModbusEndpoint | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.slow_reply_s = slow_reply_s
        self._unit_at = UNIT_ID_AT[FramerType.RTU if serial_line is not None else framer]
        self.units = {_unit_id(u): u for u in units}
        #: contiguous registers, written with one call per block as the gateway reads them
        self._blocks = {_unit_id(u): read_blocks(u.profile.registers) for u in units}
        devices = [_sim_device(u) for u in units]
        self.server: _TcpServer | _SerialServer = (
            _SerialServer(devices, serial_line, self._on_reply)
            if serial_line is not None
            else _TcpServer(devices, host, port, framer, self._on_reply)
        )

    def _on_reply(self, connection: TransactionManager, frame: bytes) -> bytes:
        """What goes out now for ``frame``, per its unit's link scenario."""
        byte_count_at = self._unit_at + 2
        unit = self.units.get(frame[self._unit_at]) if len(frame) > byte_count_at else None
        scenario = unit.scenario if unit is not None else None
        if scenario == OFFLINE:
            return b""
        if scenario == SLOW_REPLIES:
            asyncio.get_running_loop().call_later(self.slow_reply_s, _send_late, connection, frame)
            return b""
        if scenario == GARBLED:  # a read reply claims more data bytes than it carries
            garbled = bytearray(frame)
            garbled[byte_count_at] = (garbled[byte_count_at] + 7) & 0xFF
            return bytes(garbled)
        if scenario == EXCEPTION_REPLIES:
            return self._exception_reply(frame)
        return frame

    def _exception_reply(self, frame: bytes) -> bytes:
        """The exception response to the request ``frame`` answers: unit, function code with
        its high bit set, the code; in an MBAP header of length 3, or with the RTU CRC."""
        unit, function = frame[self._unit_at], frame[self._unit_at + 1]
        pdu = bytes([unit, function | 0x80, EXCEPTION_CODE])
        if self._unit_at == 0:  # RTU
            return pdu + FramerRTU.compute_CRC(pdu).to_bytes(2, "big")
        return frame[:4] + len(pdu).to_bytes(2, "big") + pdu

    async def write(self, unit: SimulatedDevice) -> None:
        """Put the unit's current readings and flags into its registers."""
        unit_id = _unit_id(unit)
        for table, start, _count, registers in self._blocks[unit_id]:
            words = [w for reg in registers for w in reg.encode(_raw(reg, unit))]
            values = [bool(w) for w in words] if table.is_bit else words
            await self.server.async_setValues(unit_id, FUNCTION_CODE[table], start, values)

    async def refresh(self) -> None:
        for unit in self.units.values():
            await self.write(unit)

    async def start(self) -> None:
        await self.refresh()
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        await self.server.shutdown()
