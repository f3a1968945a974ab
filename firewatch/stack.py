"""``firewatch up``: the whole system on embedded defaults, one command, one Ctrl-C.

The parent process holds what a person drives and what the pages read: the simulated devices,
the web app with its live pages, and the monitoring watch.  The embedded MQTT broker (amqtt,
unless ``FIREWATCH_MQTT_URL`` names one), the alert service, ingest and the gateways run as
child processes of its own (firewatch.children): the very commands the production containers
run, sharing the data dir's SQLite databases (WAL: one writer at a time, readers alongside)
and the broker.  The alert service's change notices reach the web app's live pages over the
broker, as they reach a web replica in production.

Start order matters for "never lose a reading" on a first start: the consumers (alerts,
ingest) hold their broker sessions before any gateway publishes, and the gateways listen before
the simulated buttons send their first report.  Ctrl-C or SIGTERM stops the web server first,
then every child (SIGTERM, each closing its outbox and databases); all state is under the data
dir, so the next ``firewatch up`` carries on where this one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import httpx
import uvicorn
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.types import ASGIApp

from firewatch import db
from firewatch.accounts import prepare_accounts
from firewatch.change_relay import ChangeListener
from firewatch.children import Child, ChildrenCollector, scrape_all
from firewatch.dead_letters import DeadLetters
from firewatch.hub import ChangeHub
from firewatch.metrics import FirewatchCollector, registry_for
from firewatch.mqtt import BrokerAddress, free_port
from firewatch.profiles import DeviceProfile, load_profiles
from firewatch.settings import Settings
from firewatch.site import ModbusEndpoint, Site, load_site
from firewatch.supervise import Job, Supervisor
from firewatch.watchdog import MonitorWatch
from firewatch.web.app import AppContext, create_app
from gateway.service import GatewayService
from ingest.influx_store import InfluxTimeSeries
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
    """Put the site file's institutions and devices in the database, keeping device state.

    The rows already there are read in one query per table: a county of 10,000 devices read
    row by row took minutes to start on a busy machine.
    """
    async with sessions.begin() as session:
        institutions = {i.id: i for i in await session.scalars(select(db.Institution))}
        for i in site.institutions:
            row = institutions.get(i.id)
            if row is None:
                row = db.Institution(id=i.id)
                session.add(row)
            for column, value in {
                "name": i.name,
                "type": i.type.value,
                "township": i.township,
                "address": i.address,
                "lat": i.location.lat,
                "lon": i.location.lon,
                "head_name": i.head.name,
                "head_phone": i.head.phone,
                "safety_officer_name": i.safety_officer.name,
                "safety_officer_phone": i.safety_officer.phone,
            }.items():
                setattr(row, column, value)
        devices = {d.id: d for d in await session.scalars(select(db.Device))}
        for d in site.devices:
            device = devices.get(d.id)
            if device is None:
                device = db.Device(id=d.id, last_readings={}, last_flags={})
                session.add(device)
            device.institution_id = d.institution
            device.gateway_id = d.gateway
            device.kind = profiles[d.profile].kind.value
            device.profile = d.profile
            device.location = d.location


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


def broker_for(settings: Settings) -> tuple[BrokerAddress, Child | None]:
    """The broker ``FIREWATCH_MQTT_URL`` names, else the embedded one (amqtt) as a child of its
    own: it carries every message of the county, and in the parent's event loop it fell
    behind the web app and the simulators."""
    if real := settings.broker:
        return real, None
    port = settings.mqtt_embedded_port or free_port()
    child = Child("broker", ["broker"], {"FIREWATCH_MQTT_EMBEDDED_PORT": str(port)}, None)
    return BrokerAddress("127.0.0.1", port, embedded=True), child


async def until_broker_answers(broker: BrokerAddress) -> None:
    """Once an MQTT client gets in: the embedded broker's child takes seconds to start, and
    each client started before it listens would report it unreachable."""
    while True:
        try:
            async with broker.client(f"fw-up-probe-{secrets.token_hex(4)}"):
                return
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


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


def up_children(settings: Settings, broker: BrokerAddress, gateway_site: Path) -> list[Child]:
    """``firewatch alerts``, ``ingest`` and ``gateway`` on this stack's data dir and broker.

    The gateways read ``gateway_site``: the site file with each simulated endpoint's port
    (the simulators run in this process).  Each child has a metrics port of its own, on the
    loopback only: the web app's ``/metrics`` serves what they count.
    """
    ports: set[int] = set()
    shared = {
        "FIREWATCH_MQTT_URL": broker.url,
        "FIREWATCH_DATA_DIR": str(settings.data_dir.resolve()),
        "FIREWATCH_SITE_FILE": str(settings.site_file.resolve()),
        "FIREWATCH_DATABASE_URL": settings.effective_database_url,
        "FIREWATCH_SIMULATE": "false",
        "FIREWATCH_HOST": "127.0.0.1",
    }
    children = []
    for name, extra in (
        ("alerts", {}),
        ("ingest", {}),
        ("gateway", {"FIREWATCH_SITE_FILE": str(gateway_site)}),
    ):
        port = free_port(taken=ports)
        env = {
            **shared,
            **extra,
            "FIREWATCH_INSTANCE": f"{settings.instance}-{name}",
            "FIREWATCH_METRICS_PORT": str(port),
        }
        children.append(Child(name, [name], env, port))
    return children


def simulated_site(settings: Settings, site: Site, fleet: SimulatorFleet) -> Path:
    """The site file as the gateway process reads it: each simulated endpoint at the port of
    its simulator in this process."""
    gateways = [
        g.model_copy(
            update={
                "endpoints": [
                    e.model_copy(update={"simulated": False, "port": fleet.endpoint_port(e.id)})
                    if e.simulated
                    else e
                    for e in g.endpoints
                ]
            }
        )
        for g in site.gateways
    ]
    path = settings.data_dir.resolve() / "up-gateway-site.json"
    data = site.model_copy(update={"gateways": gateways}).model_dump(mode="json", by_alias=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def carry_on_ingest_spool(settings: Settings) -> None:
    """The spool of a data dir from before ``firewatch up`` ran ingest as a child is the one
    ingest's partition now names: what it spooled is written, not left behind."""
    old = settings.data_dir / "ingest-spool.db"
    new = settings.data_dir / f"ingest-spool-{settings.partition}.db"
    if old.exists() and not new.exists():
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{old}{suffix}").exists():
                Path(f"{old}{suffix}").rename(f"{new}{suffix}")


