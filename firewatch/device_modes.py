"""Shielding (屏蔽) and test mode (测试): a device's alarms recorded, told to nobody, for a while.

GB/T 45839-2025 names *shielded* a device state beside normal, alarm and fault, asks that only an
authorised user silence a device, on stated conditions and with a log (5.4.4, 5.8.1), and that
commissioning, testing and maintenance be kept apart from normal operation (5.8.4).

The mode lives on the device's row, so the alert service reads it in the very transaction that
raises an alarm, from the row it updates anyway: no copy in another process to go stale.  A mode
is in force only while now < ``mode_until`` (:func:`in_force`), checked wherever it is read (the
alert service raising an alarm, the API, the map), so it ends at its time even while no process
runs to end it; the alert service's sweep (``alerts.mode_ends``) then writes it back to normal,
logs the end and tells the alarms still open.  Each start, end and early cancel is a row of
``device_mode_events`` naming the account.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from firewatch.db import Device, DeviceModeEvent

#: who ends a mode whose time is up (the account that started it is named in the note)
SYSTEM = "system"


class Mode(StrEnum):
    NORMAL = "normal"
    SHIELDED = "shielded"  # 屏蔽: maintenance, a known fault being mended
    TEST = "test"  # 测试: commissioning, a tester exercising a live site


class Reason(StrEnum):
    MAINTENANCE = "maintenance"
    COMMISSIONING = "commissioning"
    OTHER = "other"  # the note says what


MODE_ZH = {Mode.NORMAL: "正常", Mode.SHIELDED: "屏蔽", Mode.TEST: "测试"}
REASON_ZH = {Reason.MAINTENANCE: "检修", Reason.COMMISSIONING: "调试", Reason.OTHER: "其他"}


class Adds(Protocol):
    """A session, synchronous (the alert service's writer) or async (the web app's)."""

    def add(self, instance: object) -> None: ...


def in_force(mode: str, until: datetime | None, now: datetime) -> Mode | None:
    """The mode that holds a device's alarms back at ``now``; None once it is over."""
    if mode == Mode.NORMAL or until is None or until <= now:
        return None
    return Mode(mode)


def holding(device: Device, now: datetime) -> Mode | None:
    return in_force(device.mode, device.mode_until, now)


def start(
    session: Adds,
    device: Device,
    mode: Mode,
    until: datetime,
    reason: Reason,
    note: str,
    actor: str,
) -> None:
    """Put ``device`` in ``mode`` until ``until``; one already in force is replaced."""
    device.mode, device.mode_until = mode.value, until
    device.mode_reason, device.mode_note, device.mode_by = reason.value, note, actor
    _log(session, device, "start", actor, note)


def finish(session: Adds, device: Device, action: str, actor: str) -> None:
    """End the device's mode: ``end`` (its time was up) or ``cancel`` (a person ended it early);
    logged with what it was, then the device is back to normal."""
    note = device.mode_note
    if action == "end":
        note = f"到期自动结束（{device.mode_by} 开启）" + (f"：{note}" if note else "")
    _log(session, device, action, actor, note)
    device.mode, device.mode_until = Mode.NORMAL.value, None
    device.mode_reason, device.mode_note, device.mode_by = "", "", ""


def _log(session: Adds, device: Device, action: str, actor: str, note: str) -> None:
    session.add(
        DeviceModeEvent(
            device_id=device.id,
            institution_id=device.institution_id,
            action=action,
            mode=device.mode,
            reason=device.mode_reason,
            note=note,
            until=device.mode_until,
            actor=actor,
        )
    )
