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

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from alerts import lifecycle
from alerts.alarm_book import AlarmBook
from alerts.device_rows import DeviceNow, RuleMemories, read_devices, write_devices
from alerts.mode_ends import ModeEnds
from alerts.outbox import Outbox
from alerts.rules import (
    LINK_RULES,
    RuleMemory,
    Verdict,
    evaluate,
    ladders_for,
    level_in_force,
    may_raise_at_once,
    rules_for,
    rules_in_alarm,
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
from firewatch.db import (
    ACTIVE_ALARM,
    Alarm,
    Institution,
    Writer,
)
from firewatch.dead_letters import DEAD_LETTER_KEEP, DeadLetters
from firewatch.leases import Duty, LeaseKeeper
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.profiles import AlarmRule, DeviceProfile
from firewatch.site import Site
from firewatch.supervise import supervise

log = logging.getLogger(__name__)

CONSUMER = "alerts"


#: the open alarms of a transaction's devices, built once: a statement made per transaction
#: cost more CPU than the transaction's own work (``ids``: the devices)
_OPEN_ALARMS = select(Alarm).where(
    Alarm.device_id.in_(bindparam("ids", expanding=True)), Alarm.status.in_(ACTIVE_ALARM)
)


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
        mode_sweep_s: float = 2.0,
        leased: bool = False,
    ) -> None:
        """``leased``: the replicas hold the partitions by leases and take over each other's
        (firewatch.leases; :attr:`keeper` is then set before :meth:`run`); otherwise this
        replica reads ``partition`` alone, for as long as it runs."""
        self.sessions = sessions  # to read back what the writer wrote
        self.writer = writer
        self.keep_applied = keep_applied
        self.notices_waiting = notices_waiting
        self.rules = {
            d.id: rules_for(d, profiles[d.profile], site.institution(d.institution))
            for d in site.devices
        }
        self.profiles = {d.id: profiles[d.profile] for d in site.devices}
        # rules that are levels of one condition: one alarm each, rising (docs/alarm-ladders.md)
        self.ladders = {
            d.id: ladders_for(self.rules[d.id], self.profiles[d.id]) for d in site.devices
        }
        # what an alarm's steps write, for this service, the link watch and the mode sweep
        self.book = AlarmBook(self.rules, self.profiles, self.ladders, outbox, hazard_deadline)
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
        # and ends the shielding and test modes of the devices of the gateways it reads now
        self._gateway_of = {d.id: d.gateway for d in site.devices}
        self.modes = ModeEnds(self, self._owns_device, mode_sweep_s)
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

    def _owns_device(self, device_id: str) -> bool:
        gateway = self._gateway_of.get(device_id)
        return gateway is not None and self.owns(gateway)

    def owns(self, gateway_id: str) -> bool:
        """Whether this replica reads ``gateway_id``'s messages now."""
        if self.keeper is None:
            return self.partition.owns(gateway_id)
        held = self.keeper.held
        return any(lease_name(p) in held and p.owns(gateway_id) for p in self.consumers)

    @property
    def raised(self) -> int:
        """Alarms raised by this replica's committed transactions, of every kind."""
        return self.book.raised

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
                "device-modes": self.modes.run,
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
            "alarms_raised": self.book.raised,
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
        ids = list({m.device_id for m in fresh if m.device_id in self.rules})
        devices = read_devices(session, ids)
        open_alarms: dict[str, dict[str, Alarm]] = {i: {} for i in ids}
        for alarm in session.scalars(_OPEN_ALARMS, {"ids": ids}):
            assert alarm.device_id is not None  # the query asked for these devices' alarms
            open_alarms[alarm.device_id][alarm.rule] = alarm
        memories = RuleMemories(session, ids)
        for message in fresh:
            device = devices.get(message.device_id)
            if device is None or message.device_id not in self.rules:
                log.warning("message from unknown device %s ignored", message.device_id)
                continue
            new_notices |= self._apply_one(
                session, message, device, open_alarms[device.id], memories
            )
        memories.write(session)
        write_devices(session, list(devices.values()))
        return new_notices

    def _apply_one(
        self,
        session: Session,
        message: ReadingBatch | DeviceEvent,
        device: DeviceNow,
        open_alarms: dict[str, Alarm],
        memories: RuleMemories,
    ) -> bool:
        """One message's effect on its device; True if it stored notices.

        Messages are ordered by their place in the gateway's stream (incarnation, seq), which
        the gateway guarantees, not by its clock, which can step back: a reading stamped in
        the future must not make the real ones after it look old.
        """
        stream = f"{message.gateway_id}/{message.incarnation}"
        ladders = self.ladders[device.id]
        on = rules_in_alarm(open_alarms.values(), ladders)
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
                verdicts = self._evaluate(device, message, on, memories)
            else:
                # each event says what the link is now: offline, fault, or neither (online)
                verdicts = [
                    Verdict(rule, message.event is event, None, None)
                    for event, rule in LINK_RULES.items()
                ]
            device.last_seen = message.ts
            device.last_stream, device.last_seq = stream, message.seq
            device.heard = True
        new_notices = False
        climbing: dict[str, dict[str, Verdict]] = {}
        for verdict in verdicts:
            if verdict.rule.name in ladders:
                levels = ladders[verdict.rule.name]
                climbing.setdefault(levels[0].name, {})[verdict.rule.name] = verdict
                continue
            alarm = open_alarms.get(verdict.rule.name)
            if verdict.breached and alarm is None:
                institution = session.get_one(Institution, device.institution_id)
                alarm = self.book.raise_alarm(session, device, institution, verdict, message)
                open_alarms[alarm.rule] = alarm
                new_notices = True
            elif not verdict.breached and alarm is not None:
                institution = session.get_one(Institution, device.institution_id)
                self.book.clear(session, device, institution, alarm, verdict)
                del open_alarms[alarm.rule]
                new_notices = True
        for lowest, said in climbing.items():
            new_notices |= self._climb(
                session, device, message, ladders[lowest], said, open_alarms, on
            )
        settle_state(device, open_alarms.values())
        return new_notices

    def _climb(
        self,
        session: Session,
        device: DeviceNow,
        message: ReadingBatch | DeviceEvent,
        levels: list[AlarmRule],
        verdicts: dict[str, Verdict],
        open_alarms: dict[str, Alarm],
        on: set[str],
    ) -> bool:
        """A ladder's verdicts on its one alarm: raised at the level in force, risen (told) to a
        higher one, moved down (not told) to a lower one, cleared when none is; True if
        notices were stored."""
        names = [r.name for r in levels]
        alarm = self._one_alarm(session, open_alarms, names)
        now = level_in_force(levels, verdicts, on)
        if alarm is None and now < 0:
            return False
        if alarm is None:  # no level was on: the one in force now has a verdict, breached
            institution = session.get_one(Institution, device.institution_id)
            alarm = self.book.raise_alarm(
                session, device, institution, verdicts[names[now]], message
            )
            open_alarms[alarm.rule] = alarm
            return True
        if now < 0:
            del open_alarms[alarm.rule]
            # the reading against the lowest level's set point: what the all-clear is measured by
            said = verdicts.get(names[0]) or next(iter(verdicts.values()))
            institution = session.get_one(Institution, device.institution_id)
            self.book.clear(session, device, institution, alarm, said)
            return True
        peak_at = names.index(alarm.rule)
        # a level the profile no longer has in this ladder: taken as the highest reached
        held = names.index(alarm.current_level) if alarm.current_level in names else peak_at
        if now > peak_at:
            del open_alarms[alarm.rule]
            institution = session.get_one(Institution, device.institution_id)
            self.book.rise(session, device, institution, alarm, verdicts[names[now]], message)
            open_alarms[alarm.rule] = alarm
            return True
        if now != held:  # back within the levels reached: recorded, not told
            alarm.level = names[now]
            lifecycle.record(
                session,
                alarm,
                "rise" if now > held else "fall",
                lifecycle.SYSTEM,
                f"{levels[held].title_zh}→{levels[now].title_zh}",
                alarm.status,
            )
        return False

    def _one_alarm(
        self, session: Session, open_alarms: dict[str, Alarm], names: list[str]
    ) -> Alarm | None:
        """The ladder's one open alarm.  A database from before ladders may hold one per level
        (gas low and high): the highest stays the incident's, the others are cleared into it."""
        found = [open_alarms[n] for n in names if n in open_alarms]
        if len(found) <= 1:
            return found[0] if found else None
        *merged, kept = found  # ``names`` is lowest first
        for alarm in merged:
            del open_alarms[alarm.rule]
            lifecycle.clear(session, alarm, f"并入报警 {kept.id}：同一条件的分级报警合为一条")
        session.flush()  # before the kept one may be renamed to a level a merged one held
        return kept

    def _late_presses(
        self, device: DeviceNow, message: ReadingBatch | DeviceEvent
    ) -> list[Verdict]:
        """The immediate flag rules (a button pressed) an overtaken batch breaches."""
        if not isinstance(message, ReadingBatch):
            return []
        return [
            Verdict(rule, True, None, None)
            for rule in self.rules[device.id]
            if rule.immediate and message.flags.get(rule.field) is True
        ]

    def _evaluate(
        self, device: DeviceNow, batch: ReadingBatch, in_alarm: set[str], memories: RuleMemories
    ) -> list[Verdict]:
        """The rules' verdicts on ``batch``, their memory (delays, rates) kept in the database."""
        known = memories.of[device.id]
        memory = {name: RuleMemory.from_json(m) for name, m in known.items()}
        verdicts = evaluate(
            self.rules[device.id], batch.readings, batch.flags, in_alarm, memory, batch.ts
        )
        for name, mem in memory.items():
            memories.keep(device.id, name, mem.to_json(), blank=mem == RuleMemory())
        return verdicts


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
