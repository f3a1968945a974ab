"""The hazard ledger's closed loop (闭环整改): found → rectified → verified and signed off → re-checked.

Status flow, in the bureaus' words:

    pending-verification ──verify──▶ reported ──start──▶ rectifying ──submit──▶ awaiting-verification
      (public reports,    └reject──▶ rejected              ▲                        │
       群众举报)                                            └────────fail───────────┤
                                                            └──recheck-fail──┐   sign-off (销号)
                                                                             │      ▼
                                                                            closed ──recheck-pass (回头看)

Every change, and who made it, goes into the entry's audit trail (``hazard_events``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from firewatch.contract import utc_now
from firewatch.db import Hazard, HazardEvent, Institution
from firewatch.profiles import HazardCategory


class Source(StrEnum):
    IOT = "iot"
    SELF_CHECK = "self-check"  # 机构自查上报
    INSPECTION = "inspection"  # 督导检查发现
    PUBLIC_REPORT = "public-report"  # 群众举报 (counts only once verified as true)


class Status(StrEnum):
    PENDING_VERIFICATION = "pending-verification"
    REJECTED = "rejected"
    REPORTED = "reported"
    RECTIFYING = "rectifying"
    AWAITING_VERIFICATION = "awaiting-verification"
    CLOSED = "closed"
    #: an IoT entry whose alarm the confirming person said was no hazard (误报, 测试/检修, 设备
    #: 故障): closed with that reason, never counted as a hazard (alerts.confirmation)
    DISMISSED = "dismissed"


@dataclass(frozen=True)
class Transition:
    sources: tuple[Status, ...]
    target: Status
    label_zh: str


TRANSITIONS: dict[str, Transition] = {
    "verify": Transition((Status.PENDING_VERIFICATION,), Status.REPORTED, "举报查实"),
    "reject": Transition((Status.PENDING_VERIFICATION,), Status.REJECTED, "举报不属实"),
    "start": Transition((Status.REPORTED,), Status.RECTIFYING, "开始整改"),
    "submit": Transition((Status.RECTIFYING,), Status.AWAITING_VERIFICATION, "整改完成，申请验收"),
    "fail": Transition((Status.AWAITING_VERIFICATION,), Status.RECTIFYING, "验收不通过"),
    "sign-off": Transition((Status.AWAITING_VERIFICATION,), Status.CLOSED, "验收通过，销号"),
    "recheck-pass": Transition((Status.CLOSED,), Status.CLOSED, "回头看通过"),
    "recheck-fail": Transition((Status.CLOSED,), Status.RECTIFYING, "回头看不通过，重新整改"),
}

#: the system's step, not a person's (so no role is given it): an alarm its confirmer says was no
#: hazard closes its open entry, with the classification and note as the reason
DISMISS = Transition(
    (Status.REPORTED, Status.RECTIFYING, Status.AWAITING_VERIFICATION),
    Status.DISMISSED,
    "报警核实为非隐患，关闭",
)
#: every step's words, the people's and the system's, for the trail and the export
STEP_LABELS = {**{a: t.label_zh for a, t in TRANSITIONS.items()}, "dismiss": DISMISS.label_zh}

#: statuses in which an entry is still an open hazard (counts against 动态清零)
OPEN = (Status.REPORTED, Status.RECTIFYING, Status.AWAITING_VERIFICATION)
#: open and in the responsible unit's hands: past its deadline such an entry is overdue (逾期)
UNDER_RECTIFICATION = (Status.REPORTED, Status.RECTIFYING)
#: not (yet) a hazard: a public report before it is verified, or found untrue
NOT_COUNTED = (Status.PENDING_VERIFICATION, Status.REJECTED, Status.DISMISSED)
RECHECKS = ("recheck-pass", "recheck-fail")

#: the words of the bureaus' work plans, for the ledger's users (exports, statistics)
SOURCE_ZH = {
    Source.IOT: "物联网监测",
    Source.SELF_CHECK: "机构自查上报",
    Source.INSPECTION: "督导检查发现",
    Source.PUBLIC_REPORT: "群众举报查实",
}
STATUS_ZH = {
    Status.PENDING_VERIFICATION: "举报待核实",
    Status.REJECTED: "举报不属实",
    Status.REPORTED: "已上报",
    Status.RECTIFYING: "整改中",
    Status.AWAITING_VERIFICATION: "待验收",
    Status.CLOSED: "已销号",
    Status.DISMISSED: "已关闭（非隐患）",
}
CATEGORY_ZH = {
    HazardCategory.ELECTRICAL: "用电安全",
    HazardCategory.GAS: "用气安全",
    HazardCategory.FIRE_FACILITIES: "消防设施",
    HazardCategory.EVACUATION: "疏散通道",
    HazardCategory.CONSTRUCTION: "施工安全",
    HazardCategory.ELDERLY_CARE_SERVICE: "养老服务安全",
    HazardCategory.OTHER: "其他",
}


class LedgerError(ValueError):
    """A change the ledger does not allow; the message says why and what is allowed."""


@dataclass(frozen=True)
class NewEntry:
    institution_id: str
    category: HazardCategory
    source: Source
    description: str
    responsible_person: str
    responsible_phone: str
    deadline: datetime
    responsible_unit: str | None = None


def _record(
    session: Session | AsyncSession,
    hazard: Hazard,
    action: str,
    actor: str,
    note: str,
    before: str | None,
) -> None:
    session.add(
        HazardEvent(
            hazard_id=hazard.id,
            action=action,
            actor=actor,
            note=note,
            from_status=before,
            to_status=hazard.status,
            at=utc_now(),
        )
    )


async def file_entry(session: AsyncSession, entry: NewEntry, actor: str) -> Hazard:
    """A hazard filed by people: a self-check, an inspection, or a public report."""
    if entry.source is Source.IOT:
        raise LedgerError("IoT entries are raised by alarms, not filed by hand")
    institution = await session.get(Institution, entry.institution_id)
    if institution is None:
        raise LedgerError(f"no institution {entry.institution_id!r}")
    status = (
        Status.PENDING_VERIFICATION if entry.source is Source.PUBLIC_REPORT else Status.REPORTED
    )
    hazard = Hazard(
        institution_id=institution.id,
        township=institution.township,
        category=entry.category.value,
        source=entry.source.value,
        description=entry.description,
        responsible_unit=entry.responsible_unit or institution.name,
        responsible_person=entry.responsible_person,
        responsible_phone=entry.responsible_phone,
        deadline=entry.deadline,
        status=status.value,
    )
    session.add(hazard)
    await session.flush()
    _record(session, hazard, "file", actor, entry.description, None)
    return hazard


def record_iot_entry(session: Session, hazard: Hazard) -> None:
    """Audit the creation of an entry an IoT alarm raised (in the alert service's transaction,
    on its writer's synchronous session)."""
    session.add(hazard)
    session.flush()
    _record(session, hazard, "file", "iot", hazard.description, None)


def record_iot_rise(session: Session, hazard: Hazard, rule: str, description: str) -> None:
    """An IoT entry's condition rose a level (gas low to high): the same entry now names the
    highest level reached, and its trail says when (action ``rise``)."""
    hazard.rule, hazard.description = rule, description
    hazard.updated_at = utc_now()
    _record(session, hazard, "rise", "iot", description, hazard.status)


async def raise_entry(session: AsyncSession, hazard: Hazard, actor: str) -> Hazard:
    """An IoT entry filed by a person's confirmation of an alarm (a device fault's maintenance
    entry), audited with their name."""
    session.add(hazard)
    await session.flush()
    _record(session, hazard, "file", actor, hazard.description, None)
    return hazard


async def dismiss(session: AsyncSession, hazard: Hazard, actor: str, reason: str) -> None:
    """Close an open IoT entry whose alarm was no hazard, with the reason (see DISMISS)."""
    if hazard.status not in DISMISS.sources:
        return  # signed off or already closed: its own record stands
    before = hazard.status
    hazard.status = DISMISS.target.value
    hazard.updated_at = utc_now()
    _record(session, hazard, "dismiss", actor, reason, before)


async def transition(
    session: AsyncSession, hazard_id: int, action: str, actor: str, note: str = ""
) -> Hazard:
    step = TRANSITIONS.get(action)
    if step is None:
        raise LedgerError(f"unknown action {action!r}; actions: {', '.join(TRANSITIONS)}")
    hazard = await session.get(Hazard, hazard_id)
    if hazard is None:
        raise LedgerError(f"no hazard entry {hazard_id}")
    if hazard.status not in step.sources:
        allowed = [a for a, t in TRANSITIONS.items() if hazard.status in t.sources]
        raise LedgerError(
            f"entry {hazard_id} is {hazard.status}: {action!r} needs "
            f"{' or '.join(step.sources)}; allowed now: {', '.join(allowed) or 'none'}"
        )
    before = hazard.status
    hazard.status = step.target.value
    hazard.updated_at = utc_now()
    _record(session, hazard, action, actor, note or step.label_zh, before)
    return hazard


async def history(session: AsyncSession, hazard_id: int) -> list[HazardEvent]:
    return list(
        await session.scalars(
            select(HazardEvent).where(HazardEvent.hazard_id == hazard_id).order_by(HazardEvent.id)
        )
    )
