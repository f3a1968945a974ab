"""How alarms were confirmed, per institution, township, device model or rule.

What bureaus rank institutions and device models by (GB/T 45839 5.10.2: management efficiency,
time from alarm to handling).  For each group:

- ``alarms``: raised in the period (``since`` ≤ raised < ``until``); ``confirmed``: of those,
  acknowledged by someone; the counts of each classification, and ``unclassified`` (confirmed
  before classifications existed: 未分类);
- ``false_alarm_rate``: false alarms (误报) over the alarms whose nature is known (classified);
  none while no alarm of the group is classified.  An alarm nobody has confirmed yet says
  nothing about being false, so it is not in the denominator;
- ``median_confirm_s`` and ``p90_confirm_s``: time from raised to confirmed, over the confirmed
  alarms; the median is the middle value (the mean of the two middle ones for an even count),
  the 90th percentile is nearest-rank (the smallest time at least 90 % of them were confirmed
  within, an observed time, never an interpolation);
- ``within_escalation_share``: the share confirmed before their escalation to the head fell
  due (the site's ``escalation`` timing for the alarm's category and severity), over the
  alarms that are decided: confirmed, or past that time unconfirmed.  An alarm raised a
  minute ago and still open counts neither way yet.

The rows come from SQL (one join over the period); the figures are computed here, exactly, from
the times themselves.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.confirmation import Classification
from alerts.ledger_report import LedgerFilter
from alerts.rules import LINK_RULE, LINK_RULES
from firewatch.db import Alarm, Device, Institution
from firewatch.escalation_policy import EscalationPolicy
from firewatch.profiles import DeviceProfile, HazardCategory, Severity


class AlarmGroupBy(StrEnum):
    INSTITUTION = "institution"
    TOWNSHIP = "township"
    MODEL = "model"
    RULE = "rule"


#: a gateway's link fault has no device, and so no device model
GATEWAY_MODEL = "gateway"


@dataclass(frozen=True)
class AlarmRow:
    institution_id: str
    institution_name: str
    township: str
    model: str  # the device's profile, or GATEWAY_MODEL
    rule: str
    title: str
    severity: str
    raised_at: datetime
    acknowledged_at: datetime | None
    classification: str | None


def query(institution_id: str | None, since: datetime | None, until: datetime | None) -> Select:
    chosen = (
        select(
            Alarm.institution_id,
            Institution.name,
            Institution.township,
            Device.profile,
            Alarm.rule,
            Alarm.title,
            Alarm.severity,
            Alarm.raised_at,
            Alarm.acknowledged_at,
            Alarm.classification,
        )
        .join(Institution, Institution.id == Alarm.institution_id)
        .outerjoin(Device, Device.id == Alarm.device_id)
    )
    if institution_id is not None:
        chosen = chosen.where(Alarm.institution_id == institution_id)
    if since is not None:
        chosen = chosen.where(Alarm.raised_at >= since)
    if until is not None:
        chosen = chosen.where(Alarm.raised_at < until)
    return chosen


async def alarm_rows(
    session: AsyncSession,
    institution_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AlarmRow]:
    rows = await session.execute(query(institution_id, since, until))
    return [
        AlarmRow(
            institution_id=r[0],
            institution_name=r[1],
            township=r[2],
            model=r[3] or GATEWAY_MODEL,
            rule=r[4],
            title=r[5],
            severity=r[6],
            raised_at=r[7],
            acknowledged_at=r[8],
            classification=r[9],
        )
        for r in rows
    ]


def escalation_budget(
    policy: EscalationPolicy, profiles: dict[str, DeviceProfile]
) -> Callable[[AlarmRow], timedelta]:
    """How long an alarm may wait for its confirmation before it goes to the head."""
    categories = {
        (name, rule.name): rule.category
        for name, profile in profiles.items()
        for rule in [*profile.alarms, *LINK_RULES.values()]
    }
    categories[(GATEWAY_MODEL, LINK_RULE.name)] = LINK_RULE.category

    def budget(row: AlarmRow) -> timedelta:
        category = categories.get((row.model, row.rule), HazardCategory.OTHER)
        return policy.for_alarm(category, Severity(row.severity)).to_head

    return budget


def model_names(profiles: dict[str, DeviceProfile]) -> dict[str, str]:
    """What a device model is called in the statistics: its profile's title and name."""
    return {name: f"{p.title_zh}（{name}）" for name, p in profiles.items()} | {
        GATEWAY_MODEL: "物联网网关"
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def nearest_rank(values: list[float], share: float) -> float | None:
    """The smallest value at least ``share`` of ``values`` are at or below (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def figures(
    rows: list[AlarmRow], budget: Callable[[AlarmRow], timedelta], now: datetime
) -> dict[str, Any]:
    """The figures of one group of alarms (see the module's docstring)."""
    confirmed = [r for r in rows if r.acknowledged_at is not None]
    waits = [(r.acknowledged_at - r.raised_at).total_seconds() for r in confirmed]  # type: ignore[operator]
    counts = {c.value: sum(1 for r in confirmed if r.classification == c) for c in Classification}
    classified = sum(counts.values())
    within = sum(
        1
        for r in confirmed
        if r.acknowledged_at is not None and r.acknowledged_at - r.raised_at <= budget(r)
    )
    decided = len(confirmed) + sum(
        1 for r in rows if r.acknowledged_at is None and now - r.raised_at > budget(r)
    )
    return {
        "alarms": len(rows),
        "confirmed": len(confirmed),
        **counts,
        "unclassified": len(confirmed) - classified,
        "false_alarm_rate": counts[Classification.FALSE] / classified if classified else None,
        "median_confirm_s": median(waits),
        "p90_confirm_s": nearest_rank(waits, 0.9),
        "within_escalation": within,
        "within_escalation_share": within / decided if decided else None,
    }


def summarise(
    rows: list[AlarmRow],
    by: AlarmGroupBy,
    budget: Callable[[AlarmRow], timedelta],
    now: datetime,
    model_names: dict[str, str],
) -> dict[str, Any]:
    """Each group's figures, by key, and the figures of all of them together."""
    key: Callable[[AlarmRow], tuple[str, str]] = {
        AlarmGroupBy.INSTITUTION: lambda r: (r.institution_id, r.institution_name),
        AlarmGroupBy.TOWNSHIP: lambda r: (r.township, r.township),
        AlarmGroupBy.MODEL: lambda r: (r.model, model_names.get(r.model, r.model)),
        AlarmGroupBy.RULE: lambda r: (r.rule, r.title),
    }[by]
    groups: dict[tuple[str, str], list[AlarmRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return {
        "by": by.value,
        "rows": [
            {"key": k, "label": label, **figures(group, budget, now)}
            for (k, label), group in sorted(groups.items())
        ],
        "totals": figures(rows, budget, now),
    }


#: the statistics the ledger's export adds, for the entries' filters (institution, dates)
ConfirmationReports = Callable[
    [AsyncSession, LedgerFilter, datetime], Awaitable[list[dict[str, Any]]]
]


def confirmation_reports(
    budget: Callable[[AlarmRow], timedelta], model_names: dict[str, str]
) -> ConfirmationReports:
    """What the export's confirmation sheet shows: each grouping, over the alarms raised
    within the ledger filter's dates, of its institution if it names one."""

    async def reports(
        session: AsyncSession, where: LedgerFilter, now: datetime
    ) -> list[dict[str, Any]]:
        rows = await alarm_rows(session, where.institution_id, where.since, where.until)
        return [summarise(rows, by, budget, now, model_names) for by in AlarmGroupBy]

    return reports
