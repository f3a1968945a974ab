"""What an alarm's life writes: raised, risen, cleared, released, each step with its record,
its notice in the outbox and, for a major hazard, its ledger entry.

The alert service decides when a device's alarm rises or clears (its rules on the stream,
alerts.service); the link watch decides it for a gateway that falls silent (alerts.selfcheck),
and the end of a shielding or test mode for a held alarm (alerts.mode_ends).  All of them write
the steps here, in the transaction they run, so that a link fault and a gas leak are raised,
recorded and told alike.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from alerts import lifecycle
from alerts.device_rows import DeviceNow, Placed
from alerts.ledger import OPEN, record_iot_entry, record_iot_rise
from alerts.notices import NoticeMessage, clear_message, local_time, raise_message, rise_message
from alerts.outbox import Outbox
from alerts.rules import LINK_RULES, Verdict
from firewatch.contract import DeviceEvent, ReadingBatch, utc_now
from firewatch.db import Alarm, AlarmLevel, Device, Hazard, Institution
from firewatch.device_modes import MODE_ZH, Mode, in_force
from firewatch.profiles import AlarmRule, DeviceProfile, Severity

log = logging.getLogger(__name__)

#: where a transaction keeps the alarms it raised until it commits
_RAISED = "alarms raised"


class AlarmBook:
    def __init__(
        self,
        rules: dict[str, list[AlarmRule]],
        profiles: dict[str, DeviceProfile],
        ladders: dict[str, dict[str, list[AlarmRule]]],
        outbox: Outbox,
        hazard_deadline: timedelta,
    ) -> None:
        """``rules``, ``profiles``, ``ladders``: each device's, by device id (the service's)."""
        self.rules = rules
        self.profiles = profiles
        self.ladders = ladders
        self.outbox = outbox
        self.hazard_deadline = hazard_deadline
        #: alarms raised by committed transactions
        self.raised = 0

    def raise_alarm(
        self,
        session: Session,
        device: DeviceNow,
        institution: Institution,
        verdict: Verdict,
        message: ReadingBatch | DeviceEvent,
    ) -> Alarm:
        """A device's alarm, raised by ``message``: told and filed in the ledger, or, while the
        device is shielded or in test, recorded as held and told to nobody."""
        rule = verdict.rule
        reason = message.reason if isinstance(message, DeviceEvent) else ""
        # the mode as it stands now, on the row this transaction updates (firewatch.device_modes)
        held = in_force(device.mode, device.mode_until, utc_now())
        alarm = self.open_alarm(
            session,
            institution,
            verdict,
            message.ts,
            _reading(verdict) or reason,
            raise_message(
                institution, device.location, self._what(device), rule, verdict, reason, message.ts
            ),
            device_id=device.id,
            held=held,
        )
        if held is None:
            self.file_hazard(session, device, institution, rule, alarm)
        return alarm

    def release(self, session: Session, alarm: Alarm, device: Device) -> None:
        """A held alarm (raised while its device was shielded or in test) still open when the
        mode ended: told now, as if raised now, with its ledger entry and escalation."""
        assert alarm.mode is not None
        institution = session.get_one(Institution, device.institution_id)
        rule = next(r for r in self._rules_of(device.id) if r.name == alarm.rule)
        alarm.released_at = utc_now()
        why = f"{MODE_ZH[Mode(alarm.mode)]}已结束，报警仍未消除"
        lifecycle.record(session, alarm, "release", lifecycle.SYSTEM, why, alarm.status)
        verdict = Verdict(rule, True, alarm.value, alarm.set_point)
        notice = raise_message(
            institution, device.location, self._what(device), rule, verdict, why, alarm.raised_at
        )
        self.outbox.add(session, institution.id, alarm.id, notice)
        self.file_hazard(session, device, institution, rule, alarm)
        log.warning("alarm %d released: %s %s (%s)", alarm.id, device.id, rule.name, why)

    def rise(
        self,
        session: Session,
        device: DeviceNow,
        institution: Institution,
        alarm: Alarm,
        verdict: Verdict,
        message: ReadingBatch | DeviceEvent,
    ) -> None:
        """The open alarm risen to ``verdict``'s level: it takes that level's title and
        severity, the rise is recorded with its time, told, and its ledger entry follows."""
        rule = verdict.rule
        before = next(r for r in self.rules[device.id] if r.name == alarm.rule)
        alarm.rule = alarm.level = rule.name
        alarm.title, alarm.severity, alarm.category = (
            rule.title_zh,
            rule.severity.value,
            rule.category.value,
        )
        alarm.value, alarm.set_point, alarm.unit = verdict.value, verdict.set_point, rule.unit
        self._level_reached(session, alarm, message.ts)
        note = f"{before.title_zh}→{rule.title_zh}：{_reading(verdict)}"
        lifecycle.record(session, alarm, "rise", lifecycle.SYSTEM, note, alarm.status)
        raised = raise_message(
            institution, device.location, self._what(device), rule, verdict, "", message.ts
        )
        if _held(alarm):  # shielded or in test: the rise is recorded, told to nobody
            return
        said = f"同一报警（编号 {alarm.id}）级别升高，首次报警于 {local_time(alarm.raised_at)}"
        self.outbox.add(session, institution.id, alarm.id, rise_message(raised, before, rule, said))
        self.file_hazard(session, device, institution, rule, alarm)

    def open_alarm(
        self,
        session: Session,
        institution: Institution,
        verdict: Verdict,
        at: datetime,
        note: str,
        notice: NoticeMessage,
        *,
        device_id: str | None = None,
        gateway_id: str | None = None,
        held: Mode | None = None,
    ) -> Alarm:
        """An alarm of a device or (a link fault) of a gateway: raised, recorded, told, unless
        ``held`` (its device shielded or in test): then recorded as such and told to nobody."""
        rule = verdict.rule
        alarm = Alarm(
            device_id=device_id,
            gateway_id=gateway_id,
            institution_id=institution.id,
            rule=rule.name,
            title=rule.title_zh,
            severity=rule.severity.value,
            category=rule.category.value,
            level=rule.name,
            status="active",
            value=verdict.value,
            set_point=verdict.set_point,
            unit=rule.unit,
            raised_at=at,
            mode=held.value if held else None,
        )
        session.add(alarm)
        session.flush()
        if _RAISED not in session.info:
            session.info[_RAISED] = []
            event.listen(session, "after_commit", self._raised_committed)
        session.info[_RAISED].append(
            (alarm.id, device_id or gateway_id, rule.name, institution.name)
        )
        if held is not None:
            note = f"{note}（{MODE_ZH[held]}中，不通知）" if note else f"{MODE_ZH[held]}中，不通知"
        lifecycle.record(session, alarm, "raise", lifecycle.SYSTEM, note, None)
        self._level_reached(session, alarm, at)
        if held is None:
            self.outbox.add(session, institution.id, alarm.id, notice)
        return alarm

    def clear(
        self,
        session: Session,
        device: DeviceNow,
        institution: Institution,
        alarm: Alarm,
        verdict: Verdict,
    ) -> None:
        """A device's alarm whose condition is gone, by ``verdict``'s reading."""
        self.close_alarm(
            session,
            institution,
            alarm,
            _reading(verdict),
            clear_message(
                institution, device.location, self._what(device), verdict.rule, verdict, alarm
            ),
        )

    def _raised_committed(self, session: Session) -> None:
        """Count and log the alarms a transaction raised once it commits: a batch rolled back
        and tried again (the database away, a poison message beside it) raised nothing."""
        for alarm_id, subject, rule, institution in session.info.pop(_RAISED, []):
            self.raised += 1
            log.warning("alarm %d raised: %s %s (%s)", alarm_id, subject, rule, institution)

    def close_alarm(
        self,
        session: Session,
        institution: Institution,
        alarm: Alarm,
        note: str,
        notice: NoticeMessage,
    ) -> None:
        """An alarm's condition gone: cleared, recorded, told."""
        lifecycle.clear(session, alarm, note)
        log.info(
            "alarm %d cleared: %s %s", alarm.id, alarm.device_id or alarm.gateway_id, alarm.rule
        )
        if not _held(alarm):  # nobody was told of a held one
            self.outbox.add(session, institution.id, alarm.id, notice)

    @staticmethod
    def _level_reached(session: Session, alarm: Alarm, at: datetime) -> None:
        session.add(
            AlarmLevel(
                alarm_id=alarm.id,
                rule=alarm.rule,
                title=alarm.title,
                severity=alarm.severity,
                value=alarm.value,
                set_point=alarm.set_point,
                at=at,
            )
        )

    def _rules_of(self, device_id: str) -> list[AlarmRule]:
        return [*self.rules[device_id], *LINK_RULES.values()]

    def _what(self, device: Placed) -> str:
        return f"{self.profiles[device.id].title_zh}（{device.id}）"

    def file_hazard(
        self,
        session: Session,
        device: Placed,
        institution: Institution,
        rule: AlarmRule,
        alarm: Alarm,
    ) -> None:
        """One ledger entry per ongoing condition of a major-hazard rule: a repeat, or a rise of
        its ladder (gas low to high), updates the open entry, which names the highest level
        reached.  A device fault is a maintenance matter, not a hazard of the ledger."""
        if not rule.major_hazard or rule.severity is Severity.FAULT:
            return
        levels = self.ladders[device.id].get(rule.name, [rule])
        description = f"{device.location}：{rule.title_zh}（物联网监测自动上报）"
        # no autoflush: entries are flushed when filed, and a rise keeps its rule in ``levels``,
        # so the database already answers; flushing the alarm's records here cost a press more
        # than the query
        with session.no_autoflush:
            entry = session.scalar(
                select(Hazard)
                .where(
                    Hazard.device_id == device.id,
                    Hazard.rule.in_([r.name for r in levels]),
                    Hazard.status.in_(OPEN),
                )
                .order_by(Hazard.id.desc())
                .limit(1)
            )
        if entry is not None:
            entry.alarm_id = alarm.id
            entry.updated_at = utc_now()
            assert entry.rule is not None  # the query asked for a rule
            reached = [r.name for r in levels].index(entry.rule)
            if levels.index(rule) > reached:
                record_iot_rise(session, entry, rule.name, description)
            return
        record_iot_entry(
            session,
            Hazard(
                institution_id=institution.id,
                township=institution.township,
                category=rule.category.value,
                source="iot",
                description=description,
                responsible_unit=institution.name,
                responsible_person=institution.safety_officer_name,
                responsible_phone=institution.safety_officer_phone,
                deadline=alarm.raised_at + self.hazard_deadline,
                status="reported",
                device_id=device.id,
                rule=rule.name,
                alarm_id=alarm.id,
            ),
        )


def _reading(verdict: Verdict) -> str:
    if verdict.value is None:
        return ""
    return f"{verdict.value:g} {verdict.rule.unit}（设定值 {verdict.set_point:g}）"


def _held(alarm: Alarm) -> bool:
    """Raised while its device was shielded or in test, and that mode has not ended yet."""
    return alarm.mode is not None and alarm.released_at is None
