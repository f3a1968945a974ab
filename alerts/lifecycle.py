"""An alarm's lifecycle: ``active → acknowledged → cleared → closed``, each step recorded.

The alert service raises and clears (actor ``system``, the reading as the note); people
acknowledge and close.  An alarm can clear before anyone acknowledges it (the condition went
away by itself); it is still only closed by a person, after it has cleared, and closing an
unacknowledged alarm acknowledges it too.  Every step is an ``alarm_events`` row in the same
transaction as the change, so the trail and the state never disagree.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from firewatch.contract import utc_now
from firewatch.db import Alarm, AlarmEvent

SYSTEM = "system"


class AlarmTransitionError(ValueError):
    """A step the alarm's current state does not allow; the message says why."""


def record(
    session: Session | AsyncSession,
    alarm: Alarm,
    action: str,
    actor: str,
    note: str,
    from_status: str | None,
) -> None:
    session.add(
        AlarmEvent(
            alarm_id=alarm.id,
            action=action,
            actor=actor,
            note=note,
            from_status=from_status,
            to_status=alarm.status,
            at=utc_now(),
        )
    )


def clear(session: Session, alarm: Alarm, note: str) -> None:
    """The condition is gone (the service decides, after hysteresis and off-delay)."""
    before = alarm.status
    alarm.status = "cleared"
    alarm.cleared_at = utc_now()
    record(session, alarm, "clear", SYSTEM, note, before)


async def _get(session: AsyncSession, alarm_id: int) -> Alarm:
    alarm = await session.get(Alarm, alarm_id, with_for_update=True)
    if alarm is None:
        raise LookupError(f"no alarm {alarm_id}")
    return alarm


def _mark_acknowledged(alarm: Alarm, by: str, note: str, classification: str | None) -> None:
    alarm.acknowledged_at = utc_now()
    alarm.acknowledged_by = by
    alarm.ack_note = note
    alarm.classification = classification


async def acknowledge(
    session: AsyncSession, alarm_id: int, by: str, note: str, classification: str | None
) -> Alarm:
    """``classification``: what ``by`` says it was (see alerts.confirmation, which also
    applies what that means to the ledger)."""
    alarm = await _get(session, alarm_id)
    if alarm.acknowledged_at is not None:
        raise AlarmTransitionError(f"alarm {alarm_id} was acknowledged by {alarm.acknowledged_by}")
    if alarm.status == "closed":
        raise AlarmTransitionError(f"alarm {alarm_id} is closed")
    before = alarm.status
    _mark_acknowledged(alarm, by, note, classification)
    if alarm.status == "active":
        alarm.status = "acknowledged"
    record(session, alarm, "acknowledge", by, note, before)
    return alarm


async def close(
    session: AsyncSession, alarm_id: int, by: str, note: str, classification: str | None = None
) -> Alarm:
    """``classification``: for an alarm nobody acknowledged, which closing acknowledges."""
    alarm = await _get(session, alarm_id)
    if alarm.status != "cleared":
        raise AlarmTransitionError(
            f"alarm {alarm_id} is {alarm.status}: only a cleared alarm can be closed"
        )
    if alarm.acknowledged_at is None:
        _mark_acknowledged(alarm, by, note, classification)
    alarm.status = "closed"
    record(session, alarm, "close", by, note, "cleared")
    return alarm


async def history(session: AsyncSession, alarm_id: int) -> list[AlarmEvent]:
    return list(
        await session.scalars(
            select(AlarmEvent).where(AlarmEvent.alarm_id == alarm_id).order_by(AlarmEvent.id)
        )
    )
