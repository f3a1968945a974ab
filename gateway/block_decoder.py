"""Decoding a merged read's replies into a reading batch's JSON, worked out once per block."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, Generic, TypeVar, cast

from firewatch.contract import ReadingBatchEncoder
from firewatch.profiles import Register, Table, read_blocks

Word = int | bool
#: a member's type: ``str | None`` for a reading's, ``str`` for a status word's flags
Member = TypeVar("Member")
#: per one-word register definition (a model's devices share one): its members by raw word
_MEMBERS_BY_WORD: dict[tuple[object, ...], _MembersByWord[Any]] = {}


class _MembersByWord(dict[Word, Member], Generic[Member]):
    """A one-word register's JSON member for each raw word (None: no finite value), each
    worked out the first time that word is read."""

    def __init__(self, member: Callable[[Word], Member]) -> None:
        super().__init__()
        self._member = member

    def __missing__(self, word: Word) -> Member:
        member = self[word] = self._member(word)
        return member


def _members_by_word(
    member: Callable[[Word], Member], *definition: object
) -> _MembersByWord[Member]:
    """The table of a one-word register's members, shared by every register of the same
    ``definition`` (all that its members depend on)."""
    return _MEMBERS_BY_WORD.setdefault(definition, _MembersByWord(member))


def _reading(reg: Register, raw: int | float | bool) -> str | None:
    """The register's member of a batch's readings; None for NaN or infinity, which the
    contract refuses."""
    value = round(reg.to_physical(raw), 6)
    return ReadingBatchEncoder.reading_member(reg.name, value) if math.isfinite(value) else None


def _flags(reg: Register, raw: int | float | bool, set_later: Collection[str]) -> str:
    """A status word's members of a batch's flags.  A flag name listed twice is set by the bit
    decoded last, as in a dict: earlier ones are left out (``set_later``: names that a status
    word decoded after this one sets)."""
    word = int(raw)
    bits = {name: word >> bit & 1 == 1 for bit, name in reg.flags.items() if name not in set_later}
    return ",".join(map(ReadingBatchEncoder.flag_member, bits, bits.values()))


def _reading_of_word(reg: Register, word: Word) -> str | None:
    """:func:`_reading` of a one-word register's raw word."""
    return _reading(reg, reg.decode([word]))


def _flags_of_word(reg: Register, set_later: Collection[str], word: Word) -> str:
    """:func:`_flags` of a one-word status register's raw word."""
    return _flags(reg, reg.decode([word]), set_later)


class BlockDecoder:
    """One merged read's raw words -> the members of a batch's readings and flags objects.

    The gateway decodes every poll of every device and sends it as JSON.  A one-word register
    (16 bits, or a coil's bit) has at most 65,536 raw words and a fleet's readings repeat, so
    the JSON member a word makes (``"cable_temp_1":32.5``, or a status word's
    ``"sensor_fault":false,...``) is worked out the first time the word is read and remembered,
    in a table shared by every register of that definition: a poll is then a lookup per
    register, with no readings and flags dicts built and then walked again to check and format
    their values (decoding and encoding a generic-efm-4t poll took 5.4 µs that way, 2.4 µs
    this way).  A two-word register (32-bit integer or float) is decoded on each poll.  Either
    way the values are those of :meth:`Register.decode` and :meth:`Register.to_physical`,
    rounded to 6 decimals, and each member is made by the contract's
    :class:`ReadingBatchEncoder`.

    The members of one-word registers come first, then those of two-word ones, each in address
    order (the order of a JSON object's members carries no meaning).
    """

    def __init__(
        self,
        start: int,
        count: int,
        registers: list[Register],
        flags_set_later: Collection[str] = (),
    ) -> None:
        """``flags_set_later``: flag names that the status words of a block decoded after
        this one set (a poll's later blocks)."""
        ordered = sorted(registers, key=lambda r: r.address)
        self._count = count
        #: (members by word, the word's place in the block), for one-word registers
        self._readings: list[tuple[_MembersByWord[str | None], int]] = []
        self._flags: list[tuple[_MembersByWord[str], int]] = []
        #: (register, the place of its first word), for two-word registers: decoded per poll
        self._two_word_readings: list[tuple[Register, int]] = []
        self._two_word_flags: list[tuple[Register, int, frozenset[str]]] = []
        set_later = set(flags_set_later)
        for reg in reversed(ordered):  # to know, for each status word, what is set after it
            at = reg.address - start
            if reg.flags:
                later = frozenset(set_later)
                set_later.update(reg.flags.values())
                if later.issuperset(reg.flags.values()):
                    continue  # every flag of it is set again later
                if reg.count == 2:
                    self._two_word_flags.append((reg, at, later))
                else:
                    self._flags.append(
                        (
                            _members_by_word(
                                partial(_flags_of_word, reg, later),
                                reg.type,
                                reg.byte_order,
                                tuple(reg.flags.items()),
                                later,
                            ),
                            at,
                        )
                    )
            elif reg.count == 2:
                self._two_word_readings.append((reg, at))
            else:
                self._readings.append(
                    (
                        _members_by_word(
                            partial(_reading_of_word, reg),
                            reg.name,
                            reg.type,
                            reg.byte_order,
                            reg.scale,
                            reg.offset,
                        ),
                        at,
                    )
                )
        for placed in (self._readings, self._flags, self._two_word_readings, self._two_word_flags):
            placed.reverse()
        one_word = [r.name for r in ordered if not r.flags and r.count == 1]
        #: the names of the readings, in the order of their members
        self._names = one_word + [reg.name for reg, _ in self._two_word_readings]
        #: whether a value can come out NaN or infinite (a two-word register, or an absurd
        #: scale): only such blocks are searched for members left out
        self._may_be_unfinite = bool(self._two_word_readings) or any(
            not math.isfinite(abs(r.scale) * 2.0**16 + abs(r.offset)) for r in ordered
        )

    def decode(self, words: Sequence[Word], readings: list[str], flags: list[str]) -> list[str]:
        """Add this block's members to ``readings`` and ``flags``; return the names of the
        readings left out as NaN or infinite.  A short reply raises."""
        if len(words) < self._count:
            raise ValueError(f"{len(words)} values in a reply to a read of {self._count}")
        members = [by_word[words[at]] for by_word, at in self._readings]
        for reg, at in self._two_word_readings:
            members.append(_reading(reg, reg.decode(list(words[at : at + 2]))))
        flags += [by_word[words[at]] for by_word, at in self._flags]
        for reg, at, later in self._two_word_flags:
            flags.append(_flags(reg, reg.decode(list(words[at : at + 2])), later))
        if self._may_be_unfinite and None in members:
            readings += [member for member in members if member is not None]
            return [
                name for name, member in zip(self._names, members, strict=True) if member is None
            ]
        readings += cast(list[str], members)  # None in none of them, as checked above
        return []


def block_decoders(registers: list[Register]) -> list[tuple[Table, int, int, BlockDecoder]]:
    """A register map's merged reads (see read_blocks), each with the decoder of its replies.
    A flag name that several status words set takes the value of the one decoded last, as it
    would in a dict."""
    decoders: list[tuple[Table, int, int, BlockDecoder]] = []
    set_later: set[str] = set()
    for table, start, count, members in reversed(read_blocks(registers)):
        decoders.append((table, start, count, BlockDecoder(start, count, members, set_later)))
        set_later.update(name for reg in members for name in reg.flags.values())
    return decoders[::-1]
