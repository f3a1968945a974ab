"""``firewatch up``: the whole system in one process, on embedded defaults.

Start order matters for "never lose a reading" on a first start: the consumers (alerts,
ingest) hold their broker sessions before any gateway publishes.  Ctrl-C or SIGTERM (caught by
uvicorn) stops the web server first, then every service; all state is under the data dir, so
the next ``firewatch up`` carries on where this one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.types import ASGIApp

from firewatch import db
from firewatch.accounts import prepare_accounts
from firewatch.admission import admission_for
from firewatch.alert_side import alert_side
from firewatch.dead_letters import DeadLetters
from firewatch.hub import ChangeHub
from firewatch.metrics import FirewatchCollector, registry_for
from firewatch.mqtt import BrokerAddress, EmbeddedBroker
from firewatch.profiles import DeviceProfile, load_profiles
from firewatch.settings import Settings
from firewatch.site import ModbusEndpoint, Site, load_site
from firewatch.supervise import Job, Supervisor, supervise
from firewatch.watchdog import MonitorWatch
from firewatch.web.app import AppContext, create_app
from gateway.service import GatewayService
from ingest.influx_store import InfluxTimeSeries
from ingest.retention import compactor_for
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.sqlite_store import SqliteTimeSeries
from ingest.store import TimeSeriesStore

if TYPE_CHECKING:
    from simulators.fleet import SimulatorFleet

log = logging.getLogger("firewatch")


class _Server(uvicorn.Server):
    """uvicorn that leaves signals to the stack, which must stop every service, not only HTTP.

    (uvicorn's own handler re-raises the signal once HTTP is down, which would kill the
    process before the gateways' outboxes and the databases are closed.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def sync_site(sessions: async_sessionmaker, site: Site, profiles: dict[str, DeviceProfile]):
    """Put the site file's institutions and devices in the database, keeping device state."""
    async with sessions.begin() as session:
        for i in site.institutions:
            await session.merge(
                db.Institution(
                    id=i.id,
                    name=i.name,
                    type=i.type.value,
                    township=i.township,
                    address=i.address,
                    lat=i.location.lat,
                    lon=i.location.lon,
                    head_name=i.head.name,
                    head_phone=i.head.phone,
                    safety_officer_name=i.safety_officer.name,
                    safety_officer_phone=i.safety_officer.phone,
                )
            )
        for d in site.devices:
            row = await session.get(db.Device, d.id)
            if row is None:
                row = db.Device(id=d.id, last_readings={}, last_flags={})
                session.add(row)
            row.institution_id = d.institution
            row.gateway_id = d.gateway
            row.kind = profiles[d.profile].kind.value
            row.profile = d.profile
            row.location = d.location


def timeseries_store(settings: Settings, site: Site) -> TimeSeriesStore:
    if settings.influx_url:
        return InfluxTimeSeries(
            settings.influx_url,
            settings.influx_token,
            settings.influx_org,
            settings.influx_bucket,
            townships={i.id: i.township for i in site.institutions},
        )
    return SqliteTimeSeries(settings.data_dir / "timeseries.db")


@contextlib.asynccontextmanager
async def broker_for(settings: Settings) -> AsyncIterator[BrokerAddress]:
    if real := settings.broker:
        yield real
        return
    embedded = EmbeddedBroker(port=settings.mqtt_embedded_port)
    await embedded.start()
    try:
        yield embedded.address
    finally:
        await embedded.stop()


def endpoint_ports(fleet: SimulatorFleet | None) -> Callable[[ModbusEndpoint], int]:
    """Where a gateway reaches an endpoint: the simulator's port, or the site file's."""

    def endpoint_port(endpoint: ModbusEndpoint) -> int:
        if endpoint.simulated:
            if fleet is None:
                raise SystemExit(
                    f"endpoint {endpoint.id} is simulated but simulators are off "
                    "(--no-simulate): give it a real host and port in the site file"
                )
            return fleet.endpoint_port(endpoint.id)
        return endpoint.port

    return endpoint_port


def gateway_jobs(gateways: list[GatewayService], fleet: SimulatorFleet | None) -> dict[str, Job]:
    """Each gateway supervised on its own, and the simulated MQTT devices started once every
    gateway listens for their reports."""
    jobs: dict[str, Job] = {f"gateway:{g.gateway.id}": g.run for g in gateways}
    if fleet is not None:

        async def devices_after_gateways() -> None:
            for g in gateways:
                await g.listening.wait()
            fleet.start_mqtt()

        jobs["simulated MQTT devices"] = devices_after_gateways
    return jobs


def http_server(app: ASGIApp, host: str, port: int) -> uvicorn.Server:
    """uvicorn for the web app or a metrics listener; its logs go through ours (text or JSON)."""
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            log_config=None,
        )
    )


