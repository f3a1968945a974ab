"""What escalations and ledger reminders say, in Chinese: channel-neutral notice messages.

Each is a :class:`~alerts.notices.NoticeMessage` of kind ``escalation``: ``label`` says which
(报警升级, 提级督办, 隐患逾期, 逾期通报, 回头看), ``reason`` why now, ``advice`` what the reader is
to do.  They are ``immediate``: never folded into, nor opening, an institution's storm summary.
"""

from __future__ import annotations

from datetime import datetime

from alerts.ledger import STATUS_ZH, Status
from alerts.notices import NoticeMessage, local_time
from firewatch.db import Alarm, Hazard, Institution
from firewatch.site import Bureau


def _waited(since: datetime, now: datetime) -> str:
    minutes = (now - since).total_seconds() / 60
    if minutes < 24 * 60:
        return f"{minutes:.0f} 分钟"
    return f"{minutes / (24 * 60):.0f} 天"


def _about_alarm(
    label: str,
    institution: Institution,
    alarm: Alarm,
    location: str,
    device: str,
    now: datetime,
    advice: str,
) -> NoticeMessage:
    cleared = "（已恢复，仍无人确认）" if alarm.status == "cleared" else ""
    return NoticeMessage(
        kind="escalation",
        label=label,
        severity=alarm.severity,
        institution=institution.name,
        title=f"{alarm.title}{cleared}",
        location=f"{institution.township} · {location}",
        device=device,
        time=local_time(alarm.raised_at),
        reason=f"已 {_waited(alarm.raised_at, now)}无人确认",
        advice=advice,
        contact=f"机构负责人 {institution.head_name} {institution.head_phone}",
        immediate=True,
    )


def alarm_to_head(
    institution: Institution, alarm: Alarm, location: str, device: str, now: datetime
) -> NoticeMessage:
    return _about_alarm(
        "报警升级",
        institution,
        alarm,
        location,
        device,
        now,
        f"请机构负责人 {institution.head_name} 立即督促值班人员到场处置，并在系统中确认报警；"
        "仍无人确认将提级上报民政局。",
    )


def alarm_to_bureau(
    bureau: Bureau | None,
    institution: Institution,
    alarm: Alarm,
    location: str,
    device: str,
    now: datetime,
) -> NoticeMessage:
    return _about_alarm(
        "提级督办",
        institution,
        alarm,
        location,
        device,
        now,
        f"机构负责人已获通知仍未确认：请{bureau.name if bureau else '民政局'}"
        "值班人员立即电话督办。",
    )


def _about_entry(
    label: str, institution: Institution, hazard: Hazard, time: str, reason: str, advice: str
) -> NoticeMessage:
    return NoticeMessage(
        kind="escalation",
        label=label,
        institution=institution.name,
        title=f"隐患台账第 {hazard.id} 号：{hazard.description}",
        location=institution.township,
        time=time,
        reason=reason,
        advice=advice,
        contact=f"{hazard.responsible_unit} {hazard.responsible_person} {hazard.responsible_phone}",
        immediate=True,
    )


def overdue_reminder(institution: Institution, hazard: Hazard, now: datetime) -> NoticeMessage:
    return _about_entry(
        "隐患逾期",
        institution,
        hazard,
        f"整改时限 {local_time(hazard.deadline)}",
        f"已逾期 {_waited(hazard.deadline, now)}，状态：{STATUS_ZH[Status(hazard.status)]}",
        f"请责任人 {hazard.responsible_person} 尽快完成整改并在系统中提交验收；"
        "逾期情况已通报民政局。",
    )


def overdue_flag(institution: Institution, hazard: Hazard, now: datetime) -> NoticeMessage:
    return _about_entry(
        "逾期通报",
        institution,
        hazard,
        f"整改时限 {local_time(hazard.deadline)}",
        f"已逾期 {_waited(hazard.deadline, now)}，状态：{STATUS_ZH[Status(hazard.status)]}",
        "请督促责任单位整改；进度缓慢的，通报、约谈。",
    )


def recheck_due(institution: Institution, hazard: Hazard, signed_off_at: datetime) -> NoticeMessage:
    return _about_entry(
        "回头看",
        institution,
        hazard,
        f"销号 {local_time(signed_off_at)}",
        "已到回头看时间",
        "请组织复查，并在系统中登记“回头看通过”或“回头看不通过”（重新整改）。",
    )