async def run_stack(settings: Settings) -> None:
    profiles = load_profiles(settings.profiles_dir)
    site = load_site(settings.site_file, profiles)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    carry_on_ingest_spool(settings)

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
        broker, broker_process = broker_for(settings)

        fleet = None
        gateway_site = settings.site_file.resolve()
        if settings.simulate:
            from simulators.fleet import SimulatorFleet

            fleet = SimulatorFleet(site, profiles, broker)
            await fleet.start()
            stack.push_async_callback(fleet.stop)
            gateway_site = simulated_site(settings, site, fleet)
        port_of = endpoint_ports(fleet)  # refuses a simulated endpoint without simulators
        for gateway in site.gateways:
            for endpoint in gateway.endpoints:
                port_of(endpoint)
        alerts, ingest, gateways = parts = up_children(settings, broker, gateway_site)
        children = [*parts, *([broker_process] if broker_process else [])]
        scraper = await stack.enter_async_context(httpx.AsyncClient(timeout=5))

        hub = ChangeHub()
        letters = DeadLetters(sessions, "web", settings.dead_letter_keep)
        changes = ChangeListener(hub, broker, f"fw-web-{settings.instance}", letters)
        supervisor = Supervisor()
        watch = MonitorWatch(sessions, site, settings)  # tells the bureau if alerts stop
        statuses: dict[str, Callable[[], dict[str, Any]]] = {
            "tasks": supervisor.status,
            "changes": changes.status,
            "monitor": watch.status,
            **{c.name: partial(lambda c: {"problems": c.problems()}, c) for c in children},
        }
        metrics = registry_for(
            FirewatchCollector(changes=changes, hub=hub, watch=watch, tasks=supervisor)
        )
        metrics.register(ChildrenCollector(children))
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
                metrics=metrics,
                refresh_metrics=partial(scrape_all, children, scraper),
            )
        )
        server = http_server(app, settings.host, settings.port)

        def stop_serving() -> None:
            server.should_exit = True
            hub.close()  # open event streams end, else the server waits for them

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_serving)

        async def until(what: str, ready: Callable[[], bool]) -> None:
            while not ready():
                await scrape_all(children, scraper)
                await asyncio.sleep(0.5)
            log.debug("%s", what)

        def consumers_connected() -> bool:
            return all(
                c.value("firewatch_consumer_broker_connected") >= 1 for c in (alerts, ingest)
            )

        async def after_the_broker(child: Child) -> None:
            """The consumers start once the broker answers (the gateways after them)."""
            if broker_process is not None:
                await until_broker_answers(broker)
            await child.run()

        async def gateway_after_consumers() -> None:
            """Consumers hold their broker sessions before any gateway publishes."""
            await until("consumers subscribed", consumers_connected)
            await gateways.run()

        async def changes_after_consumers() -> None:
            """The live pages follow change notices once the consumers hold their sessions,
            before any gateway publishes: by then the broker answers, so the listener does not
            open with warnings that it is unreachable."""
            await until("consumers subscribed", consumers_connected)
            await changes.run()

        async def devices_after_gateways() -> None:
            """Every gateway listens before the simulated MQTT devices send their first report."""
            if fleet is None:
                return
            await until(
                "gateways listening",
                lambda: gateways.value("firewatch_gateway_broker_connected") >= len(site.gateways),
            )
            fleet.start_mqtt()

        async def keep_counts() -> None:
            """What /api/health says of the children is at most a few seconds old."""
            while True:
                await scrape_all(children, scraper)
                await asyncio.sleep(2)

        async with asyncio.TaskGroup() as tasks:
            # the web app first: health answers (naming what is still starting) at once
            serving = tasks.create_task(server.serve())
            while not (server.started or serving.done()):
                await asyncio.sleep(0.05)
            services = tasks.create_task(
                supervisor.run(
                    {
                        **({"broker": broker_process.run} if broker_process else {}),
                        "alerts": partial(after_the_broker, alerts),
                        "ingest": partial(after_the_broker, ingest),
                        "gateway": gateway_after_consumers,
                        "simulated MQTT devices": devices_after_gateways,
                        "changes": changes_after_consumers,
                        "dead-letter-retention": letters.expire,
                        "monitor": watch.run,
                        "child counts": keep_counts,
                    }
                )
            )
            log.info(
                "Firewatch is up: http://%s:%d  (broker %s%s, store %s, data in %s; "
                "alerts, ingest and gateways in child processes)",
                settings.host,
                settings.port,
                broker.url,
                " embedded" if broker.embedded else "",
                store.name,
                settings.data_dir.resolve(),
            )
            await serving
            log.info("stopping")
            # in turn: the gateways while the broker takes their last messages (a gateway
            # whose broker went first hung in its stop), then the consumers, then this
            # process's own clients of the broker (the simulated devices, the live pages'
            # change listener among the services), the broker last: none of them is told
            # that the broker went away
            for turn in ([gateways], [alerts, ingest]):
                await asyncio.gather(*(child.stop() for child in turn))
            if fleet is not None:
                await fleet.stop_mqtt()
            if broker_process is not None:
                broker_process.stopped = True  # its run, cancelled with the services, stops it
            services.cancel()
