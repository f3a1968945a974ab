"""The alert service: gateway messages -> device state, alarms, ledger entries and notices.

Everything one message causes is written in one transaction together with the record that the
message was applied, so a crash or a redelivery neither loses nor repeats an alarm.  Notices are
only *stored* here; the notifier sends them (see ``alerts.notifier``).  The transactions run on
a writer thread of their own with a synchronous session (``firewatch.db.Writer``): the service
applies every gateway's polls, and through the async driver the hand-offs of each database call
cost it more than the work.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from alerts import lifecycle
from alerts.ledger import OPEN, record_iot_entry
from alerts.notices import clear_message, raise_message
from alerts.outbox import Outbox
from alerts.rules import (
    LINK_RULES,
    RuleMemory,
    Verdict,
    device_state,
    evaluate,
    may_raise_at_once,
    rules_for,
)
from firewatch.consumer import DeadLetters, GatewayMessageConsumer, claim, forget_applied
from firewatch.contract import DeviceEvent, ReadingBatch, utc_now
from firewatch.db import ACTIVE_ALARM, Alarm, Device, Hazard, Institution, RuleState, Writer
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import AlarmRule, DeviceProfile, Severity
from firewatch.site import Site

log = logging.getLogger(__name__)

CONSUMER = "alerts"


class AlertService:
    def __init__(
        self,
        site: Site,
        profiles: dict[str, DeviceProfile],
        sessions: async_sessionmaker,
        broker: BrokerAddress,
        *,
        shared_subscription: bool,
        outbox: Outbox,
        hazard_deadline: timedelta,
        notices_waiting: asyncio.Event,
        writer: Writer,
        keep_applied: timedelta = timedelta(hours=24),
    ) -> None:
        self.sessions = sessions  # to read back what the writer wrote
        self.writer = writer
        self.keep_applied = keep_applied
        self.outbox = outbox
        self.hazard_deadline = hazard_deadline
        self.notices_waiting = notices_waiting
        self.rules = {
            d.id: rules_for(d, profiles[d.profile], site.institution(d.institution))
            for d in site.devices
        }
        self.profiles = {d.id: profiles[d.profile] for d in site.devices}
        self.raised = 0
        self.consumer = GatewayMessageConsumer(
            CONSUMER, broker, self.apply_batch, DeadLetters(sessions, CONSUMER),
            shared_subscription=shared_subscription,
            # what has queued up is applied together; nothing waits for more to arrive.  While
            # the service keeps up that is a few messages; up to 500 when it has fallen behind,
            # where fewer, larger transactions catch up sooner (at 100, `firewatch up` with
            # 1,000 devices took 140 batches/s instead of 340-780)
            max_batch=500, max_wait_s=0.0,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.consumer.run())
            tasks.create_task(self._forget_old_applied())

    async def _forget_old_applied(self, every_s: float = 10) -> None:
        """Keep the record of applied messages to ``keep_applied``: long enough to recognise
        any redelivery, not a row per message for ever."""
        while True:
            await asyncio.sleep(every_s)
            await forget_applied(self.writer, CONSUMER, utc_now() - self.keep_applied)

    def status(self) -> dict[str, Any]:
        return {
            "broker_connected": self.consumer.connected,
            "messages_applied": self.consumer.handled,
            "alarms_raised": self.raised,
            "dead_letters": self.consumer.dead_letters.count,
        }

    async def apply(self, message: ReadingBatch | DeviceEvent) -> None:
        await self.apply_batch([message])

    async def apply_batch(self, messages: list[ReadingBatch | DeviceEvent]) -> None:
        """Everything these messages cause, with the record of applying them.

        A button pressed or a set point reached is applied first, in a small transaction of its
        own whose notices go out while the routine readings queued with it are applied in a
        second one: the one-key alarm must not wait for a thousand devices' polls.  Each
        device's messages stay together and in order.
        """
        urgent = {m.device_id for m in messages if self._urgent(m)}
        first = [m for m in messages if m.device_id in urgent]
        for part in (first, [m for m in messages if m.device_id not in urgent]):
            if part and await self.writer.run(partial(self._apply_together, messages=part)):
                self.notices_waiting.set()

    def _urgent(self, message: ReadingBatch | DeviceEvent) -> bool:
        if isinstance(message, DeviceEvent):
            return True
        rules = self.rules.get(message.device_id)
        return rules is not None and may_raise_at_once(rules, message.readings, message.flags)

    def _apply_together(
        self, session: Session, messages: list[ReadingBatch | DeviceEvent]
    ) -> bool:
        """These messages' effects in one transaction, with the record of applying them; True
        if notices were stored.

        One transaction and one read of each table for all of them, not per message, so that
        the service keeps up with every gateway's polls.  Messages are still applied one by
        one, in order.
        """
        new_notices = False
        fresh = claim(session, CONSUMER, messages)
        ids = {m.device_id for m in fresh if m.device_id in self.rules}
        devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(ids)))}
        open_alarms: dict[str, dict[str, Alarm]] = {i: {} for i in ids}
        for alarm in session.scalars(select(Alarm).where(
                Alarm.device_id.in_(ids), Alarm.status.in_(ACTIVE_ALARM))):
            open_alarms[alarm.device_id][alarm.rule] = alarm
        rule_states: dict[str, dict[str, RuleState]] = {i: {} for i in ids}
        for row in session.scalars(select(RuleState).where(RuleState.device_id.in_(ids))):
            rule_states[row.device_id][row.rule] = row
        for message in fresh:
            device = devices.get(message.device_id)
            if device is None or message.device_id not in self.rules:
                log.warning("message from unknown device %s ignored", message.device_id)
                continue
            new_notices |= self._apply_one(
                session, message, device, open_alarms[device.id], rule_states[device.id])
        return new_notices

    def _apply_one(
        self,
        session: Session,
        message: ReadingBatch | DeviceEvent,
        device: Device,
        open_alarms: dict[str, Alarm],
        rule_states: dict[str, RuleState],
    ) -> bool:
        """One message's effect on its device; True if it stored notices."""
        if device.last_seen is not None and message.ts < device.last_seen:
            return False  # an older message overtaken by a newer one: the state moved on
        if isinstance(message, ReadingBatch):
            device.last_readings = dict(message.readings)
            device.last_flags = dict(message.flags)
            verdicts = self._evaluate(session, device, message, set(open_alarms), rule_states)
        else:
            # each event says what the link is now: offline, fault, or neither (online)
            verdicts = [Verdict(rule, message.event is event, None, None)
                        for event, rule in LINK_RULES.items()]
        device.last_seen = message.ts
        new_notices = False
        for verdict in verdicts:
            alarm = open_alarms.get(verdict.rule.name)
            if verdict.breached and alarm is None:
                institution = session.get_one(Institution, device.institution_id)
                alarm = self._raise(session, device, institution, verdict, message)
                open_alarms[alarm.rule] = alarm
                new_notices = True
            elif not verdict.breached and alarm is not None:
                institution = session.get_one(Institution, device.institution_id)
                self._clear(session, device, institution, alarm, verdict)
                del open_alarms[alarm.rule]
                new_notices = True
        offline = "offline" in open_alarms
        state = device_state([a.severity for a in open_alarms.values()], offline).value
        reason = "；".join(a.title for a in open_alarms.values()) or "运行正常"
        if (device.state, device.state_reason) != (state, reason):
            device.state, device.state_reason = state, reason
            device.updated_at = utc_now()
        return new_notices

    def _raise(
        self,
        session: Session,
        device: Device,
        institution: Institution,
        verdict: Verdict,
        message: ReadingBatch | DeviceEvent,
    ) -> Alarm:
        rule = verdict.rule
        alarm = Alarm(
            device_id=device.id,
            institution_id=institution.id,
            rule=rule.name,
            title=rule.title_zh,
            severity=rule.severity.value,
            status="active",
            value=verdict.value,
            set_point=verdict.set_point,
            unit=rule.unit,
            raised_at=message.ts,
        )
        session.add(alarm)
        session.flush()
        self.raised += 1
        log.warning("alarm %d raised: %s %s (%s)", alarm.id, device.id, rule.name, institution.name)
        reason = message.reason if isinstance(message, DeviceEvent) else ""
        lifecycle.record(session, alarm, "raise", lifecycle.SYSTEM, _reading(verdict) or reason,
                         None)
        self.outbox.add(session, institution.id, alarm.id, raise_message(
            institution, device, self.profiles[device.id], rule, verdict, reason, message.ts
        ))
        if rule.major_hazard and rule.severity is Severity.ALARM:
            self._record_hazard(session, device, institution, rule, alarm)
        return alarm

    def _clear(
        self,
        session: Session,
        device: Device,
        institution: Institution,
        alarm: Alarm,
        verdict: Verdict,
    ) -> None:
        lifecycle.clear(session, alarm, _reading(verdict))
        log.info("alarm %d cleared: %s %s", alarm.id, device.id, alarm.rule)
        self.outbox.add(session, institution.id, alarm.id, clear_message(
            institution, device, self.profiles[device.id], verdict.rule, verdict, alarm
        ))

    def _evaluate(
        self,
        session: Session,
        device: Device,
        batch: ReadingBatch,
        in_alarm: set[str],
        rows: dict[str, RuleState],
    ) -> list[Verdict]:
        """The rules' verdicts on ``batch``, their memory (delays, rates) kept in the database."""
        memory = {name: RuleMemory.from_json(r.memory) for name, r in rows.items()}
        verdicts = evaluate(
            self.rules[device.id], batch.readings, batch.flags, in_alarm, memory, batch.ts
        )
        for name, mem in memory.items():
            state = mem.to_json()
            if name in rows:
                if rows[name].memory != state:
                    rows[name].memory = state
            elif mem != RuleMemory():
                rows[name] = RuleState(device_id=device.id, rule=name, memory=state)
                session.add(rows[name])
        return verdicts

    def _record_hazard(
        self,
        session: Session,
        device: Device,
        institution: Institution,
        rule: AlarmRule,
        alarm: Alarm,
    ) -> None:
        """One ledger entry per ongoing condition: a repeat updates the open entry."""
        entry = session.scalar(
            select(Hazard).where(
                Hazard.device_id == device.id,
                Hazard.rule == rule.name,
                Hazard.status.in_(OPEN),
            )
        )
        if entry is not None:
            entry.alarm_id = alarm.id
            entry.updated_at = utc_now()
            return
        record_iot_entry(
            session,
            Hazard(
                institution_id=institution.id,
                township=institution.township,
                category=rule.category.value,
                source="iot",
                description=f"{device.location}：{rule.title_zh}（物联网监测自动上报）",
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
