"""The parts of ``firewatch up``, each as a service of its own: what the production containers run.

``firewatch gateway|ingest|alerts|web`` build the same objects ``firewatch up`` builds, from the
same settings, and share one broker (``FIREWATCH_MQTT_URL``; there is no embedded broker between
processes) and one relational database.  Each serves its Prometheus metrics (on
``FIREWATCH_METRICS_PORT``; the web app on its own port at ``/metrics``) and stops cleanly on
SIGTERM, which is what ``docker stop`` sends.  Each task of a service is supervised
(``firewatch.supervise``): one that raises is restarted with backoff, so no data error ends a
service, and its restarts show in ``/metrics`` (and in the web app's ``/api/health``).

The alert service owns the relational schema's contents: it writes the site's institutions and
devices.  Every service upgrades the schema on start (firewatch.migrations: serialised between
processes, a no-op once done) so that start order does not matter, but only alerts writes the site.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app
from sqlalchemy.ext.asyncio import async_sessionmaker

from firewatch import db
from firewatch.accounts import prepare_accounts
from firewatch.admission import admission_for
from firewatch.alert_side import alert_side
from firewatch.change_relay import ChangeListener, ChangePublisher
from firewatch.dead_letters import DeadLetters
from firewatch.hub import ChangeHub
from firewatch.metrics import FirewatchCollector, registry_for
from firewatch.mqtt import BrokerAddress, EmbeddedBroker
from firewatch.profiles import DeviceProfile, load_profiles
from firewatch.settings import Settings
from firewatch.site import Site, load_site
from firewatch.stack import (
    endpoint_ports,
    gateway_jobs,
    http_server,
    sync_site,
    timeseries_store,
)
from firewatch.supervise import Job, Supervisor
from firewatch.watchdog import MonitorWatch
from firewatch.web.app import AppContext, create_app
from gateway.service import GatewayService
from ingest.retention import compactor_for
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.store import TimeSeriesStore

log = logging.getLogger("firewatch")


def external_broker(settings: Settings) -> BrokerAddress:
    """The broker every service shares."""
    broker = settings.broker
    if broker is None:
        raise SystemExit(
            "firewatch: a service on its own needs FIREWATCH_MQTT_URL (the broker "
            "the other services use); `firewatch up` runs everything in one process"
        )
    return broker


def load(settings: Settings) -> tuple[dict[str, DeviceProfile], Site]:
    profiles = load_profiles(settings.profiles_dir)
    return profiles, load_site(settings.site_file, profiles)


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[async_sessionmaker]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.create_schema(engine)
        yield db.sessionmaker(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def timeseries(settings: Settings, site: Site) -> AsyncIterator[TimeSeriesStore]:
    store = timeseries_store(settings, site)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def serve_until_signalled(
    supervisor: Supervisor,
    services: dict[str, Job],
    servers: list[uvicorn.Server],
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Run services, each supervised on its own, and HTTP servers until SIGINT/SIGTERM.

    A service that raises is restarted (firewatch.supervise), never the end of the others;
    ``supervisor`` is the one whose status the health and metrics report.  ``on_stop`` runs
    when the signal arrives, before the servers wait for open requests.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    freeze_start_up_objects()
    async with asyncio.TaskGroup() as group:
        running = group.create_task(supervisor.run(services), name="services")
        for server in servers:
            group.create_task(server.serve())
        await stop.wait()
        log.info("stopping")
        on_stop()
        for server in servers:
            server.should_exit = True
        running.cancel()


def freeze_start_up_objects() -> None:
    """Leave what start-up built (the site, profiles, each device's rules) out of the cyclic
    garbage collector's full passes, which would otherwise walk it every few seconds.

    At 7,500 devices each full pass held the alert service for 250-330 ms, every 10 s or
    so, and a press that came then waited for it (one-key p99 301 ms); frozen, the passes
    took at most 36 ms (p99 179 ms).  What is frozen is never freed, which is what start-up
    objects are for: they live as long as the process.
    """
    gc.collect()
    gc.freeze()


def metrics_server(settings: Settings, collector: FirewatchCollector) -> uvicorn.Server:
    app = make_asgi_app(registry_for(collector))
    return http_server(app, settings.host, settings.metrics_port)


async def run_gateway(settings: Settings, gateway_ids: list[str]) -> None:
    """Poll and publish for the named gateways (default: all the site's), with their simulators.

    A gateway publishes only under its own topics; on a broker with an ACL, run one gateway per
    process with that gateway's credentials in FIREWATCH_MQTT_URL.
    """
    broker = external_broker(settings)
    profiles, site = load(settings)
    unknown = set(gateway_ids) - {g.id for g in site.gateways}
    if unknown:
        raise SystemExit(
            f"firewatch: no gateway {sorted(unknown)} in {settings.site_file}; "
            f"gateways: {[g.id for g in site.gateways]}"
        )
    chosen = [g for g in site.gateways if not gateway_ids or g.id in gateway_ids]
    own_site = site.model_copy(
        update={
            "gateways": chosen,
            "devices": [d for d in site.devices if d.gateway in {g.id for g in chosen}],
        }
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        fleet = None
        if settings.simulate:
            from simulators.fleet import SimulatorFleet

            fleet = SimulatorFleet(own_site, profiles, broker)
            await fleet.start()
            stack.push_async_callback(fleet.stop)
        gateways = [
            GatewayService(
                g,
                own_site,
                profiles,
                broker,
                settings.data_dir / f"outbox-{g.id}.db",
                endpoint_ports(fleet),
                settings.gateway_outbox_max_messages,
            )
            for g in chosen
        ]
        log.info(
            "gateways %s publishing to %s%s",
            [g.id for g in chosen],
            broker.url,
            " with simulated devices" if fleet else "",
        )
        supervisor = Supervisor()
        await serve_until_signalled(
            supervisor,
            gateway_jobs(gateways, fleet),
            [metrics_server(settings, FirewatchCollector(gateways=gateways, tasks=supervisor))],
        )


async def run_ingest(settings: Settings) -> None:
    """Readings into the time-series store; replicas split the site's gateways (partitions)."""
    profiles, site = load(settings)  # the township tag of each institution; who owns a device
    broker, partition = external_broker(settings), settings.partition
    async with timeseries(settings, site) as store, database(settings) as sessions:
        # the spool is the partition's, as its broker session is: a replica that replaces
        # another (a new container, another host) finds what the last one spooled
        ingest = IngestService(
            store,
            Spool(settings.data_dir / f"ingest-spool-{partition}.db"),
            broker,
            DeadLetters(sessions, "ingest", settings.dead_letter_keep),
            gateway_ids=[g.id for g in site.gateways],
            partition=partition,
            compactor=compactor_for(store, settings),
            admit=admission_for(settings, site, profiles, "ingest", restamp=False),
        )
        log.info("ingest %s: %s -> %s", partition, broker.url, store.name)
        supervisor = Supervisor()
        await serve_until_signalled(
            supervisor,
            {"ingest": ingest.run},
            [metrics_server(settings, FirewatchCollector(ingest=ingest, tasks=supervisor))],
        )


async def run_alerts(settings: Settings) -> None:
    """Alarms, the hazard ledger, notices and escalation; writes the site file into the database.

    What it commits to devices, alarms and ledger entries goes out as change notices on the
    broker, for the web replicas' live pages.
    """
    broker = external_broker(settings)
    profiles, site = load(settings)
    async with database(settings) as sessions:
        await sync_site(sessions, site, profiles)
        hub = ChangeHub()
        hub.watch(sessions)
        changes = ChangePublisher(hub, broker, f"fw-alerts-changes-{settings.instance}")
        alert = alert_side(settings, site, profiles, sessions, broker, settings.partition)
        log.info("alerts %s: consuming from %s", settings.partition, broker.url)
        supervisor = Supervisor()
        try:
            await serve_until_signalled(
                supervisor,
                {**alert.services(), "changes": changes.run},
                [
                    metrics_server(
                        settings,
                        FirewatchCollector(
                            alerts=alert.alerts,
                            notifier=alert.notifier,
                            escalation=alert.escalation,
                            calls=alert.calls,
                            changes=changes,
                            tasks=supervisor,
                        ),
                    )
                ],
            )
        finally:
            await alert.close()


async def run_broker(settings: Settings) -> None:
    """The embedded MQTT broker (amqtt) in a process of its own, on
    FIREWATCH_MQTT_EMBEDDED_PORT: what ``firewatch up`` runs when no FIREWATCH_MQTT_URL is
    given.  For a laptop and a demo; production runs Mosquitto or EMQX."""
    broker = EmbeddedBroker(port=settings.mqtt_embedded_port)
    await broker.start()
    try:
        await serve_until_signalled(Supervisor(), {}, [])
    finally:
        await broker.stop()


async def run_web(settings: Settings) -> None:
    """The JSON API and the map, reading what the other services wrote; /metrics beside them.

    With a broker (FIREWATCH_MQTT_URL), the alert service's change notices reach this
    replica's live pages; without one, only the changes made through this replica do.
    """
    _, site = load(settings)
    async with timeseries(settings, site) as store, database(settings) as sessions:
        await prepare_accounts(settings, sessions)
        hub = ChangeHub()
        changes: ChangeListener | None = None
        supervisor = Supervisor()
        services: dict[str, Job] = {}
        statuses: dict[str, Callable[[], dict[str, Any]]] = {"tasks": supervisor.status}
        if broker := settings.broker:
            letters = DeadLetters(sessions, "web", settings.dead_letter_keep)
            changes = ChangeListener(hub, broker, f"fw-web-{settings.instance}", letters)
            services["changes"], statuses["changes"] = changes.run, changes.status
            services["dead-letter-retention"] = letters.expire
        else:
            log.warning(
                "web: no FIREWATCH_MQTT_URL: the live pages show only changes made "
                "through this web app, not alarms the alert service raises"
            )
        watch = MonitorWatch(sessions, site, settings)  # tells the bureau if alerts stop
        services["monitor"], statuses["monitor"] = watch.run, watch.status
        app = create_app(
            AppContext(
                sessions=sessions,
                timeseries=store,
                site=site,
                site_dir=settings.site_file.parent,
                statuses=statuses,
                settings=settings,
                metrics=registry_for(
                    FirewatchCollector(changes=changes, watch=watch, tasks=supervisor)
                ),
                hub=hub,
            )
        )
        log.info("web: http://%s:%d", settings.host, settings.port)
        await serve_until_signalled(
            supervisor,
            services,
            [http_server(app, settings.host, settings.port)],
            on_stop=hub.close,
        )
