"""Applies the escalation plans to the database: steps taken, notices stored, next times known.

``sweep(now)`` looks at every subject that may still need a step (alarms nobody acknowledged,
entries under rectification, signed-off entries awaiting their re-check), takes what is due and
returns when each subject's next step falls due, keyed by subject (``alarm:7``, ``hazard:3``).
``advance(subject, now)`` does the same for one subject.  Both take ``now`` from the caller:
the scheduler passes the wall clock, tests pass whatever instant they want to look at.

A step is taken in one transaction with its notice (the durable outbox the notifier sends
from) and its ``escalation_steps`` row, whose uniqueness makes the step happen once.  A notice
goes to a person (the head, the bureau's duty officer, the responsible person) on the first
configured channel that has an address for them: their phone for SMS, their openid for template
messages, or on the group robot the group they answer in (the institution's, the bureau's).

One subject never stops the others: a subject whose plan or step raises (a stored value no
code expected, a bug) is set aside with its reason, counted and logged once, and the sweep goes
on with the next; the next sweep looks at it again, since someone may have mended it.  Only the
database being away ends a sweep: no subject could be escalated then.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from alerts import escalation_notices as say
from alerts.escalation import Plan, Step, Taken, plan_alarm, plan_overdue, plan_recheck
from alerts.ledger import UNDER_RECTIFICATION, Status
from alerts.notices import NoticeMessage, gateway_names
from alerts.outbox import Routing
from alerts.rules import LINK_RULE, LINK_RULES
from firewatch.db import (
    Alarm,
    EscalationStep,
    Hazard,
    HazardEvent,
    Institution,
    Notice,
    Writer,
)
from firewatch.escalation_policy import EscalationPolicy
from firewatch.profiles import DeviceProfile, HazardCategory, Severity
from firewatch.site import Contact, Site

log = logging.getLogger(__name__)


#: how a channel that reaches people one by one addresses a person; the group robot addresses a
#: group instead
PERSONAL_ADDRESS = {"aliyun_sms": "phone", "tencent_sms": "phone", "wechat_oa": "wechat_openid"}
GROUP_CHANNEL = "wecom_robot"


def reach(routing: Routing, person: Contact | None, group: str | None) -> tuple[str, str | None]:
    """(channel, address) of the first configured channel, primary then fallback, with an
    address for ``person`` (or ``group`` on the group robot); address None: nobody to send to."""
    for channel in (routing.primary, routing.fallback):
        if channel is None or channel not in routing.available:
            continue
        attribute = PERSONAL_ADDRESS.get(channel)
        if channel == GROUP_CHANNEL:
            address = group
        else:
            address = getattr(person, attribute) if person and attribute else None
        if address:
            return channel, address
    return routing.primary, None


@dataclass(frozen=True)
class _Subject:
    row: Alarm | Hazard
    taken: Taken
    sign_off: HazardEvent | None = None  # a hazard's latest event, when it is its sign-off


class Escalator:
    def __init__(
        self,
        site: Site,
        profiles: dict[str, DeviceProfile],
        sessions: async_sessionmaker,
        writer: Writer,
        routing: Routing,
        *,
        default_webhook: str | None,
        notices_waiting: asyncio.Event,
        policy: EscalationPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.writer = writer  # the steps are written with the alert service's transactions
        self.routing = routing
        self.notices_waiting = notices_waiting
        self.policy = policy or site.escalation
        self.bureau = site.bureau
        self.bureau_group = (site.bureau and site.bureau.wecom_webhook_url) or default_webhook
        self.heads = {i.id: i.head for i in site.institutions}
        # what an alarm is about: a device, or (a link fault) a gateway
        self.locations = {d.id: d.location for d in site.devices}
        self.devices = {d.id: f"{profiles[d.profile].title_zh}（{d.id}）" for d in site.devices}
        for g in site.gateways:
            self.locations[g.id], self.devices[g.id] = gateway_names(g.id)
        self.categories = {
            (d.id, rule.name): rule.category
            for d in site.devices
            for rule in [*profiles[d.profile].alarms, *LINK_RULES.values()]
        } | {(g.id, LINK_RULE.name): LINK_RULE.category for g in site.gateways}
        self.steps_taken = 0
        #: subjects whose last look failed, with the error: logged when it first (or newly) fails
        self.set_aside: dict[str, str] = {}
        #: subjects set aside, by error class (a subject again only when its error changes)
        self.errors: Counter[str] = Counter()

    async def sweep(self, now: datetime) -> dict[str, datetime | None]:
        """Take every step due at ``now``; return each subject's next step time (None: no more).

        A subject set aside has no entry: it has no job until a sweep gets through it.
        """
        async with self.sessions() as session:
            subjects = await session.run_sync(self._subjects)
        self.set_aside = {k: v for k, v in self.set_aside.items() if k in subjects}
        schedule: dict[str, datetime | None] = {}
        for key, subject in subjects.items():
            try:
                plan = self._plan(subject, now)
                if plan.due:
                    plan = await self.advance(key, now)  # re-read and take, in one transaction
            except (OperationalError, InterfaceError):
                raise  # the database away: the next sweep tries every subject again
            except Exception as exc:
                self.put_aside(key, exc)
                continue
            self._looked_at(key)
            schedule[key] = plan.next_at
        return schedule

    def put_aside(self, key: str, exc: Exception) -> None:
        """``key`` failed for a reason of its own: counted and logged once per new reason."""
        reason = f"{type(exc).__name__}: {exc}"
        if self.set_aside.get(key) != reason:
            self.errors[type(exc).__name__] += 1
            log.error("escalation %s set aside (%s); the others go on", key, reason, exc_info=exc)
        self.set_aside[key] = reason

    def _looked_at(self, key: str) -> None:
        if self.set_aside.pop(key, None) is not None:
            log.info("escalation %s is escalated again", key)

    async def advance(self, key: str, now: datetime) -> Plan:
        """Take the steps of one subject due at ``now``; nothing if it needs none any more.

        A scheduled step and a sweep may reach one subject together: on the one writer, one
        reads, takes and commits before the other reads (across replicas, the unique step row
        decides).
        """
        plan = await self.writer.run(partial(self._take, key=key, now=now))
        if plan.due:
            self.steps_taken += len(plan.due)
            self.notices_waiting.set()
        return plan

    def _take(self, session: Session, key: str, now: datetime) -> Plan:
        subject = self._subjects(session, key).get(key)
        if subject is None:
            return Plan()
        plan = self._plan(subject, now)
        institution = session.get_one(Institution, subject.row.institution_id)
        for due in plan.due:
            session.add(
                EscalationStep(
                    subject=key.partition(":")[0],
                    subject_id=subject.row.id,
                    step=due.step.value,
                    round=due.round,
                    due_at=due.at,
                    taken_at=now,
                )
            )
            person, group, message = self._notice(due.step, subject, institution, now)
            session.add(self._stored(institution.id, subject.row, person, group, message))
            log.info("escalation %s: %s (round %d) taken", key, due.step, due.round)
        return plan

    def _plan(self, subject: _Subject, now: datetime) -> Plan:
        row = subject.row
        if isinstance(row, Alarm):
            category = self.categories.get((_about(row), row.rule), HazardCategory.OTHER)
            alarm_timing = self.policy.for_alarm(category, Severity(row.severity))
            told_at = row.released_at or row.raised_at
            return plan_alarm(
                now, told_at, row.acknowledged_at is not None, alarm_timing, subject.taken
            )
        ledger_timing = self.policy.for_entry(HazardCategory(row.category))
        if subject.sign_off is not None:
            return plan_recheck(
                now,
                row.status,
                subject.sign_off.at,
                subject.sign_off.id,
                ledger_timing,
                subject.taken,
            )
        return plan_overdue(now, row.status, row.deadline, ledger_timing, subject.taken)

    def _notice(
        self, step: Step, subject: _Subject, institution: Institution, now: datetime
    ) -> tuple[Contact | None, str | None, NoticeMessage]:
        """Whom the step's notice is for, the group they answer in, and what it says."""
        row = subject.row
        own_group = self.routing.recipients.get(institution.id, {}).get(GROUP_CHANNEL)
        duty = self.bureau.duty if self.bureau else None
        if isinstance(row, Alarm):
            where = self.locations.get(_about(row), _about(row))
            device = self.devices.get(_about(row), _about(row))
            if step is Step.HEAD:
                return (
                    self.heads.get(institution.id),
                    own_group,
                    say.alarm_to_head(institution, row, where, device, now),
                )
            return (
                duty,
                self.bureau_group,
                say.alarm_to_bureau(self.bureau, institution, row, where, device, now),
            )
        if step is Step.OVERDUE:
            responsible = Contact(name=row.responsible_person, phone=row.responsible_phone)
            return responsible, own_group, say.overdue_reminder(institution, row, now)
        if step is Step.FLAG:
            return duty, self.bureau_group, say.overdue_flag(institution, row, now)
        assert subject.sign_off is not None
        return duty, self.bureau_group, say.recheck_due(institution, row, subject.sign_off.at)

    def _stored(
        self,
        institution_id: str,
        row: Alarm | Hazard,
        person: Contact | None,
        group: str | None,
        message: NoticeMessage,
    ) -> Notice:
        channel, address = reach(self.routing, person, group)
        whom = person.name if person else "the bureau"
        return Notice(
            alarm_id=row.id if isinstance(row, Alarm) else None,
            institution_id=institution_id,
            channel=channel,
            target=address or "",
            body=message.model_dump(mode="json"),
            status="pending" if address else "unconfigured",
            last_error=None if address else f"no address on {channel} for {whom}",
        )

    def _subjects(self, session: Session, key: str | None = None) -> dict[str, _Subject]:
        """Subjects that may still need a step (or just ``key``, if it does), with steps taken."""
        kind, _, number = (key or "").partition(":")
        subjects: dict[str, _Subject] = {}
        if kind in ("", "alarm"):
            bureau_told = select(EscalationStep.id).where(
                EscalationStep.subject == "alarm",
                EscalationStep.subject_id == Alarm.id,
                EscalationStep.step == Step.BUREAU.value,
            )
            alarm_query = select(Alarm).where(
                Alarm.acknowledged_at.is_(None),
                not_(bureau_told.exists()),
                # held by shielding or test mode: escalated only once told (alerts.mode_ends)
                or_(Alarm.mode.is_(None), Alarm.released_at.is_not(None)),
            )
            if number:
                alarm_query = alarm_query.where(Alarm.id == int(number))
            alarms = list(session.scalars(alarm_query))
            taken = _taken(session, "alarm", [a.id for a in alarms])
            subjects |= {f"alarm:{a.id}": _Subject(a, taken.get(a.id, frozenset())) for a in alarms}
        if kind in ("", "hazard"):
            latest = (
                select(HazardEvent.hazard_id, func.max(HazardEvent.id).label("event_id"))
                .group_by(HazardEvent.hazard_id)
                .subquery()
            )
            query = (
                select(Hazard, HazardEvent)
                .join(latest, latest.c.hazard_id == Hazard.id)
                .join(HazardEvent, HazardEvent.id == latest.c.event_id)
                .where(
                    or_(
                        Hazard.status.in_(UNDER_RECTIFICATION),
                        and_(Hazard.status == Status.CLOSED, HazardEvent.action == "sign-off"),
                    )
                )
            )
            if number:
                query = query.where(Hazard.id == int(number))
            rows = list(session.execute(query).all())
            taken = _taken(session, "hazard", [h.id for h, _ in rows])
            subjects |= {
                f"hazard:{h.id}": _Subject(
                    h, taken.get(h.id, frozenset()), event if h.status == Status.CLOSED else None
                )
                for h, event in rows
            }
        return subjects


def _about(alarm: Alarm) -> str:
    """The device an alarm is about or, for a link fault, the gateway."""
    return alarm.device_id or alarm.gateway_id or ""


def _taken(session: Session, subject: str, ids: list[int]) -> dict[int, Taken]:
    if not ids:
        return {}
    rows = session.execute(
        select(EscalationStep.subject_id, EscalationStep.step, EscalationStep.round).where(
            EscalationStep.subject == subject, EscalationStep.subject_id.in_(ids)
        )
    )
    taken: dict[int, set[tuple[str, int]]] = {}
    for subject_id, step, round_ in rows:
        taken.setdefault(subject_id, set()).add((step, round_))
    return {k: frozenset(v) for k, v in taken.items()}
