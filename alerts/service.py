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
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from alerts import lifecycle
from alerts.ledger import OPEN, record_iot_entry
from alerts.notices import NoticeMessage, clear_message, raise_message
from alerts.outbox import Outbox
from alerts.rules import (
    LINK_RULES,
    RuleMemory,
    Verdict,
    evaluate,
    may_raise_at_once,
    rules_for,
    settle_state,
)
from alerts.selfcheck import LinkWatch
from firewatch.admission import Admission
from firewatch.consumer import GatewayMessageConsumer, claim, forget_applied
from firewatch.contract import (
    DeviceEvent,
    GatewayHeartbeat,
    GatewayMessage,
    ReadingBatch,
    events_filter,
    heartbeats_filter,
    readings_filter,
    utc_now,
)
from firewatch.db import ACTIVE_ALARM, Alarm, Device, Hazard, Institution, RuleState, Writer
from firewatch.dead_letters import DEAD_LETTER_KEEP, DeadLetters
from firewatch.leases import Duty, LeaseKeeper
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.profiles import AlarmRule, DeviceProfile, Severity
from firewatch.site import Site
from firewatch.supervise import supervise

log = logging.getLogger(__name__)

CONSUMER = "alerts"
#: where a transaction keeps the alarms it raised until it commits
_RAISED = "alarms raised"


