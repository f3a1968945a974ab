"""The alert side of Firewatch, built in one place for ``firewatch up`` and ``firewatch alerts``.

The alert service stores alarms, ledger entries and notices; the notifier sends the notices;
the escalation scheduler takes the steps of alarms nobody acknowledged (提级) and the ledger
reminders, storing their notices for the same notifier; the call watcher asks what became of
each voice call and calls the next person when nobody answered.  Both ways of running
Firewatch build and run these from here, so that one cannot leave out a part the other runs
(the separate alerts service once ran without escalation).

Several replicas of the alert side (``FIREWATCH_CONSUMER_PARTITIONS`` > 1 with
``FIREWATCH_ALERTS_LEASE_S`` > 0) hold the gateways' partitions by leases and take over those of
a replica that went away (firewatch.leases).  Escalation then runs on one replica at a time,
under a lease of its own (its sweep reads every alarm, and two would take each step twice), as
does the call watcher (two would call the next person twice), and
every replica's notifier claims each notice before sending it, so that a notice goes out once
whichever replica stored it, without waiting for another replica to look.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts.calls import CallWatcher
from alerts.channels import configured_channels
from alerts.confirm_links import ConfirmLinks
from alerts.escalation_scheduler import EscalationScheduler
from alerts.escalator import Escalator
from alerts.notifier import Fallback, Notifier
from alerts.outbox import Outbox, Routing, recipients_of
from alerts.selfcheck import pulse
from alerts.service import AlertService
from firewatch.admission import admission_for
from firewatch.db import Writer
from firewatch.leases import Duty, LeaseKeeper, holder_id
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.profiles import DeviceProfile
from firewatch.settings import Settings
from firewatch.site import Site
from firewatch.supervise import Job


@dataclass(frozen=True)
class AlertSide:
    alerts: AlertService
    notifier: Notifier
    escalation: EscalationScheduler
    calls: CallWatcher
    writer: Writer  # every write of the four, on a thread of its own (firewatch.db.Writer)
    instance: str
    pulse_every_s: float
    keeper: LeaseKeeper | None = None  # the replicas' leases, if they take over each other's

    def services(self) -> dict[str, Job]:
        """What to run, by task name, each supervised on its own (firewatch.supervise); the
        pulse tells the web process they are alive."""
        if self.keeper is None:
            shared = {"escalation": self.escalation.run, "calls": self.calls.run}
        else:  # the partitions' consumers, escalation and calls run where leases are held
            shared = {"leases": self.keeper.run}
        return {
            "alerts": self.alerts.run,
            "notifier": self.notifier.run,
            **shared,
            "pulse": partial(
                pulse, self.writer, self.instance, self.alerts, self.notifier, self.pulse_every_s
            ),
        }

    def statuses(self) -> dict[str, Callable[[], dict[str, Any]]]:
        """What /api/health reports of each, by the same names."""
        return {
            "alerts": self.alerts.status,
            "notifier": self.notifier.status,
            "escalation": self.escalation.status,
            "calls": self.calls.status,
        }

    async def close(self) -> None:
        """After the services have stopped: the writer's connection and thread."""
        await self.writer.close()


def alert_side(
    settings: Settings,
    site: Site,
    profiles: dict[str, DeviceProfile],
    sessions: async_sessionmaker,
    broker: BrokerAddress,
    partition: Partition = Partition(),
) -> AlertSide:
    """The alert side on ``broker``, reading the gateways of ``partition``."""
    notices_waiting = asyncio.Event()
    writer = Writer(sessions, "alerts-writer")
    leased = partition.count > 1 and settings.alerts_lease_s > 0
    channels = configured_channels(settings)
    routing = Routing(
        settings.notice_channel,
        settings.notice_fallback_channel,
        frozenset(channels),
        recipients_of(site, settings.wecom_webhook_url),
        site.dispatch,
    )
    alerts = AlertService(
        site,
        profiles,
        sessions,
        broker,
        partition=partition,
        outbox=Outbox(routing, settings.notice_storm_window_s),
        hazard_deadline=timedelta(hours=settings.iot_hazard_deadline_hours),
        notices_waiting=notices_waiting,
        writer=writer,
        keep_applied=timedelta(hours=settings.applied_keep_hours),
        admission=admission_for(settings, site, profiles, "alerts", restamp=True),
        silent_after=timedelta(seconds=settings.gateway_silent_after_s),
        keep_dead_letters=settings.dead_letter_keep,
        mode_sweep_s=settings.device_mode_sweep_s,
        leased=leased,
    )
    fallback = Fallback(settings.notice_fallback_after_attempts, settings.notice_fallback_after_s)
    notifier = Notifier(
        sessions,
        writer,
        notices_waiting,
        channels,
        routing,
        fallback,
        timeout_s=settings.notice_timeout_s,
        links=ConfirmLinks.from_settings(settings),
        claim=leased,
    )
    escalator = Escalator(
        site,
        profiles,
        sessions,
        writer,
        routing,
        default_webhook=settings.wecom_webhook_url,
        notices_waiting=notices_waiting,
    )
    escalation = EscalationScheduler(escalator)
    calls = CallWatcher(
        site,
        sessions,
        writer,
        channels,
        notices_waiting,
        wait_s=settings.voice_result_wait_s,
        timeout_s=settings.notice_timeout_s,
    )
    keeper = None
    if leased:
        keeper = LeaseKeeper(
            sessions,
            holder_id(settings.instance),
            settings.alerts_lease_s,
            [
                *alerts.duties(),
                Duty("alerts/escalation", escalation.run),
                Duty("alerts/calls", calls.run),
            ],
        )
        alerts.keeper = keeper
    return AlertSide(
        alerts,
        notifier,
        escalation,
        calls,
        writer,
        settings.instance,
        min(5.0, settings.monitor_silent_after_s / 4),
        keeper,
    )
