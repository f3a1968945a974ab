"""Prometheus metrics: what an operator watches on every Firewatch service.

The services already keep their counts (polls, published batches, spool depth, ...), for
``/api/health`` as much as for this; a collector reads them at scrape time instead of every
code path updating a second set of counters.  Counts start at zero with each process, which
is what Prometheus's ``rate()`` and ``increase()`` expect of a counter.

``firewatch up`` serves one registry with every service at the web app's ``/metrics``; a
service run on its own (``firewatch gateway`` ...) serves its registry on
``FIREWATCH_METRICS_PORT``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from firewatch.admission import Admission

if TYPE_CHECKING:
    from alerts.calls import CallWatcher
    from alerts.escalation_scheduler import EscalationScheduler
    from alerts.notifier import Notifier
    from alerts.service import AlertService, ConsumerView
    from firewatch.change_relay import ChangeListener, ChangePublisher
    from firewatch.consumer import GatewayMessageConsumer
    from firewatch.hub import ChangeHub
    from firewatch.supervise import Supervisor
    from firewatch.watchdog import MonitorWatch
    from gateway.service import GatewayService
    from ingest.service import IngestService


@dataclass(eq=False)  # registries key collectors by identity
class FirewatchCollector(Collector):
    """The counts of whichever services run in this process."""

    gateways: list[GatewayService] = field(default_factory=list)
    ingest: IngestService | None = None
    alerts: AlertService | None = None
    notifier: Notifier | None = None
    escalation: EscalationScheduler | None = None
    calls: CallWatcher | None = None
    changes: ChangePublisher | ChangeListener | None = None
    #: the hub whose change notices' errors to report, if not the relay's (``firewatch up``)
    hub: ChangeHub | None = None
    watch: MonitorWatch | None = None
    tasks: Supervisor | None = None  # the process's supervised tasks (firewatch.supervise)

    def collect(self) -> Iterator[Metric]:
        if self.tasks is not None:
            yield from self._tasks(self.tasks)
        yield from self._gateways()
        consumers: list[GatewayMessageConsumer | ConsumerView] = []
        if self.ingest is not None:
            consumers.append(self.ingest.consumer)
        if self.alerts is not None:
            consumers.append(self.alerts.metered)
        yield from self._consumers(consumers)
        if self.ingest is not None:
            yield from self._ingest(self.ingest)
        if self.alerts is not None:
            yield CounterMetricFamily(
                "firewatch_alerts_alarms_raised",
                "Alarms raised (breaches, faults, button presses).",
                value=self.alerts.raised,
            )
            yield GaugeMetricFamily(
                "firewatch_gateway_links_down",
                "Gateways not heard of for longer than their setting: open link faults.",
                value=self.alerts.links.down,
            )
            yield _by_label(
                "firewatch_device_mode_errors",
                "Devices and held alarms whose end of shielding or test mode raised, by error "
                "class: each was logged and looked at again, the others went on.",
                ["reason"],
                self.alerts.modes.errors,
            )
            if self.alerts.keeper is not None:
                yield GaugeMetricFamily(
                    "firewatch_alerts_partitions_held",
                    "Alert partitions (and duties) whose leases this replica holds.",
                    value=len(self.alerts.keeper.held),
                )
                yield CounterMetricFamily(
                    "firewatch_alerts_partition_takeovers",
                    "Leases this replica took over from one that stopped renewing them.",
                    value=self.alerts.keeper.takeovers,
                )
        if self.watch is not None:
            yield GaugeMetricFamily(
                "firewatch_monitoring_interrupted",
                "1 while the alert service has stopped reporting (the bureau is told).",
                value=int(bool(self.watch.problem)),
            )
        if self.notifier is not None:
            yield CounterMetricFamily(
                "firewatch_notices_sent", "Notices the provider accepted.", value=self.notifier.sent
            )
            yield CounterMetricFamily(
                "firewatch_notices_failed",
                "Notice sends that failed and will be retried.",
                value=self.notifier.failures,
            )
            yield _by_label(
                "firewatch_notices_unsendable",
                "Notices whose send raised an error no retry mends (the notice's own content, "
                "its address, a channel's bug), by channel and error class: each was handed to "
                "the fallback channel or marked failed.",
                ["channel", "reason"],
                self.notifier.errors,
            )
            yield _by_label(
                "firewatch_notifier_errors",
                "Notifier rounds that failed for no one notice's reason, by error class; the "
                "notifier went on.",
                ["reason"],
                self.notifier.round_errors,
            )
        if self.escalation is not None:
            yield CounterMetricFamily(
                "firewatch_escalation_steps",
                "Escalation steps and ledger reminders taken.",
                value=self.escalation.escalator.steps_taken,
            )
            yield GaugeMetricFamily(
                "firewatch_escalation_jobs_scheduled",
                "Alarms and ledger entries with a step ahead, each a scheduled job.",
                value=self.escalation.jobs_scheduled,
            )
            yield _by_label(
                "firewatch_escalation_set_aside",
                "Alarms and ledger entries whose escalation raised, by error class: each was "
                "logged and skipped, the others escalated.",
                ["reason"],
                self.escalation.escalator.errors,
            )
            yield _by_label(
                "firewatch_escalation_sweep_errors",
                "Escalation sweeps that failed as a whole (the database away), by error class; "
                "the next sweep ran.",
                ["reason"],
                self.escalation.sweep_errors,
            )
        if self.calls is not None:
            yield _by_label(
                "firewatch_voice_call_results",
                "Voice calls whose result is known, by result (answered, unanswered, no-result: "
                "none from the provider in time); each not answered called the next person.",
                ["result"],
                self.calls.outcomes,
            )
            yield _by_label(
                "firewatch_voice_call_results_set_aside",
                "Voice calls whose result could not be handled, by error class; looked at again.",
                ["reason"],
                self.calls.errors,
            )
        if self.changes is not None:
            yield from self._changes(self.changes)
        hub = self.hub or (self.changes.hub if self.changes is not None else None)
        if hub is not None:
            yield _by_label(
                "firewatch_change_notice_errors",
                "Change notices for the live pages set aside, by stage (collect after a commit, "
                "publish, receive, push to a page); the others went on.",
                ["stage"],
                hub.errors,
            )

    @staticmethod
    def _tasks(supervisor: Supervisor) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "firewatch_task_restarts",
            "Restarts of a long-running task after it raised (its last error is in /api/health).",
            labels=["task"],
        )
        running = GaugeMetricFamily(
            "firewatch_task_running",
            "1 while the task runs, 0 while it waits to restart or after it finished.",
            labels=["task"],
        )
        for name, record in list(supervisor.tasks.items()):
            restarts.add_metric([name], record.restarts)
            running.add_metric([name], int(record.state == "running"))
        yield from (restarts, running)

    def _gateways(self) -> Iterator[Metric]:
        if not self.gateways:
            return
        polls = CounterMetricFamily(
            "firewatch_gateway_polls", "Modbus polls of a device.", labels=["gateway", "device"]
        )
        errors = CounterMetricFamily(
            "firewatch_gateway_poll_errors",
            "Failed polls by kind: the exception class of a missed answer (timeout, garbled "
            "frame, closed connection) or the device's Modbus exception response.",
            labels=["gateway", "device", "kind"],
        )
        depth = GaugeMetricFamily(
            "firewatch_gateway_outbox_depth",
            "Messages waiting in the outbox for the broker.",
            labels=["gateway"],
        )
        dropped = CounterMetricFamily(
            "firewatch_gateway_outbox_dropped",
            "Messages dropped by kind: routine readings and heartbeats shed from a full outbox "
            "(oldest first; events and alarm-bearing readings never), or 'unstored': a commit "
            "that failed.",
            labels=["gateway", "kind"],
        )
        set_aside = CounterMetricFamily(
            "firewatch_gateway_uplinks_set_aside",
            "Device reports (MQTT uplinks) refused by reason: too_large, not_json, not_object, "
            "bad_value, no_known_key, unexpected.",
            labels=["gateway", "reason"],
        )
        unstored = CounterMetricFamily(
            "firewatch_gateway_uplinks_unstored",
            "Device reports the outbox failed to store, left unacknowledged for the broker to "
            "send again.",
            labels=["gateway"],
        )
        acked = CounterMetricFamily(
            "firewatch_gateway_published",
            "Reading batches and device events published and acknowledged by the broker (QoS 1).",
            labels=["gateway"],
        )
        withheld = CounterMetricFamily(
            "firewatch_gateway_polls_withheld",
            "Polls read and not published: report by exception found nothing in them to report.",
            labels=["gateway"],
        )
        connected = GaugeMetricFamily(
            "firewatch_gateway_broker_connected",
            "1 while connected to the broker.",
            labels=["gateway"],
        )
        for service in self.gateways:
            gateway = service.gateway.id
            for poller in service.pollers:
                for device, stats in poller.stats.items():
                    polls.add_metric([gateway, device], stats.polls)
                    for kind, count in list(stats.by_error.items()):
                        errors.add_metric([gateway, device, kind], count)
            depth.add_metric([gateway], service.outbox.size)
            for kind, count in service.outbox.dropped_by_kind.items():
                dropped.add_metric([gateway, kind], count)
            if service.bridge is not None:
                for reason, count in service.bridge.set_aside.items():
                    set_aside.add_metric([gateway, reason], count)
            unstored.add_metric([gateway], service.uplinks_unstored)
            acked.add_metric([gateway], service.published)
            withheld.add_metric([gateway], service.withheld)
            connected.add_metric([gateway], int(service.connected))
        yield from (polls, errors, depth, dropped, set_aside, unstored, acked, withheld, connected)

    @staticmethod
    def _consumers(consumers: list[GatewayMessageConsumer | ConsumerView]) -> Iterator[Metric]:
        if not consumers:
            return
        applied = CounterMetricFamily(
            "firewatch_consumer_messages_applied",
            "Valid gateway messages a consumer applied.",
            labels=["consumer"],
        )
        dead = CounterMetricFamily(
            "firewatch_dead_letters",
            "Messages set aside with the reason in the dead-letter store, by reason class: "
            "contract (refused at the door) or the exception type that failed them.",
            labels=["consumer", "reason"],
        )
        unstored = CounterMetricFamily(
            "firewatch_dead_letters_unstored",
            "Messages set aside but not stored: over their source's budget of dead letters a "
            "minute (a flood), counted by reason class.",
            labels=["consumer", "reason"],
        )
        connected = GaugeMetricFamily(
            "firewatch_consumer_broker_connected",
            "1 while subscribed on the broker.",
            labels=["consumer"],
        )
        offsets = GaugeMetricFamily(
            "firewatch_gateway_clock_offset_seconds",
            "How far a gateway's clock is off as a consumer sees it: received - ts, the least "
            "over a minute (positive: behind, negative: ahead).",
            labels=["consumer", "gateway"],
        )
        restamped = CounterMetricFamily(
            "firewatch_gateway_messages_restamped",
            "Presses and device events whose time could not be believed, applied as read when "
            "received.",
            labels=["consumer"],
        )
        for consumer in consumers:
            applied.add_metric([consumer.name], consumer.handled)
            for reason, count in list(consumer.dead_letters.by_reason.items()):
                dead.add_metric([consumer.name, reason], count)
            for reason, count in list(consumer.dead_letters.unstored.items()):
                unstored.add_metric([consumer.name, reason], count)
            connected.add_metric([consumer.name], int(consumer.connected))
            if isinstance(consumer.admit, Admission):
                for gateway, offset in consumer.admit.clocks.offsets().items():
                    offsets.add_metric([consumer.name, gateway], offset)
                restamped.add_metric([consumer.name], consumer.admit.restamped)
        yield from (applied, dead, unstored, connected, offsets, restamped)

    @staticmethod
    def _changes(relay: ChangePublisher | ChangeListener) -> Iterator[Metric]:
        relayed = CounterMetricFamily(
            "firewatch_change_notices",
            "Change notices for the live pages, by direction: "
            "published by the alert service, received by a web replica.",
            labels=["direction"],
        )
        relayed.add_metric([relay.role], relay.relayed)
        connected = GaugeMetricFamily(
            "firewatch_change_relay_broker_connected",
            "1 while the change notices' broker connection is up.",
            labels=["direction"],
        )
        connected.add_metric([relay.role], int(relay.connected))
        yield from (relayed, connected)

    @staticmethod
    def _ingest(ingest: IngestService) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "firewatch_ingest_written",
            "Reading batches written to the time-series store.",
            value=ingest.written,
        )
        yield CounterMetricFamily(
            "firewatch_ingest_duplicates",
            "Redelivered batches recognised and not written again.",
            value=ingest.duplicates,
        )
        yield GaugeMetricFamily(
            "firewatch_ingest_spool_depth",
            "Batches held in the disk spool while the time-series store is down.",
            value=ingest.spool.size,
        )
        yield GaugeMetricFamily(
            "firewatch_ingest_store_available",
            "1 while the time-series store takes writes.",
            value=int(ingest.store_available),
        )


def _by_label(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter with a sample per key of ``counts``: a label's value, or a tuple of them."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, count in list(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], count)
    return family


def registry_for(collector: FirewatchCollector) -> CollectorRegistry:
    """A registry with the services' counts and the process's own (CPU, memory, open files)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(collector)
    return registry
