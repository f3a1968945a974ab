"""Putting notices in the outbox: which channel and recipient, and storm control.

A notice is stored in the transaction of the alarm it tells of (the notifier sends it later),
on the configured channel if the institution has a recipient there, else on the fallback.  A
fire-class alarm (the site's dispatch policy, firewatch.dispatch_policy) is stored as one
notice per means, all due at once: the duty group's robot, the duty person's phone by SMS and
by a voice call.  A means with no provider configured or nobody to send to is stored as
``unconfigured``, so what was not sent is seen.

Storm control, per institution: the first notice goes out at once and opens a window of
``storm_window_s``.  What comes within the window is folded into one summary notice, sent at
the window's end, that says how many and which; a storm that goes on gets one summary per
window.  One-key alarms (``immediate`` rules) and fire-class alarms are never folded, held
back or counted: they must reach a person within seconds.  All of
it is read from the notices table, so a restart keeps the windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.notices import NoticeMessage, fold, summary_message
from firewatch.contract import utc_now
from firewatch.db import Notice
from firewatch.dispatch_policy import CHANNELS_OF, VOICE_CHANNELS, DispatchPolicy, Means
from firewatch.site import Site

#: a summary due sooner than this takes no more lines: the notifier may be reading it already
FOLD_MARGIN = timedelta(seconds=2)
#: how many of an institution's latest notices are looked at to find the storm window
LOOKBACK = 20


@dataclass(frozen=True)
class Routing:
    """Channels and recipients: ``recipients[institution][channel]`` is a webhook, a mobile
    number or an openid; only channels in ``available`` (configured) are used."""

    primary: str
    fallback: str | None
    available: frozenset[str]
    recipients: dict[str, dict[str, str]] = field(default_factory=dict)
    #: which alarms go out on several means at once; unset: none (each on the primary)
    dispatch: DispatchPolicy = DispatchPolicy(at_once=())

    def target(self, institution_id: str, channel: str | None) -> str | None:
        if channel is None or channel not in self.available:
            return None
        return self.recipients.get(institution_id, {}).get(channel)

    def first_choice(self, institution_id: str) -> tuple[str, str | None]:
        """(channel, target) a new notice goes out on; target None: nobody to send it to."""
        for channel in (self.primary, self.fallback):
            target = self.target(institution_id, channel)
            if target is not None and channel is not None:
                return channel, target
        return self.primary, None

    def at_once(self, institution_id: str, message: NoticeMessage) -> list[tuple[str, str | None]]:
        """(channel, target) of each means a fire-class raise goes out on at once; [] if the
        alarm is not fire-class.  A means goes on its first configured provider, or is named
        by its first provider (the notice then stored as unconfigured)."""
        if message.kind != "raise":
            return []
        chosen = []
        for means in self.dispatch.means_for(message.category, message.severity):
            providers = CHANNELS_OF[means]
            channel = next((c for c in providers if c in self.available), providers[0])
            chosen.append((channel, self.target(institution_id, channel)))
        return chosen


def recipients_of(site: Site, default_webhook: str | None) -> dict[str, dict[str, str]]:
    """Who hears of an institution's alarms on each channel: its duty group's robot, and its
    duty person (the first on its call list: the duty roster's, or the safety officer) by SMS,
    voice call and template message."""
    recipients = {}
    for i in site.institutions:
        duty = i.call_list()[0]
        mine = dict.fromkeys([*CHANNELS_OF[Means.SMS], *CHANNELS_OF[Means.VOICE]], duty.phone)
        if i.wecom_webhook_url or default_webhook:
            mine["wecom_robot"] = i.wecom_webhook_url or default_webhook or ""
        if duty.wechat_openid:
            mine["wechat_oa"] = duty.wechat_openid
        recipients[i.id] = mine
    return recipients


class Outbox:
    def __init__(self, routing: Routing, storm_window_s: float) -> None:
        self.routing = routing
        self.storm_window = timedelta(seconds=storm_window_s)

    def add(
        self, session: Session, institution_id: str, alarm_id: int | None, message: NoticeMessage
    ) -> None:
        fire_class = self.routing.at_once(institution_id, message)
        if fire_class:  # never folded: each must reach a person now, on every means at once
            now = utc_now()
            for to in fire_class:
                self._store(session, institution_id, alarm_id, message, now, to)
            return
        if (
            not message.immediate
            and self.storm_window
            and self._fold(session, institution_id, message)
        ):
            return
        self._store(session, institution_id, alarm_id, message, utc_now())

    def _store(
        self,
        session: Session,
        institution_id: str,
        alarm_id: int | None,
        message: NoticeMessage,
        due: datetime,
        to: tuple[str, str | None] | None = None,
    ) -> None:
        """Store a notice on ``to`` (channel, target; None: no one), by default the first
        choice of the routing."""
        channel, target = to or self.routing.first_choice(institution_id)
        why = None
        if not target:
            why = f"no recipient on {channel} for {institution_id}"
            if channel not in self.routing.available:
                why = f"channel {channel} has no provider configured"
        session.add(
            Notice(
                alarm_id=alarm_id,
                institution_id=institution_id,
                channel=channel,
                target=target or "",
                body=message.model_dump(mode="json"),
                status="pending" if target else "unconfigured",
                last_error=why,
                next_attempt_at=due,
                call_rank=0 if channel in VOICE_CHANNELS else None,
            )
        )

    def _fold(self, session: Session, institution_id: str, message: NoticeMessage) -> bool:
        """Fold ``message`` into the institution's storm window; False: none is open."""
        now = utc_now()
        latest = session.scalars(
            select(Notice)
            .where(Notice.institution_id == institution_id)
            .order_by(Notice.id.desc())
            .limit(LOOKBACK)
        )
        last = next((n for n in latest if not _body(n).get("immediate")), None)
        if last is None:
            return False
        try:
            shown = NoticeMessage.model_validate(last.body)
        except ValidationError:
            # a stored notice no channel can read (the notifier marks it failed) opens no
            # window; raising here would roll back the alarm this notice is about
            return False
        if shown.kind == "summary":
            assert shown.window_end is not None
            not_sent_yet = last.attempts == 0 and last.status != "sent"
            if not_sent_yet and shown.window_end > now + FOLD_MARGIN:
                fold(shown, message)
                last.body = shown.model_dump(mode="json")
                return True
            opened = shown.window_end
        else:
            opened = last.created_at
        if now - opened >= self.storm_window:
            return False
        window_end = max(opened + self.storm_window, now + FOLD_MARGIN)
        self._store(session, institution_id, None, summary_message(message, window_end), window_end)
        return True


def _body(notice: Notice) -> dict:
    return notice.body if isinstance(notice.body, dict) else {}
