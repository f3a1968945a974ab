"""The self-check of the chain (巡检), web side: is the alert service itself still working?

The alert service records a heartbeat of its own every few seconds (``service_heartbeats``,
see alerts.selfcheck).  When none is recent (``FIREWATCH_MONITOR_SILENT_AFTER_S``), or its
notifier has stopped looking for notices, while the site has gateways to watch, the alarms of
every institution have nowhere to go: the web process tells the bureau (the site's
``bureau:`` duty officer, on their robot or phone) "监控中断", once per outage, and "监控恢复"
when the heartbeat is back; ``/api/health`` says degraded with the reason meanwhile.

It sends on its own path: the same channel classes, its own HTTP client, never the alert
service's notifier (which is what may have stopped) nor its notices table (whose database may
be what is gone).  A send that fails is tried again at the next look until it goes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts.channels import Channel, configured_channels
from alerts.escalator import reach
from alerts.notices import NoticeMessage, local_time
from alerts.outbox import Routing
from firewatch.contract import utc_now
from firewatch.db import ServiceHeartbeat
from firewatch.settings import Settings
from firewatch.site import Site

log = logging.getLogger(__name__)


async def repeat(
    every_s: float, what: str, job: Callable[[], Awaitable[None]], *, first_at_once: bool = False
) -> None:
    """``job()`` every ``every_s`` for ever; a failure is logged once per run of failures and
    the loop goes on (the next time may find the database or the provider back)."""
    failing = False
    if not first_at_once:
        await asyncio.sleep(every_s)
    while True:
        try:
            await job()
        except Exception:
            if not failing:
                log.exception("%s failed; trying again every %g s", what, every_s)
            failing = True
        else:
            if failing:
                log.info("%s works again", what)
            failing = False
        await asyncio.sleep(every_s)


class MonitorWatch:
    def __init__(
        self,
        sessions: async_sessionmaker,
        site: Site,
        settings: Settings,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        self.sessions = sessions
        self.silent_after = timedelta(seconds=settings.monitor_silent_after_s)
        self.every_s = min(5.0, settings.monitor_silent_after_s / 4)
        self.expected = bool(site.gateways)
        self.channels = configured_channels(settings) if channels is None else channels
        bureau = site.bureau
        routing = Routing(
            settings.notice_channel, settings.notice_fallback_channel, frozenset(self.channels)
        )
        group = (bureau and bureau.wecom_webhook_url) or settings.wecom_webhook_url
        self.channel, self.target = reach(routing, bureau.duty if bureau else None, group)
        self.bureau = bureau.name if bureau else "民政局"
        self.contact = f"{bureau.duty.name} {bureau.duty.phone}" if bureau else ""
        self.county = site.county.name
        self.timeout_s = settings.notice_timeout_s
        self.started = utc_now()
        self.problem = ""  # why monitoring is interrupted, while it is
        self.since: datetime | None = None
        self.unsent: NoticeMessage | None = None
        self.told = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            await repeat(self.every_s, "the watch on the alert service", partial(self.check, http))

    async def check(self, http: httpx.AsyncClient) -> None:
        now = utc_now()
        problem, since = await self._problem(now)
        if problem and not self.problem:
            log.error("monitoring interrupted: %s; telling the bureau", problem)
            self.unsent = self._interrupted(problem, since)
            self.since = since
        elif not problem and self.problem:
            log.warning("monitoring restored: the alert service reports again")
            assert self.since is not None
            self.unsent = self._restored(self.since, now)
            self.since = None
        self.problem = problem
        if self.unsent is not None:
            await self._send(http, self.unsent)
            self.unsent = None

    async def _problem(self, now: datetime) -> tuple[str, datetime]:
        """Why monitoring is interrupted ("" if it is not), and since when."""
        if not self.expected:
            return "", now
        limit = f"超过 {self.silent_after.total_seconds():g} 秒"
        try:
            async with self.sessions() as session:
                beats = list(await session.scalars(select(ServiceHeartbeat)))
        except Exception as exc:
            return f"无法读取报警服务的心跳（数据库：{type(exc).__name__}）", self.since or now
        last = max((b.beat_at for b in beats), default=None)
        if last is None:
            if now - self.started > self.silent_after:
                return f"报警服务从未上报心跳（{limit}）", self.started
            return "", now
        if now - last > self.silent_after:
            return f"报警服务自 {local_time(last)} 起无心跳（{limit}）", last
        # alive, but its notifier had stopped looking for notices when it last said so
        looked = max((b.notifier_looked_at for b in beats if b.notifier_looked_at), default=None)
        if looked is not None and last - looked > self.silent_after:
            return f"报警服务的通知发送自 {local_time(looked)} 起停止（{limit}）", looked
        return "", now

    def _interrupted(self, problem: str, since: datetime) -> NoticeMessage:
        return NoticeMessage(
            kind="escalation",
            label="监控中断",
            institution=self.bureau,
            title="物联网监控中断：报警服务停止上报",
            location=self.county,
            time=local_time(since),
            reason=problem,
            contact=self.contact,
            immediate=True,
            advice="各机构的报警暂时无法送达：请立即检查报警服务（firewatch alerts）、数据库和"
            "消息服务器；恢复前通知各机构加强人工值守。",
        )

    def _restored(self, since: datetime, now: datetime) -> NoticeMessage:
        return NoticeMessage(
            kind="escalation",
            label="监控恢复",
            severity="fault",
            institution=self.bureau,
            title="物联网监控已恢复",
            location=self.county,
            time=local_time(now),
            reason=f"中断自 {local_time(since)} 至 {local_time(now)}",
            contact=self.contact,
            immediate=True,
            advice="请核对中断期间各机构有无未送达的报警。",
        )

    async def _send(self, http: httpx.AsyncClient, message: NoticeMessage) -> None:
        channel = self.channels.get(self.channel)
        if channel is None or not self.target:
            log.error(
                "monitoring notice %r not sent: no address for the bureau on %s",
                message.label,
                self.channel,
            )
            return
        # no notice row (the database may be what is gone): the number is 0
        await channel.send(http, self.target, message, 0)
        self.told += 1
        log.info("bureau told: %s (%s)", message.label, message.reason)

    def status(self) -> dict[str, Any]:
        """For /api/health: ``degraded`` is the reason monitoring is interrupted, if it is."""
        return {
            "alert_service_reporting": not self.problem,
            "degraded": self.problem,
            "since": self.since,
            "bureau_notices_sent": self.told,
        }
