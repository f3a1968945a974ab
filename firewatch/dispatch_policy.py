"""Dispatch policy (派发策略): which alarms go out at once on several means, and on which.

GB/T 45839-2025 (5.10.4) asks that a fire alarm reach the responsible people within 15 s by at
least two means (SMS, phone call, app push).  Waiting for one channel to fail before trying the
next (the notifier's fallback) cannot meet that, so a *fire-class* alarm - one whose rule's
category and severity a rule below names - is stored as one notice per listed means, all due
at the same instant, to the institution's duty person (the first on its call list) or, for the
group robot, to the duty group.  Every other notice goes out as before, on the configured
channel with its fallback.

Means, not providers: ``robot`` (WeChat Work group robot), ``sms`` (Alibaba Cloud or Tencent
Cloud SMS, whichever has credentials), ``voice`` (Alibaba Cloud or Tencent Cloud voice call),
``wechat`` (Official Account template message).  A county changes providers in its settings,
not in its site file.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from firewatch.profiles import HazardCategory, Severity


class Means(StrEnum):
    ROBOT = "robot"
    SMS = "sms"
    VOICE = "voice"
    WECHAT = "wechat"


#: the channels (alerts.channels) that carry each means, in order of preference
CHANNELS_OF = {
    Means.ROBOT: ("wecom_robot",),
    Means.SMS: ("aliyun_sms", "tencent_sms"),
    Means.VOICE: ("aliyun_vms", "tencent_vms"),
    Means.WECHAT: ("wechat_oa",),
}
#: the channels that call a phone: their outcome (answered or not) is asked for afterwards
VOICE_CHANNELS = frozenset(CHANNELS_OF[Means.VOICE])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AtOnce(_Strict):
    """Alarms of ``category`` at ``severity`` go out on every one of ``means`` at once."""

    category: HazardCategory
    severity: Severity = Severity.ALARM
    means: tuple[Means, ...] = Field(
        min_length=2, max_length=4, description="two or more, sent at the same moment"
    )

    @field_validator("means")
    @classmethod
    def _distinct(cls, means: tuple[Means, ...]) -> tuple[Means, ...]:
        if len(set(means)) != len(means):
            raise ValueError(f"a means is named twice in {[m.value for m in means]}")
        return means


#: one-key button, gas and electrical (temperature, residual current) alarms: the fire class
DEFAULT_AT_ONCE = (
    AtOnce(category=HazardCategory.FIRE_FACILITIES, means=(Means.ROBOT, Means.SMS)),
    AtOnce(category=HazardCategory.GAS, means=(Means.ROBOT, Means.SMS)),
    AtOnce(category=HazardCategory.ELECTRICAL, means=(Means.ROBOT, Means.SMS)),
)


class DispatchPolicy(_Strict):
    at_once: tuple[AtOnce, ...] = Field(
        DEFAULT_AT_ONCE,
        description="fire-class alarms by category and severity; the first that fits applies",
    )

    @field_validator("at_once")
    @classmethod
    def _one_each(cls, rules: tuple[AtOnce, ...]) -> tuple[AtOnce, ...]:
        keys = [(r.category, r.severity) for r in rules]
        twice = sorted({f"{c.value}/{s.value}" for c, s in keys if keys.count((c, s)) > 1})
        if twice:
            raise ValueError(f"category/severity given twice: {twice}")
        return rules

    def means_for(self, category: str, severity: str) -> tuple[Means, ...]:
        """The means an alarm of ``category`` at ``severity`` goes out on at once; () if it is
        not fire-class (it goes out on the configured channel, with its fallback)."""
        return next(
            (r.means for r in self.at_once if r.category == category and r.severity == severity),
            (),
        )