async def run_stack(settings: Settings) -> None:
    profiles = load_profiles(settings.profiles_dir)
    site = load_site(settings.site_file, profiles)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    engine = db.create_engine(settings.effective_database_url)
    await db.create_schema(engine)
    sessions = db.sessionmaker(engine)
    await sync_site(sessions, site, profiles)
    await prepare_accounts(settings, sessions)
    store = timeseries_store(settings, site)
    await store.open()

    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        stack.push_async_callback(store.close)
        broker = await stack.enter_async_context(broker_for(settings))

        fleet = None
        if settings.simulate:
            from simulators.fleet import SimulatorFleet

            fleet = SimulatorFleet(site, profiles, broker)
            await fleet.start()
            stack.push_async_callback(fleet.stop)

        endpoint_port = endpoint_ports(fleet)
        alert = alert_side(settings, site, profiles, sessions, broker)
        stack.push_async_callback(alert.close)
        ingest = IngestService(
            store,
            Spool(settings.data_dir / "ingest-spool.db"),
            broker,
            DeadLetters(sessions, "ingest", settings.dead_letter_keep),
            compactor=compactor_for(store, settings),
            admit=admission_for(settings, site, profiles, "ingest", restamp=False),
        )
        gateways = [
            GatewayService(
                g,
                site,
                profiles,
                broker,
                settings.data_dir / f"outbox-{g.id}.db",
                endpoint_port,
                settings.gateway_outbox_max_messages,
            )
            for g in site.gateways
        ]
        supervisor = Supervisor()
        watch = MonitorWatch(sessions, site, settings)
        statuses = {
            "tasks": supervisor.status,
            **alert.statuses(),
            "monitor": watch.status,
            "ingest": ingest.status,
            **{f"gateway:{g.gateway.id}": g.status for g in gateways},
        }
        # the web app's hub watches these sessions: the alert side's changes reach the pages
        # without the broker
        hub = ChangeHub()
        app = create_app(
            AppContext(
                sessions=sessions,
                timeseries=store,
                site=site,
                site_dir=settings.site_file.parent,
                statuses=statuses,
                simulators=fleet,
                settings=settings,
                hub=hub,
                metrics=registry_for(
                    FirewatchCollector(
                        gateways,
                        ingest,
                        alert.alerts,
                        alert.notifier,
                        alert.escalation,
                        calls=alert.calls,
                        hub=hub,
                        watch=watch,
                        tasks=supervisor,
                    )
                ),
            )
        )
        server = http_server(app, settings.host, settings.port)

        def stop_serving() -> None:
            server.should_exit = True
            app.state.hub.close()  # open event streams end, else the server waits for them

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_serving)

        async def gateways_and_devices() -> None:
            """Consumers hold their broker sessions before any gateway publishes, and gateways
            listen before the simulated MQTT devices send their first report."""
            await alert.alerts.consumer.ready.wait()
            await ingest.consumer.ready.wait()
            await supervise(gateway_jobs(gateways, fleet))

        async with asyncio.TaskGroup() as tasks:
            services = tasks.create_task(
                supervisor.run(
                    {
                        **alert.services(),
                        "ingest": ingest.run,
                        "monitor": watch.run,
                        "gateways": gateways_and_devices,
                    }
                )
            )
            log.info(
                "Firewatch is up: http://%s:%d  (broker %s%s, store %s, data in %s)",
                settings.host,
                settings.port,
                broker.url,
                " embedded" if broker.embedded else "",
                store.name,
                settings.data_dir.resolve(),
            )
            await server.serve()
            log.info("stopping")
            services.cancel()