class AlertService:
    def __init__(
        self,
        site: Site,
        profiles: dict[str, DeviceProfile],
        sessions: async_sessionmaker,
        broker: BrokerAddress,
        *,
        partition: Partition = Partition(),
        outbox: Outbox,
        hazard_deadline: timedelta,
        notices_waiting: asyncio.Event,
        writer: Writer,
        keep_applied: timedelta = timedelta(hours=24),
        admission: Admission | None = None,
        silent_after: timedelta = timedelta(seconds=60),
        keep_dead_letters: timedelta = DEAD_LETTER_KEEP,
        leased: bool = False,
    ) -> None:
        """``leased``: the replicas hold the partitions by leases and take over each other's
        (firewatch.leases; :attr:`keeper` is then set before :meth:`run`); otherwise this
        replica reads ``partition`` alone, for as long as it runs."""
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
        self.last_applied_at: datetime | None = None
        # what a gateway says is checked (default: the settings' default bounds)
        self.admission = admission or Admission(
            site,
            profiles,
            CONSUMER,
            max_ahead=timedelta(minutes=5),
            max_age=timedelta(days=30),
            restamp=True,
        )
        # each replica watches the links of the gateways it reads now (:meth:`owns`)
        self.links = LinkWatch(site, self, silent_after, self.admission.clocks)
        self.dead_letters = DeadLetters(sessions, CONSUMER, keep_dead_letters)
        self.partition = partition
        self.keeper: LeaseKeeper | None = None
        shares = (
            [Partition(i, partition.count) for i in range(partition.count)]
            if leased
            else [partition]
        )
        self.consumers = {
            p: GatewayMessageConsumer(
                CONSUMER,
                broker,
                partial(self.apply_batch, lease=lease_name(p) if leased else None),
                self.dead_letters,
                # and the gateways' heartbeats, which the link watch hears (alerts.selfcheck)
                streams=(readings_filter, events_filter, heartbeats_filter),
                gateway_ids=[g.id for g in site.gateways],
                partition=p,
                # what has queued up is applied together; nothing waits for more to arrive.
                # While the service keeps up that is a few messages; up to 500 when it has
                # fallen behind, where fewer, larger transactions catch up sooner (at 100,
                # `firewatch up` with 1,000 devices took 140 batches/s instead of 340-780)
                max_batch=500,
                max_wait_s=0.0,
                admit=self.admission,
            )
            for p in shares
        }
        #: this replica's own partition's consumer (leased: the one it holds when all are up)
        self.consumer = self.consumers[partition]

    def duties(self) -> list[Duty]:
        """Leased: each partition's consumer, run by whichever replica holds its lease."""
        return [
            Duty(lease_name(p), consumer.run, home=p == self.partition)
            for p, consumer in self.consumers.items()
        ]

    def owns(self, gateway_id: str) -> bool:
        """Whether this replica reads ``gateway_id``'s messages now."""
        if self.keeper is None:
            return self.partition.owns(gateway_id)
        held = self.keeper.held
        return any(lease_name(p) in held and p.owns(gateway_id) for p in self.consumers)

    @property
    def handled(self) -> int:
        return sum(c.handled for c in self.consumers.values())

    @property
    def metered(self) -> ConsumerView:
        """The consumers of this replica as one, for /metrics."""
        running = [
            c
            for p, c in self.consumers.items()
            if self.keeper is None or lease_name(p) in self.keeper.held
        ]
        return ConsumerView(
            CONSUMER,
            self.handled,
            self.dead_letters,
            bool(running) and all(c.connected for c in running),
            self.admission,
        )

    async def run(self) -> None:
        consuming = {"consumer": self.consumer.run} if self.keeper is None else {}
        await supervise(
            {
                **consuming,
                "forget-applied": self._forget_old_applied,
                "link-watch": partial(self.links.run, self.writer, self.notices_waiting),
                "dead-letter-retention": self.dead_letters.expire,
            }
        )

    async def _forget_old_applied(self, every_s: float = 10) -> None:
        """Keep the record of applied messages to ``keep_applied``: long enough to recognise
        any redelivery, not a row per message for ever."""
        while True:
            await asyncio.sleep(every_s)
            await forget_applied(self.writer, CONSUMER, utc_now() - self.keep_applied)

    def status(self) -> dict[str, Any]:
        held = {} if self.keeper is None else {"partitions_held": sorted(self.keeper.held)}
        return {
            "broker_connected": self.metered.connected,
            "messages_applied": self.handled,
            "alarms_raised": self.raised,
            "dead_letters": self.dead_letters.count,
            "links_down": self.links.down,
            **held,
        }

    async def apply(self, message: ReadingBatch | DeviceEvent) -> None:
        await self.apply_batch([message])

    async def apply_batch(self, messages: list[GatewayMessage], lease: str | None = None) -> None:
        """Everything these messages cause, with the record of applying them.

        A button pressed or a set point reached is applied first, in a small transaction of its
        own whose notices go out while the routine readings queued with it are applied in a
        second one: the one-key alarm must not wait for a thousand devices' polls.  Each
        device's messages stay together and in order.  Every message, a heartbeat among them,
        tells the link watch that its gateway is heard (alerts.selfcheck).  ``lease``: the
        partition's lease, checked in each transaction (the fence, firewatch.leases).
        """
        self.links.hear(messages, utc_now())
        devices_said = [m for m in messages if not isinstance(m, GatewayHeartbeat)]
        urgent = {m.device_id for m in devices_said if self._urgent(m)}
        first = [m for m in devices_said if m.device_id in urgent]
        for part in (first, [m for m in devices_said if m.device_id not in urgent]):
            if not part:
                continue
            if await self.writer.run(partial(self._apply_together, messages=part, lease=lease)):
                self.notices_waiting.set()
        self.last_applied_at = utc_now()

    def _urgent(self, message: ReadingBatch | DeviceEvent) -> bool:
        if isinstance(message, DeviceEvent):
            return True
        rules = self.rules.get(message.device_id)
        return rules is not None and may_raise_at_once(rules, message.readings, message.flags)

    def _apply_together(
        self, session: Session, messages: list[ReadingBatch | DeviceEvent], lease: str | None
    ) -> bool:
        """These messages' effects in one transaction, with the record of applying them; True
        if notices were stored.

        One transaction and one read of each table for all of them, not per message, so that
        the service keeps up with every gateway's polls.  Messages are still applied one by
        one, in order.
        """
        new_notices = False
        fresh = claim(session, CONSUMER, messages)
        if lease is not None and self.keeper is not None:
            self.keeper.check(session, lease)  # after the claim's write: holds the lock
        ids = {m.device_id for m in fresh if m.device_id in self.rules}
        devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(ids)))}
        open_alarms: dict[str, dict[str, Alarm]] = {i: {} for i in ids}
        for alarm in session.scalars(
            select(Alarm).where(Alarm.device_id.in_(ids), Alarm.status.in_(ACTIVE_ALARM))
        ):
            assert alarm.device_id is not None  # the query asked for these devices' alarms
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
                session, message, device, open_alarms[device.id], rule_states[device.id]
            )
        return new_notices

    def _apply_one(
        self,
        session: Session,
        message: ReadingBatch | DeviceEvent,
        device: Device,
        open_alarms: dict[str, Alarm],
        rule_states: dict[str, RuleState],
    ) -> bool:
        """One message's effect on its device; True if it stored notices.

        Messages are ordered by their place in the gateway's stream (incarnation, seq), which
        the gateway guarantees, not by its clock, which can step back: a reading stamped in
        the future must not make the real ones after it look old.
        """
        stream = f"{message.gateway_id}/{message.incarnation}"
        if (
            stream == device.last_stream
            and device.last_seq is not None
            and message.seq < device.last_seq
        ):
            # overtaken by a newer message: the state moved on, but a press it carries happened
            verdicts = self._late_presses(device, message)
        else:
            if isinstance(message, ReadingBatch):
                device.last_readings = dict(message.readings)
                device.last_flags = dict(message.flags)
                verdicts = self._evaluate(session, device, message, set(open_alarms), rule_states)
            else:
                # each event says what the link is now: offline, fault, or neither (online)
                verdicts = [
                    Verdict(rule, message.event is event, None, None)
                    for event, rule in LINK_RULES.items()
                ]
            device.last_seen = message.ts
            device.last_stream, device.last_seq = stream, message.seq
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
        settle_state(device, open_alarms.values())
        return new_notices

    def _late_presses(self, device: Device, message: ReadingBatch | DeviceEvent) -> list[Verdict]:
        """The immediate flag rules (a button pressed) an overtaken batch breaches."""
        if not isinstance(message, ReadingBatch):
            return []
        return [
            Verdict(rule, True, None, None)
            for rule in self.rules[device.id]
            if rule.immediate and message.flags.get(rule.field) is True
        ]

    def _raise(
        self,
        session: Session,
        device: Device,
        institution: Institution,
        verdict: Verdict,
        message: ReadingBatch | DeviceEvent,
    ) -> Alarm:
        rule = verdict.rule
        reason = message.reason if isinstance(message, DeviceEvent) else ""
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
        )
        if rule.major_hazard and rule.severity is Severity.ALARM:
            self._record_hazard(session, device, institution, rule, alarm)
        return alarm

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
    ) -> Alarm:
        """An alarm of a device or (a link fault) of a gateway: raised, recorded, told."""
        rule = verdict.rule
        alarm = Alarm(
            device_id=device_id,
            gateway_id=gateway_id,
            institution_id=institution.id,
            rule=rule.name,
            title=rule.title_zh,
            severity=rule.severity.value,
            status="active",
            value=verdict.value,
            set_point=verdict.set_point,
            unit=rule.unit,
            raised_at=at,
        )
        session.add(alarm)
        session.flush()
        if _RAISED not in session.info:
            session.info[_RAISED] = []
            event.listen(session, "after_commit", self._raised_committed)
        session.info[_RAISED].append(
            (alarm.id, device_id or gateway_id, rule.name, institution.name)
        )
        lifecycle.record(session, alarm, "raise", lifecycle.SYSTEM, note, None)
        self.outbox.add(session, institution.id, alarm.id, notice)
        return alarm

    def _clear(
        self,
        session: Session,
        device: Device,
        institution: Institution,
        alarm: Alarm,
        verdict: Verdict,
    ) -> None:
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
        self.outbox.add(session, institution.id, alarm.id, notice)

    def _what(self, device: Device) -> str:
        return f"{self.profiles[device.id].title_zh}（{device.id}）"

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


def lease_name(partition: Partition) -> str:
    return f"{CONSUMER}/{partition}"


@dataclass(frozen=True)
class ConsumerView:
    """What /metrics reads of a consumer, for a replica that runs several."""

    name: str
    handled: int
    dead_letters: DeadLetters
    connected: bool
    admit: Admission


def _reading(verdict: Verdict) -> str:
    if verdict.value is None:
        return ""
    return f"{verdict.value:g} {verdict.rule.unit}（设定值 {verdict.set_point:g}）"
