"""The self-check of the chain (巡检), alert side: each gateway's link, and the service's pulse.

Link: every message of a gateway (its heartbeat every ~15 s, its readings) says that the chain
gateway -> outbox -> broker -> alert service holds.  A gateway not heard of for longer than its
``silent_after_s`` (site file) or ``FIREWATCH_GATEWAY_SILENT_AFTER_S`` becomes a *link fault*:
one alarm of its institution naming the gateway (``LINK_RULE``), raised, noticed and escalated
through the same steps as a device fault (``alerts.alarm_book``), with the devices behind
the gateway shown offline and why; cleared, with a recovery notice, when it is heard again.
Silence is counted from the service's start for a gateway not heard since: after a restart a
gateway has one period to be heard before it is called silent.

Each replica merges what it heard into ``gateway_links`` (latest wins), so replicas that split
a gateway's messages between them agree on it; the table is also what an operator reads: last
heartbeat, the gateway's clock offset, its outbox depth.  A live gateway's row is rewritten
once a quarter of its setting at most (15 s), not at every look: the looks run on the alert
service's writer, between the alarms' transactions, every few seconds for every gateway.

Pulse: the alert side records in ``service_heartbeats`` that it is alive, when it last applied
a message and when its notifier last looked for notices; the web process watches it
(firewatch.watchdog) and tells the bureau when it stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.notices import clear_message, gateway_names, local_time, raise_message
from alerts.rules import LINK_RULE, Verdict, settle_state
from firewatch.admission import ClockWatch
from firewatch.contract import GatewayHeartbeat, GatewayMessage, utc_now
from firewatch.db import (
    ACTIVE_ALARM,
    Alarm,
    Device,
    GatewayLink,
    Institution,
    ServiceHeartbeat,
    Writer,
)
from firewatch.site import Gateway, Site
from firewatch.watchdog import repeat

if TYPE_CHECKING:
    import asyncio

    from alerts.notifier import Notifier
    from alerts.service import AlertService

log = logging.getLogger(__name__)

#: a heartbeat's own time further than this from its receipt is not kept (nor a far date
#: stored: the gateway's clock is what the clock offset reports)
SANE_TS = timedelta(days=3650)


@dataclass
class _Heard:
    at: datetime  # receipt of the gateway's last message of any kind
    heartbeat_at: datetime | None = None
    ts: datetime | None = None  # the gateway's clock in that heartbeat
    outbox: int | None = None


class LinkWatch:
    def __init__(
        self, site: Site, alarms: AlertService, silent_after: timedelta, clocks: ClockWatch
    ) -> None:
        self.gateways = site.gateways
        self.alarms = alarms
        self.clocks = clocks
        self.silent_after = {
            g.id: timedelta(seconds=g.silent_after_s) if g.silent_after_s else silent_after
            for g in site.gateways
        }
        self.persist_every = {
            g: min(timedelta(seconds=15), s / 4) for g, s in self.silent_after.items()
        }
        self.started = utc_now()
        self.heard: dict[str, _Heard] = {}
        self.down = 0

    @property
    def every_s(self) -> float:
        """How often silence is looked for: a quarter of the shortest setting, 0.2-5 s."""
        shortest = min(self.silent_after.values(), default=timedelta(seconds=20))
        return min(5.0, max(0.2, shortest.total_seconds() / 4))

    def hear(self, messages: list[GatewayMessage], at: datetime) -> None:
        for message in messages:
            heard = self.heard.get(message.gateway_id)
            if heard is None:
                heard = self.heard[message.gateway_id] = _Heard(at)
            heard.at = at
            if isinstance(message, GatewayHeartbeat):
                heard.heartbeat_at, heard.outbox = at, message.outbox
                heard.ts = message.ts if abs(at - message.ts) <= SANE_TS else None

    async def run(self, writer: Writer, notices_waiting: asyncio.Event) -> None:
        async def check() -> None:
            if await writer.run(partial(self.check, now=utc_now())):
                notices_waiting.set()

        await repeat(self.every_s, "the gateways' link check", check)

    def check(self, session: Session, now: datetime) -> bool:
        """Record what was heard; raise or clear link faults; True if notices were stored."""
        rows = {r.gateway_id: r for r in session.scalars(select(GatewayLink))}
        faults = {
            a.gateway_id: a
            for a in session.scalars(
                select(Alarm).where(
                    Alarm.gateway_id.is_not(None),
                    Alarm.rule == LINK_RULE.name,
                    Alarm.status.in_(ACTIVE_ALARM),
                )
            )
        }
        offsets = self.clocks.offsets()
        told, down = False, 0
        for gateway in self.gateways:
            if not self.alarms.owns(gateway.id):  # another replica's to watch
                continue
            row = rows.get(gateway.id)
            if row is None:
                row = GatewayLink(gateway_id=gateway.id)
                session.add(row)
            row.institution_id = gateway.institution
            heard = self.heard.get(gateway.id)
            self._merge(row, heard, offsets.get(gateway.id), self.persist_every[gateway.id])
            last = max([t for t in (row.last_heard_at, heard and heard.at) if t], default=None)
            quiet_since = max(last or self.started, self.started)  # a period's grace at start
            silent = now - quiet_since > self.silent_after[gateway.id]
            fault = faults.get(gateway.id)
            if silent and fault is None:
                self._lost(session, gateway, row, last, now)
                told = True
            elif not silent and fault is not None:
                assert last is not None
                self._back(session, gateway, row, last, fault)
                told = True
            elif silent:
                row.state = "down"
            else:
                row.state = "up" if last else "unknown"
            down += row.state == "down"
        self.down = down
        return told

    @staticmethod
    def _merge(
        row: GatewayLink, heard: _Heard | None, offset: float | None, every: timedelta
    ) -> None:
        """What this replica heard into the row, if it is news of ``every`` or more."""
        if heard is None or (
            row.last_heard_at is not None and heard.at - row.last_heard_at < every
        ):
            return
        row.last_heard_at = heard.at
        if heard.heartbeat_at is not None and (
            row.last_heartbeat_at is None or heard.heartbeat_at > row.last_heartbeat_at
        ):
            row.last_heartbeat_at, row.last_ts = heard.heartbeat_at, heard.ts
            row.outbox = heard.outbox
        if offset is not None:
            row.clock_offset_s = round(offset, 3)

    def _lost(
        self,
        session: Session,
        gateway: Gateway,
        row: GatewayLink,
        last: datetime | None,
        now: datetime,
    ) -> None:
        since = last or self.started
        limit = self.silent_after[gateway.id].total_seconds()
        heard = "无任何消息" if last else "未收到任何消息（自报警服务启动）"
        reason = f"网关 {gateway.id} 自 {local_time(since)} 起{heard}，超过 {limit:g} 秒"
        institution = session.get_one(Institution, gateway.institution)
        verdict = Verdict(LINK_RULE, True, None, None)
        where, what = gateway_names(gateway.id)
        self.alarms.book.open_alarm(
            session,
            institution,
            verdict,
            now,
            reason,
            raise_message(institution, where, what, LINK_RULE, verdict, reason, now),
            gateway_id=gateway.id,
        )
        row.state, row.down_since = "down", since
        self._settle_devices(
            session, gateway.id, f"{LINK_RULE.title_zh}（{gateway.id}，自 {local_time(since)}）"
        )

    def _back(
        self, session: Session, gateway: Gateway, row: GatewayLink, last: datetime, fault: Alarm
    ) -> None:
        institution = session.get_one(Institution, gateway.institution)
        verdict = Verdict(LINK_RULE, False, None, None)
        where, what = gateway_names(gateway.id)
        self.alarms.book.close_alarm(
            session,
            institution,
            fault,
            f"网关 {gateway.id} 于 {local_time(last)} 恢复通信",
            clear_message(institution, where, what, LINK_RULE, verdict, fault),
        )
        row.state, row.down_since = "up", None
        self._settle_devices(session, gateway.id, "")

    @staticmethod
    def _settle_devices(session: Session, gateway_id: str, link_down: str) -> None:
        devices = list(session.scalars(select(Device).where(Device.gateway_id == gateway_id)))
        open_alarms: dict[str, list[Alarm]] = {d.id: [] for d in devices}
        for alarm in session.scalars(
            select(Alarm).where(Alarm.device_id.in_(open_alarms), Alarm.status.in_(ACTIVE_ALARM))
        ):
            assert alarm.device_id is not None  # the query asked for these devices' alarms
            open_alarms[alarm.device_id].append(alarm)
        for device in devices:
            settle_state(device, open_alarms[device.id], link_down)


async def pulse(
    writer: Writer, instance: str, alerts: AlertService, notifier: Notifier, every_s: float
) -> None:
    """The alert side's own heartbeat, every ``every_s``: what the web process watches."""

    def beat(session: Session) -> None:
        session.merge(
            ServiceHeartbeat(
                instance=instance,
                beat_at=utc_now(),
                last_applied_at=alerts.last_applied_at,
                notifier_looked_at=notifier.looked_at,
                messages_applied=alerts.handled,
            )
        )

    async def record() -> None:
        await writer.run(beat)

    await repeat(every_s, "the alert service's heartbeat", record, first_at_once=True)
