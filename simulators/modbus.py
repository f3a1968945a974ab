"""A simulated Modbus TCP endpoint: one pymodbus server, one unit id per simulated device.

Like a serial server in a plant room with several detectors on its RS-485 line.  Register maps
come from the devices' profiles (pymodbus's SimDevice/SimData API, the one that stays in 4.0).
Link faults are produced on the wire:

* ``offline``: the unit stops answering; the client sees a timeout, as with a dead detector;
* ``slow-replies``: answers come after ``slow_reply_s`` (a slow link that still answers);
* ``garbled``: the answer's byte count is corrupted, so the frame cannot be decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firewatch.profiles import Register, Table
from simulators.device import SimulatedDevice

#: (coils, discrete inputs, holding registers, input registers): SimDevice's table order
_TABLES = (Table.COIL, Table.DISCRETE_INPUT, Table.HOLDING_REGISTER, Table.INPUT_REGISTER)
_WRITE_FC = {Table.HOLDING_REGISTER: 16, Table.INPUT_REGISTER: 4}
MBAP_UNIT_ID = 6  # byte offset of the unit id in a Modbus TCP frame


def _span(registers: Iterable[Register]) -> tuple[int, int] | None:
    regs = list(registers)
    if not regs:
        return None
    start = min(r.address for r in regs)
    return start, max(r.address + r.count for r in regs) - start


class SimulatedEndpoint:
    def __init__(
        self, host: str, port: int, units: list[SimulatedDevice], slow_reply_s: float = 0.6
    ) -> None:
        self.host = host
        self.port = port
        self.slow_reply_s = slow_reply_s
        self.units = {u.device.unit_id: u for u in units}
        self._spans = {
            u.device.unit_id: {
                table: _span(r for r in u.profile.registers if r.table is table)
                for table in _TABLES
            }
            for u in units
        }
        self.server = ModbusTcpServer(
            [self._sim_device(u) for u in units],
            address=(host, port),
            ignore_missing_devices=True,
            trace_packet=self._garble,
        )

    def _sim_device(self, unit: SimulatedDevice) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in _TABLES:
            span = self._spans[unit.device.unit_id][table]
            if table.is_bit:
                if span is not None:
                    raise NotImplementedError(
                        f"{unit.profile.model}: simulating {table} tables is not supported yet"
                    )
                # SimDevice wants every table; an unused one gets a single dead bit
                blocks.append([SimData(0, values=[False], datatype=DataType.BITS)])
            else:
                start, count = span or (0, 1)
                blocks.append([SimData(start, values=[0] * count, datatype=DataType.REGISTERS)])

        async def link(function_code, start, address, count, registers, set_values):
            if set_values is not None:  # our own value updates always go through
                return None
            if unit.scenario == "offline":
                raise NoSuchIdException(unit.device.unit_id)  # no answer at all
            if unit.scenario == "slow-replies":
                await asyncio.sleep(self.slow_reply_s)
            return None

        return SimDevice(id=unit.device.unit_id, simdata=tuple(blocks), action=link)

    def _garble(self, sending: bool, data: bytes) -> bytes:
        if not sending or len(data) <= MBAP_UNIT_ID + 2:
            return data
        unit = self.units.get(data[MBAP_UNIT_ID])
        if unit is None or unit.scenario != "garbled":
            return data
        # claim more data bytes than the frame carries: the client cannot decode it
        pdu = bytearray(data)
        pdu[MBAP_UNIT_ID + 2] = (pdu[MBAP_UNIT_ID + 2] + 7) & 0xFF
        return bytes(pdu)

    async def start(self) -> None:
        await self.refresh(0.0)
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        await self.server.shutdown()

    async def refresh(self, now: float) -> None:
        """Write every unit's current values into its registers."""
        for unit_id, unit in self.units.items():
            readings = unit.readings(now)
            words: dict[Table, list[int]] = {}
            for table in _TABLES:
                span = self._spans[unit_id][table]
                if span is not None:
                    words[table] = [0] * span[1]
            for reg in unit.profile.registers:
                start = self._spans[unit_id][reg.table][0]
                if reg.flags:
                    raw = sum(1 << bit for bit, name in reg.flags.items() if unit.flags.get(name))
                else:
                    raw = reg.to_raw(readings.get(reg.name, 0.0))
                offset = reg.address - start
                words[reg.table][offset : offset + reg.count] = reg.encode(raw)
            for table, values in words.items():
                start = self._spans[unit_id][table][0]
                result = await self.server.context.async_setValues(
                    unit_id, _WRITE_FC[table], start, values
                )
                if isinstance(result, ExcCodes):
                    raise RuntimeError(f"simulator could not set unit {unit_id}: {result}")
