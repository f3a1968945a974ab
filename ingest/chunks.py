"""The compressed block of one series over one chunk of time, as the embedded store keeps it.

A block holds a series' points (millisecond times, float values) in time order:

- times as the difference from the one before (a steady 1 s poll is a run of 1,000s give or
  take the jitter of its rounds; Gorilla's delta-of-delta measured 13-20 % larger here, since
  the jitter of two rounds adds up in it, and costs a second running sum to undo);
- values, when every one of them is a decimal of at most six places (a register's raw integer
  times its profile's scale: 32.1 °C, 90 mA, a flag's 0 or 1), as integers at that many places,
  each stored as the difference from the one before (slowly changing readings with noise at
  the profile's resolution differ by a few steps); other values as the float64 they are;
- each of the lists packed in the narrowest fixed-width integer type that holds it and
  compressed by zlib, after a small header (count, decimals, first time and value) kept plain
  so that it is read without inflating the block;
- for a busy hour of decimal values (``SUMMARY_FROM`` points or more), each minute's count,
  sum, minimum and maximum beside the points, compressed on their own: a trend whose intervals
  are whole minutes reads an hour of 1 s polls as 60 of them instead of 3,600 points (a 24 h
  trend: 1,440 instead of 86,400), for about 4 % more bytes.

Why fixed-width arrays and zlib rather than a bit-level codec (Gorilla's XOR floats, varints):
packing, unpacking and the running sums that undo the deltas are C loops of the standard
library (``array``, ``zlib``, ``itertools.accumulate``), so a day of one series at 1 s decodes
in milliseconds in pure Python, while zlib's entropy coding squeezes the small deltas to a few
bits each.  docs/timeseries-store.md has the measured alternatives.

A decimal value comes back as the float nearest that decimal (``321 * 0.1`` is written and
``32.1`` read): exact to the profile's resolution.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

#: layout version of a block (its first byte), so a later layout can read older blocks
VERSION = 1
#: at most this many decimal places are kept as integers; values needing more stay floats
MAX_DECIMALS = 6
FLOATS = -1  # "decimals" of a block whose values are stored as float64
#: version, count, decimals, first time (ms), first value, bytes of the minutes' summary
_HEADER = struct.Struct("<BIbqqI")
#: hours with at least this many points carry a summary per minute
SUMMARY_FROM = 600
_COUNT = struct.Struct("<H")  # minutes in a summary
MINUTE_MS = 60_000
_WIDTHS = ("b", "h", "i", "q")
_TOLERANCE = 1e-6  # of a value times 10**decimals from an integer: float noise, not a digit


def _decimals(values: list[float]) -> int:
    """The fewest decimal places that hold every value, or FLOATS."""
    for places in range(MAX_DECIMALS + 1):
        scale = 10**places
        if all(
            math.isfinite(v)
            and abs(v * scale) < 2**52
            and abs(v * scale - round(v * scale)) < _TOLERANCE
            for v in values
        ):
            return places
    return FLOATS


def _differences(numbers: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *numbers], numbers, strict=False)]


def _pack(numbers: list[int]) -> bytes:
    """``numbers`` in the narrowest signed type that holds them: a type code and the bytes."""
    low, high = (min(numbers), max(numbers)) if numbers else (0, 0)
    code = next(
        c
        for c in _WIDTHS
        if -(2 ** (8 * array(c).itemsize - 1)) <= low and high < 2 ** (8 * array(c).itemsize - 1)
    )
    packed = array(code, numbers)
    if sys.byteorder == "big":
        packed.byteswap()
    return code.encode() + packed.tobytes()


def _unpack(code: str, data: memoryview, count: int) -> tuple[array, int]:
    size = array(code).itemsize * count
    unpacked = array(code)
    unpacked.frombytes(data[:size])
    if sys.byteorder == "big":
        unpacked.byteswap()
    return unpacked, size


def encode(times_ms: list[int], values: list[float]) -> bytes:
    """One block of points; ``times_ms`` ascending, one value per time."""
    if len(times_ms) != len(values) or not times_ms:
        raise ValueError("a block needs one value per time, and at least one point")
    first = times_ms[0]
    time_part = _pack(_differences([t - first for t in times_ms]))
    places = _decimals(values)
    summary = b""
    if places == FLOATS:
        floats = array("d", values)
        if sys.byteorder == "big":
            floats.byteswap()
        head, value_part = 0, b"d" + floats.tobytes()
    else:
        scale = 10**places
        steps = [round(v * scale) for v in values]
        head, value_part = steps[0], _pack(_differences([s - steps[0] for s in steps]))
        if len(times_ms) >= SUMMARY_FROM:
            summary = _summary(times_ms, steps)
    header = _HEADER.pack(VERSION, len(times_ms), places, first, head, len(summary))
    return header + summary + zlib.compress(time_part + value_part)


def _summary(times_ms: list[int], steps: list[int]) -> bytes:
    """Per minute (from the block's first): offset in minutes, count, sum, minimum, maximum."""
    first_minute = times_ms[0] // MINUTE_MS
    columns: list[list[int]] = [[], [], [], [], []]
    i = 0
    while i < len(times_ms):
        minute = times_ms[i] // MINUTE_MS
        j = bisect_left(times_ms, (minute + 1) * MINUTE_MS, i)
        part = steps[i:j]
        for column, number in zip(
            columns, (minute - first_minute, j - i, sum(part), min(part), max(part)), strict=True
        ):
            column.append(number)
        i = j
    return zlib.compress(
        _COUNT.pack(len(columns[0])) + b"".join(_pack(column) for column in columns)
    )


@dataclass(frozen=True)
class Minutes:
    """A block's summary: per minute its start (ms), count, and the sum, minimum and maximum of
    its numbers (values times ``divisor``)."""

    starts_ms: list[int]
    counts: list[int]
    sums: list[int]
    lows: list[int]
    highs: list[int]
    divisor: float


def minutes(block: bytes) -> Minutes | None:
    """The block's summary per minute, or None if it has none (few points, or floats)."""
    _, _, places, first, _, size = _HEADER.unpack_from(block)
    if not size:
        return None
    data = memoryview(zlib.decompress(block[_HEADER.size : _HEADER.size + size]))
    (count,) = _COUNT.unpack_from(data)
    columns, at = [], _COUNT.size
    for _ in range(5):
        column, used = _unpack(chr(data[at]), data[at + 1 :], count)
        columns.append(column.tolist())
        at += 1 + used
    offsets, counts, sums, lows, highs = columns
    first_minute = first // MINUTE_MS
    starts = [(first_minute + m) * MINUTE_MS for m in offsets]
    return Minutes(starts, counts, sums, lows, highs, float(10**places))


def shifted(block: bytes, by_ms: int) -> bytes:
    """The same points ``by_ms`` later (the benchmark fills a large store from a few hours;
    ``by_ms`` whole minutes)."""
    version, count, places, first, head, size = _HEADER.unpack_from(block)
    rest = block[_HEADER.size :]
    return _HEADER.pack(version, count, places, first + by_ms, head, size) + rest


def decode_numbers(block: bytes) -> tuple[list[int], list[int] | list[float], float]:
    """The points of a block as stored: times in milliseconds, and numbers that are the values
    times the returned divisor (integers, or the floats themselves with divisor 1).  Sums,
    minima and maxima of the numbers divided once give those of the values, so a trend need
    not make a float of every point."""
    version, count, places, first, head, size = _HEADER.unpack_from(block)
    if version != VERSION:
        raise ValueError(f"time-series block of layout {version}: this Firewatch reads {VERSION}")
    data = memoryview(zlib.decompress(block[_HEADER.size + size :]))
    steps, size = _unpack(chr(data[0]), data[1:], count)
    times = list(accumulate(steps, initial=first))[1:]
    at = 1 + size
    if places == FLOATS:
        values, _ = _unpack("d", data[at + 1 :], count)
        return times, values.tolist(), 1.0
    deltas, _ = _unpack(chr(data[at]), data[at + 1 :], count)
    return times, list(accumulate(deltas, initial=head))[1:], float(10**places)


def decode(block: bytes) -> tuple[list[int], list[float]]:
    """The points of a block: times in milliseconds and values, in time order."""
    times, numbers, divisor = decode_numbers(block)
    return times, [n / divisor for n in numbers]
