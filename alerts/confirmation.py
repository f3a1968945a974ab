"""Confirming an alarm says what it was (GB 50440 / GB 25506 practice, GB/T 45839 5.12.2).

The person who acknowledges an alarm classifies it, with a note:

- ``real`` 真实火警/险情: the ledger entry the alarm raised stays open, a hazard to rectify;
- ``false`` 误报 and ``test`` 测试/检修: the entry is closed (``dismissed``) with the
  classification and the note as its reason, and is never counted as a hazard;
- ``device_fault`` 设备故障: the entry is closed the same way, and a maintenance entry
  (消防设施, the fire facilities' kind, as the profiles' sensor faults are) is filed for the
  device, so the fault is repaired through the ledger's closed loop.

Each step is audited with who confirmed: the console's account name, or the name of the person
a one-tap link was sent to (alerts.confirm_links).  Alarms acknowledged before
classifications existed keep none: 未分类.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts import ledger, lifecycle
from alerts.ledger import OPEN, Source
from firewatch.contract import utc_now
from firewatch.db import Alarm, Device, Hazard, Institution
from firewatch.profiles import HazardCategory


class Classification(StrEnum):
    REAL = "real"
    FALSE = "false"
    TEST = "test"
    DEVICE_FAULT = "device_fault"


CLASSIFICATION_ZH = {
    Classification.REAL: "真实火警/险情",
    Classification.FALSE: "误报",
    Classification.TEST: "测试/检修",
    Classification.DEVICE_FAULT: "设备故障",
}
UNCLASSIFIED_ZH = "未分类"


def reason(classification: Classification, note: str) -> str:
    """What the ledger keeps as the reason: the classification's words and the note."""
    words = CLASSIFICATION_ZH[classification]
    return f"{words}：{note}" if note else words


async def acknowledge(
    session: AsyncSession,
    alarm_id: int,
    by: str,
    classification: Classification,
    note: str,
    maintenance_deadline: timedelta,
) -> Alarm:
    """Acknowledge with a classification, and do to the ledger what it means."""
    alarm = await lifecycle.acknowledge(session, alarm_id, by, note, classification.value)
    await _apply(session, alarm, by, classification, note, maintenance_deadline)
    return alarm


async def close(
    session: AsyncSession,
    alarm_id: int,
    by: str,
    classification: Classification | None,
    note: str,
    maintenance_deadline: timedelta,
) -> Alarm:
    """Close a cleared alarm; one nobody acknowledged is confirmed by closing it, and so needs
    a classification as an acknowledgement does."""
    alarm = await session.get(Alarm, alarm_id)
    first = alarm is not None and alarm.acknowledged_at is None
    if first and classification is None:
        raise lifecycle.AlarmTransitionError(
            f"报警 {alarm_id} 尚未确认：关闭时请同时说明报警性质"
            f"（{'、'.join(CLASSIFICATION_ZH.values())}）"
        )
    kept = classification.value if first and classification else None
    alarm = await lifecycle.close(session, alarm_id, by, note, kept)
    if first and classification is not None:
        await _apply(session, alarm, by, classification, note, maintenance_deadline)
    return alarm


async def _apply(
    session: AsyncSession,
    alarm: Alarm,
    by: str,
    classification: Classification,
    note: str,
    maintenance_deadline: timedelta,
) -> None:
    if classification is Classification.REAL:
        return  # its entry, if the rule raises one, stays open as a hazard
    entry = await session.scalar(
        select(Hazard).where(Hazard.alarm_id == alarm.id, Hazard.status.in_(OPEN))
    )
    if entry is not None:
        await ledger.dismiss(session, entry, by, reason(classification, note))
    if classification is Classification.DEVICE_FAULT:
        await _file_maintenance(session, alarm, by, note, maintenance_deadline)


async def _file_maintenance(
    session: AsyncSession, alarm: Alarm, by: str, note: str, deadline: timedelta
) -> None:
    institution = await session.get_one(Institution, alarm.institution_id)
    device = await session.get(Device, alarm.device_id) if alarm.device_id else None
    where = f"{device.location}（{device.id}）" if device else f"网关 {alarm.gateway_id}"
    found = f"，{note}" if note else ""
    await ledger.raise_entry(
        session,
        Hazard(
            institution_id=institution.id,
            township=institution.township,
            category=HazardCategory.FIRE_FACILITIES.value,
            source=Source.IOT.value,
            description=f"{where}：{alarm.title}报警经核实为设备故障{found}，需维保检修",
            responsible_unit=institution.name,
            responsible_person=institution.safety_officer_name,
            responsible_phone=institution.safety_officer_phone,
            deadline=utc_now() + deadline,
            status=ledger.Status.REPORTED.value,
            device_id=alarm.device_id,
            alarm_id=alarm.id,
        ),
        by,
    )
