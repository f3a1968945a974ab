"""Change notices over a real Mosquitto: what the alert service's process commits reaches the hub
of every web replica, as the live pages' streams read it.

The alert side's hub watches a real SQLite database; each "replica" is a hub fed by its own
ChangeListener; the publisher and the listeners connect to the broker as the services do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from firewatch import db
from firewatch.bench.servers import Mosquitto
from firewatch.change_relay import ChangeListener, ChangePublisher
from firewatch.contract import utc_now
from firewatch.dead_letters import DeadLetters
from firewatch.hub import RESYNC, Change, ChangeHub, Subscription
from firewatch.mqtt import BrokerAddress
from tests.support.ledger import County, demo_county

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield BrokerAddress.from_url(server.url)
    server.stop()


@pytest.fixture
async def county(tmp_path) -> AsyncIterator[County]:
    async with demo_county(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as county:
        yield county


@contextlib.asynccontextmanager
async def running(*relays: ChangePublisher | ChangeListener) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def next_change(subscription: Subscription) -> Change:
    return await asyncio.wait_for(anext(aiter(subscription)), 10)


async def test_an_alarm_committed_by_the_alert_side_reaches_every_web_replicas_pages(
    broker,
    county,
):
    alert_hub = ChangeHub()
    alert_hub.watch(county.sessions)
    replicas = [ChangeHub(), ChangeHub()]
    listeners = [
        ChangeListener(hub, broker, f"fw-web-{n}", DeadLetters(county.sessions, "web"))
        for n, hub in enumerate(replicas)
    ]
    async with (
        running(ChangePublisher(alert_hub, broker, "fw-alerts-changes"), *listeners),
        replicas[0].subscribe() as first,
        replicas[1].subscribe() as second,
    ):
        for page in (first, second):
            assert await next_change(page) == RESYNC  # on subscribing: reload, then follow
        alarm = await county.raise_alarm("rc-btn-1", "one_key_alarm", utc_now())
        for page in (first, second):
            change = await next_change(page)
            assert (change.kind, change.institution_id) == ("alarm", "rongcheng-eldercare")
            assert (change.data["id"], change.data["device_id"], change.data["status"]) == (
                alarm,
                "rc-btn-1",
                "active",
            )
    assert [listener.relayed for listener in listeners] == [1, 1]


async def test_a_notice_that_breaks_the_contract_is_dead_lettered_and_the_next_one_arrives(
    broker,
    county,
):
    web = ChangeHub()
    listener = ChangeListener(web, broker, "fw-web-0", DeadLetters(county.sessions, "web"))
    good = (
        b'{"schema": "firewatch.change/1", "kind": "device", '
        b'"institution_id": "rongcheng-eldercare", "data": {"id": "rc-btn-1"}}'
    )
    async with running(listener), web.subscribe() as page:
        assert await next_change(page) == RESYNC
        async with broker.client("forger") as forger:
            await forger.publish("firewatch/v1/changes/rongcheng-eldercare", b'{"kind": 1}', qos=1)
            await forger.publish("firewatch/v1/changes/rongcheng-eldercare", good, qos=1)
        change = await next_change(page)
    assert (change.kind, change.data) == ("device", {"id": "rc-btn-1"})
    [dead] = await county.rows(db.DeadLetter)
    assert (dead.consumer, dead.topic) == ("web", "firewatch/v1/changes/rongcheng-eldercare")
    assert "does not match the v1 contract" in dead.reason


async def test_a_listener_that_lost_the_broker_tells_its_pages_to_reload_when_back(
    broker,
    county,
):
    web = ChangeHub()
    listener = ChangeListener(web, broker, "fw-web-0", DeadLetters(county.sessions, "web"))
    async with running(listener), web.subscribe() as page:
        assert await next_change(page) == RESYNC
        # a client with the same id takes the connection over: the broker drops the listener,
        # which comes back (and drops the interloper in turn)
        async with broker.client("fw-web-0"):
            assert await next_change(page) == RESYNC
        assert listener.subscribed


async def test_a_change_the_contract_has_no_kind_for_is_set_aside_and_the_next_alarm_is_relayed(
    broker,
    county,
):
    alert_hub = ChangeHub()
    alert_hub.watch(county.sessions)
    web = ChangeHub()
    listener = ChangeListener(web, broker, "fw-web-0", DeadLetters(county.sessions, "web"))
    async with (
        running(ChangePublisher(alert_hub, broker, "fw-alerts-changes"), listener),
        web.subscribe() as page,
    ):
        assert await next_change(page) == RESYNC
        # e.g. a row kind added to the hub before the contract learnt it
        alert_hub.publish(Change("gateway", "rongcheng-eldercare", {"id": "gw-rongcheng"}))
        alarm = await county.raise_alarm("rc-btn-1", "one_key_alarm", utc_now())
        change = await next_change(page)
    assert (change.kind, change.data["id"]) == ("alarm", alarm)
    assert alert_hub.errors == {"publish": 1}


async def test_a_notice_the_broker_refuses_becomes_a_reload_and_the_next_alarm_is_relayed(
    tmp_path, county
):
    """Mosquitto drops a client whose packet is over its limit: retried for ever, that one
    notice would hold back every change behind it on every bureau console."""
    server = Mosquitto(tmp_path / "small-packets", extra_config="max_packet_size 2048\n")
    server.start()
    broker = BrokerAddress.from_url(server.url)
    alert_hub = ChangeHub()
    alert_hub.watch(county.sessions)
    web = ChangeHub()
    listener = ChangeListener(web, broker, "fw-web-0", DeadLetters(county.sessions, "web"))
    try:
        async with (
            running(
                ChangePublisher(alert_hub, broker, "fw-alerts-changes", publish_timeout_s=0.5),
                listener,
            ),
            web.subscribe() as page,
        ):
            assert await next_change(page) == RESYNC
            alert_hub.publish(Change("alarm", "rongcheng-eldercare", {"note": "说明" * 2000}))
            assert await next_change(page) == RESYNC
            alarm = await county.raise_alarm("rc-btn-1", "one_key_alarm", utc_now())
            change = await next_change(page)
    finally:
        server.stop()
    assert (change.kind, change.data["id"]) == ("alarm", alarm)
    assert alert_hub.errors == {"publish": 1}
