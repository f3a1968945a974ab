"""Escalation timings (提级): how long an alarm may stay unacknowledged, how often an overdue
ledger entry is chased, when a signed-off entry is re-checked (回头看).

A county sets them in its site file under ``escalation:``; a field it leaves out keeps its
default below (a ``*_by_category`` map it gives replaces the default map whole).  The work
plans give the rhythm, not minutes: the institution's head checks major hazards at least
quarterly (hence a re-check after 90 days), gas and construction hazards are to be "found and
fixed at once" (立查立改, hence 30 days), and alarms must reach people in minutes.  The minute
figures are defaults for the bureau to review, not values from a standard.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from firewatch.profiles import HazardCategory, Severity

#: upper bounds: an escalation later than this is no escalation, and a larger figure (or .inf)
#: overflows the date arithmetic of the sweep
MAX_ALARM_MIN = 7 * 24 * 60.0
MAX_REMIND_HOURS = 31 * 24.0
MAX_RECHECK_DAYS = 3 * 366.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AlarmTiming(_Strict):
    head_after_min: float = Field(
        gt=0, le=MAX_ALARM_MIN, description="unacknowledged this long: tell the head"
    )
    bureau_after_min: float = Field(
        gt=0, le=MAX_ALARM_MIN, description="and this long after that: the bureau"
    )

    @property
    def to_head(self) -> timedelta:
        return timedelta(minutes=self.head_after_min)

    @property
    def to_bureau(self) -> timedelta:
        return self.to_head + timedelta(minutes=self.bureau_after_min)


class LedgerTiming(_Strict):
    remind_every_hours: float = Field(
        gt=0, le=MAX_REMIND_HOURS, description="overdue: remind again this often"
    )
    recheck_after_days: float = Field(
        gt=0, le=MAX_RECHECK_DAYS, description="signed off: re-check (回头看) after"
    )

    @property
    def remind_every(self) -> timedelta:
        return timedelta(hours=self.remind_every_hours)

    @property
    def recheck_after(self) -> timedelta:
        return timedelta(days=self.recheck_after_days)


_URGENT = AlarmTiming(head_after_min=3, bureau_after_min=5)
_PROMPT_RECHECK = LedgerTiming(remind_every_hours=24, recheck_after_days=30)
DEFAULT_ALARM_BY_CATEGORY = {
    HazardCategory.GAS: _URGENT,  # a leak grows by the minute
    HazardCategory.FIRE_FACILITIES: _URGENT,  # the one-key fire alarm
}
DEFAULT_LEDGER_BY_CATEGORY = {
    HazardCategory.GAS: _PROMPT_RECHECK,
    HazardCategory.CONSTRUCTION: _PROMPT_RECHECK,
    HazardCategory.ELECTRICAL: _PROMPT_RECHECK,
}


class EscalationPolicy(_Strict):
    alarm: AlarmTiming = AlarmTiming(head_after_min=5, bureau_after_min=10)
    alarm_by_category: dict[HazardCategory, AlarmTiming] = Field(
        default_factory=lambda: dict(DEFAULT_ALARM_BY_CATEGORY),
        description="per-category timings; a category not listed takes `alarm`",
    )
    fault: AlarmTiming = Field(
        AlarmTiming(head_after_min=60, bureau_after_min=240),
        description="device faults (offline, sensor fault): slower than danger",
    )
    ledger: LedgerTiming = LedgerTiming(remind_every_hours=24, recheck_after_days=90)
    ledger_by_category: dict[HazardCategory, LedgerTiming] = Field(
        default_factory=lambda: dict(DEFAULT_LEDGER_BY_CATEGORY),
        description="per-category timings; a category not listed takes `ledger`",
    )

    def for_alarm(self, category: HazardCategory, severity: Severity) -> AlarmTiming:
        if severity is Severity.FAULT:
            return self.fault
        return self.alarm_by_category.get(category, self.alarm)

    def for_entry(self, category: HazardCategory) -> LedgerTiming:
        return self.ledger_by_category.get(category, self.ledger)
