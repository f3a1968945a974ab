"""When to escalate: pure functions of (now, a subject's state, the timings, the steps taken).

Each returns the steps due at ``now`` and when the next one falls due.  They hold no clock and do
no I/O, so the whole schedule can be checked at any instant without waiting; the escalator
applies them to the database, and the scheduler calls the escalator when a step falls due.

- An alarm nobody acknowledges goes to the institution's head after ``to_head``, then to the
  bureau after ``to_bureau`` (提级).  Acknowledging it ends the schedule.
- A ledger entry still in the responsible unit's hands past its deadline is flagged to the
  bureau once and its responsible person reminded every ``remind_every`` (round 0 at the
  deadline, round n at deadline + n × remind_every).  After downtime only the latest round is
  sent: one reminder, not a backlog.
- A signed-off entry (销号) is due for its re-check (回头看) ``recheck_after`` later.  Each
  sign-off is its own round (the sign-off event's id), so an entry reopened by a failed
  re-check and signed off again is re-checked again.

A step that would fall after the end of the calendar (a self-check entry given a deadline in
year 9999, a reminder after it) is never due: it is left out, not an overflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from alerts.ledger import UNDER_RECTIFICATION, Status
from firewatch.escalation_policy import AlarmTiming, LedgerTiming


class Step(StrEnum):
    HEAD = "head"  # alarm unacknowledged: the institution's head (机构主要负责人)
    BUREAU = "bureau"  # still unacknowledged: the bureau (提级)
    OVERDUE = "overdue"  # entry past its deadline: remind the responsible person (repeats)
    FLAG = "flag"  # entry past its deadline: flag it to the bureau (once)
    RECHECK = "recheck"  # signed-off entry: the re-check (回头看) is due


@dataclass(frozen=True)
class Due:
    step: Step
    round: int
    at: datetime


@dataclass(frozen=True)
class Plan:
    due: tuple[Due, ...] = ()
    next_at: datetime | None = None


#: (step, round) pairs already taken for a subject
Taken = frozenset[tuple[str, int]]


def _due(step: Step, round_: int, start: datetime, offset: timedelta) -> Due | None:
    """The step at ``start + offset``; None if that is past datetime's range: never due."""
    try:
        return Due(step, round_, start + offset)
    except OverflowError:
        return None


def _plan(now: datetime, schedule: Iterable[Due | None], taken: Taken) -> Plan:
    pending = [d for d in schedule if d is not None and (d.step.value, d.round) not in taken]
    return Plan(
        due=tuple(d for d in pending if d.at <= now),
        next_at=min((d.at for d in pending if d.at > now), default=None),
    )


def plan_alarm(
    now: datetime, raised_at: datetime, acknowledged: bool, timing: AlarmTiming, taken: Taken
) -> Plan:
    if acknowledged:
        return Plan()
    return _plan(
        now,
        [
            _due(Step.HEAD, 0, raised_at, timing.to_head),
            _due(Step.BUREAU, 0, raised_at, timing.to_bureau),
        ],
        taken,
    )


def plan_overdue(
    now: datetime, status: str, deadline: datetime, timing: LedgerTiming, taken: Taken
) -> Plan:
    if status not in UNDER_RECTIFICATION:
        return Plan()
    latest = max(0, (now - deadline) // timing.remind_every)
    return _plan(
        now,
        [
            Due(Step.FLAG, 0, deadline),
            _due(Step.OVERDUE, latest, deadline, latest * timing.remind_every),
            _due(Step.OVERDUE, latest + 1, deadline, (latest + 1) * timing.remind_every),
        ],
        taken,
    )


def plan_recheck(
    now: datetime,
    status: str,
    signed_off_at: datetime,
    sign_off_event: int,
    timing: LedgerTiming,
    taken: Taken,
) -> Plan:
    """``signed_off_at`` and ``sign_off_event``: the entry's latest event, if it is a sign-off."""
    if status != Status.CLOSED:
        return Plan()
    return _plan(
        now, [_due(Step.RECHECK, sign_off_event, signed_off_at, timing.recheck_after)], taken
    )
