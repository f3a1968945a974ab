"""What a transaction of the alert service reads and writes of its devices' rows and rules'
memory: plain values, read with one Core query each and written back with one executemany.

Most messages change nothing but a device's last readings and where it stands in its
gateway's stream.  Through the ORM each of them cost an entity loaded with its attributes'
history, then flushed as a row of its own: at 10,000 devices the unit of work took more of the
alert process than the rules did (docs/benchmarks.md, "Capacity: where the central side's time
goes").  Here a device's row is a :class:`DeviceNow`; its routine columns go back in one
statement for the whole transaction, whatever it carried of that device.  A device whose
colour on the map changed is still set through the ORM, so that the change hub
(firewatch.hub), which watches the ORM's flushes, tells the live pages after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, bindparam, insert, select, update
from sqlalchemy.orm import Session

from firewatch.db import Device, RuleState

_DEVICE_TABLE = cast(Table, Device.__table__)
_READ = select(
    *(
        _DEVICE_TABLE.c[name]
        for name in (
            "id",
            "institution_id",
            "location",
            "state",
            "state_reason",
            "updated_at",
            "last_readings",
            "last_flags",
            "last_seen",
            "last_stream",
            "last_seq",
            "mode",
            "mode_until",
        )
    )
).where(_DEVICE_TABLE.c.id.in_(bindparam("ids", expanding=True)))
_ROWS = select(Device).where(Device.id.in_(bindparam("ids", expanding=True)))
#: the columns the alert service alone writes, for every message it applies
_ROUTINE = ("last_readings", "last_flags", "last_seen", "last_stream", "last_seq")
_WRITE_ROUTINE = (
    update(_DEVICE_TABLE)
    .where(_DEVICE_TABLE.c.id == bindparam("device"))
    .values({name: bindparam(name) for name in _ROUTINE})
)

_MEMORY_TABLE = cast(Table, RuleState.__table__)
_READ_MEMORY = select(
    _MEMORY_TABLE.c.device_id, _MEMORY_TABLE.c.rule, _MEMORY_TABLE.c.memory
).where(_MEMORY_TABLE.c.device_id.in_(bindparam("ids", expanding=True)))
_ADD_MEMORY = insert(_MEMORY_TABLE)
_WRITE_MEMORY = (
    update(_MEMORY_TABLE)
    .where(
        and_(
            _MEMORY_TABLE.c.device_id == bindparam("device"),
            _MEMORY_TABLE.c.rule == bindparam("rule_name"),
        )
    )
    .values(memory=bindparam("memory"))
)


@dataclass(slots=True)
class DeviceNow:
    """A device's row as the transaction found it, then as its messages left it."""

    id: str
    institution_id: str
    location: str
    state: str
    state_reason: str
    updated_at: datetime
    last_readings: dict[str, Any]
    last_flags: dict[str, Any]
    last_seen: datetime | None
    last_stream: str
    last_seq: int | None
    mode: str
    mode_until: datetime | None
    heard: bool = False  # a message of it was applied: its routine columns are written back
    found: tuple[str, str] = field(init=False)  # its colour on the map (state, reason) as read

    def __post_init__(self) -> None:
        self.found = self.colour

    @property
    def colour(self) -> tuple[str, str]:
        return self.state, self.state_reason


class Placed(Protocol):
    """What a notice or a ledger entry says of a device: a DeviceNow or the ORM's row."""

    @property
    def id(self) -> str: ...

    @property
    def institution_id(self) -> str: ...

    @property
    def location(self) -> str: ...


def read_devices(session: Session, ids: list[str]) -> dict[str, DeviceNow]:
    return {row.id: DeviceNow(*row) for row in session.connection().execute(_READ, {"ids": ids})}


def write_devices(session: Session, devices: list[DeviceNow]) -> None:
    """Write back what the transaction changed of ``devices``; only a change of colour goes
    through the ORM."""
    heard = [
        {"device": d.id, **{name: getattr(d, name) for name in _ROUTINE}}
        for d in devices
        if d.heard
    ]
    if heard:
        session.connection().execute(_WRITE_ROUTINE, heard)
    coloured = {d.id: d for d in devices if d.colour != d.found}
    if coloured:  # a device heard for the first time, or after a restart: thousands at once
        for row in session.scalars(_ROWS, {"ids": list(coloured)}):
            device = coloured[row.id]
            row.state, row.state_reason = device.colour
            row.updated_at = device.updated_at


class RuleMemories:
    """The rules' memory (alerts.rules.RuleMemory as JSON) of a transaction's devices:
    ``of[device][rule]``, with what changed written back by :meth:`write`."""

    def __init__(self, session: Session, ids: list[str]) -> None:
        self.of: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in ids}
        for device_id, rule, memory in session.connection().execute(_READ_MEMORY, {"ids": ids}):
            self.of[device_id][rule] = memory
        self._changed: dict[tuple[str, str], dict[str, Any]] = {}
        self._new: dict[tuple[str, str], dict[str, Any]] = {}

    def keep(self, device_id: str, rule: str, memory: dict[str, Any], blank: bool) -> None:
        """``blank``: the memory is a rule's default, which needs no row of its own."""
        known = self.of[device_id]
        if known.get(rule) == memory or (blank and rule not in known):
            return
        key = (device_id, rule)
        if rule in known and key not in self._new:
            self._changed[key] = memory
        else:
            self._new[key] = memory
        known[rule] = memory

    def write(self, session: Session) -> None:
        connection = session.connection()
        if self._new:
            connection.execute(
                _ADD_MEMORY,
                [{"device_id": d, "rule": r, "memory": m} for (d, r), m in self._new.items()],
            )
        if self._changed:
            connection.execute(
                _WRITE_MEMORY,
                [{"device": d, "rule_name": r, "memory": m} for (d, r), m in self._changed.items()],
            )
