"""Decoding a merged read's replies, compiled once per register block."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from firewatch.profiles import DataType, Register, Table

_SIXTEEN_BIT = frozenset({DataType.INT16, DataType.UINT16})
#: per (scale, offset): a 16-bit register's raw number -> its physical value, as seen so far
_SCALED_16: dict[tuple[float, float], dict[int | float | bool, float]] = {}


class BlockDecoder:
    """One merged read's raw words -> readings and flags, worked out once per block.

    The gateway decodes every poll of every device, so what :meth:`Register.decode` looks up
    per call (type, orders, width, scale) is settled here once.  A block of registers in the
    wire's usual big-endian orders is unpacked by one precompiled ``struct`` call; other
    layouts (little-endian orders, overlapping registers, bits) go register by register
    through :meth:`Register.decode`.  Either way the values are those of
    :meth:`Register.decode` and :meth:`Register.to_physical`, rounded to 6 decimals.

    ``round(..., 6)`` was a third of a poll's decoding, so a scaled 16-bit register's values are
    remembered in a table shared by every register of that scale and offset: it holds at most
    the 65,536 raw numbers such a register has, and a fleet's readings repeat.
    """

    def __init__(self, table: Table, start: int, count: int, registers: list[Register]) -> None:
        ordered = sorted(registers, key=lambda r: r.address)
        self._count = count
        self._registers = [(reg, reg.address - start) for reg in ordered]
        self._words = struct.Struct(f">{count}H")
        self._block = None if table.is_bit else self._compile(ordered, start)
        # by what becomes of the raw number (i: its place in the block's raw numbers); an
        # unscaled integer's float needs no rounding: round(..., 6) would change nothing
        self._scaled: list[tuple[str, int, float, float]] = []
        self._scaled_16: list[tuple[str, int, dict[int | float | bool, float], float, float]] = []
        self._plain: list[tuple[str, int]] = []
        self._status: list[tuple[int, list[tuple[str, int]]]] = []
        #: whether a value can come out NaN or infinite (a float register, or an absurd scale);
        #: the poller looks for such values only in blocks that can hold them
        self.may_be_unfinite = any(
            r.type is DataType.FLOAT32
            or not math.isfinite(abs(r.scale) * 2.0**32 + abs(r.offset))
            for r in ordered
        )
        for i, r in enumerate(ordered):
            if r.flags:
                self._status.append((i, [(flag, 1 << bit) for bit, flag in r.flags.items()]))
            elif r.type in _SIXTEEN_BIT and (r.scale, r.offset) != (1.0, 0.0):
                values = _SCALED_16.setdefault((r.scale, r.offset), {})
                self._scaled_16.append((r.name, i, values, r.scale, r.offset))
            elif r.type is DataType.FLOAT32 or (r.scale, r.offset) != (1.0, 0.0):
                self._scaled.append((r.name, i, r.scale, r.offset))
            else:
                self._plain.append((r.name, i))

    @staticmethod
    def _compile(registers: list[Register], start: int) -> struct.Struct | None:
        """One struct for the whole block, or None if a register's layout needs more."""
        layout, at = ">", start
        for reg in registers:
            if reg.address < at or reg.byte_order != "big" or (
                reg.count == 2 and reg.word_order != "big"
            ):
                return None
            layout += "xx" * (reg.address - at) + reg.type.struct_char
            at = reg.address + reg.count
        return struct.Struct(layout)

    def decode(
        self, words: list[int] | list[bool], readings: dict[str, float], flags: dict[str, bool]
    ) -> None:
        """Add this block's values to ``readings`` and ``flags``; a short reply raises."""
        if len(words) < self._count:
            raise ValueError(f"{len(words)} values in a reply to a read of {self._count}")
        if self._block is not None:
            raws: Sequence[int | float | bool] = (
                self._block.unpack_from(self._words.pack(*words[: self._count]))
            )
        else:
            raws = [reg.decode(list(words[at : at + reg.count])) for reg, at in self._registers]
        for name, i, values, scale, add in self._scaled_16:
            raw = raws[i]
            value = values.get(raw)
            if value is None:
                value = values[raw] = round(float(raw) * scale + add, 6)
            readings[name] = value
        for name, i, scale, add in self._scaled:
            readings[name] = round(float(raws[i]) * scale + add, 6)
        for name, i in self._plain:
            readings[name] = float(raws[i])
        for i, bits in self._status:
            word = int(raws[i])
            for flag, mask in bits:
                flags[flag] = word & mask != 0
