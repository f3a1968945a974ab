"""The production shape: each part a process of its own (`firewatch gateway|ingest|alerts|web`),
one real Mosquitto, one PostgreSQL database, two ingest partitions, JSON logs and /metrics.

The processes are started as docker-compose.yml starts its containers, with FIREWATCH_*
variables only; what the tests read is what an operator reads: metrics and log lines.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firewatch.mqtt import free_port
from tests.support.auth import login
from tests.support.processes import Service, press, until
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def services(tmp_path_factory, broker, database, robot) -> Iterator[dict[str, Service]]:
    workdir = tmp_path_factory.mktemp("services")
    env = {
        "FIREWATCH_MQTT_URL": broker.url,
        "FIREWATCH_DATABASE_URL": database,
        "FIREWATCH_DATA_DIR": str(workdir),
        "FIREWATCH_WECOM_WEBHOOK_URL": robot.url,
    }
    started: dict[str, Service] = {}

    def start(name: str, *command: str, **extra: str) -> Service:
        started[name] = Service(name, list(command), {**env, **extra}, workdir)
        return started[name]

    try:
        # alerts first: it writes the site's institutions and devices
        alerts = start("alerts", "alerts")
        until(lambda: alerts.metrics() is not None, "alerts to serve metrics", [alerts])
        for partition in ("0", "1"):
            start(
                f"ingest-p{partition}",
                "ingest",
                FIREWATCH_CONSUMER_PARTITIONS="2",
                FIREWATCH_CONSUMER_PARTITION=partition,
            )
        start("web", "web", FIREWATCH_PORT=str(free_port()))
        start("gateway", "gateway")
        running = list(started.values())
        until(lambda: all(s.metrics() for s in running), "every service's metrics", running)
        yield started
    finally:
        for service in started.values():
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait(10)


@contextlib.contextmanager
def admin(web: Service) -> Iterator[httpx.Client]:
    """A console client of the web process, logged in as the bureau's admin."""
    with httpx.Client(base_url=f"http://127.0.0.1:{web.port}", timeout=10) as client:
        yield login(client, "admin")


def server_sent_events(reply: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an /api/events stream, as the console's pages read them."""
    kind = ""
    for line in reply.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, json.loads(line.removeprefix("data: "))


def test_readings_flow_from_the_gateway_process_through_the_broker_to_alerts_and_ingest(
    services,
):
    running = list(services.values())
    gateway, alerts = services["gateway"], services["alerts"]
    until(
        lambda: (
            gateway.total("firewatch_gateway_polls_total", device="rc-efm-1") >= 2
            and gateway.total("firewatch_gateway_published_total", gateway="gw-dingqiao") > 0
            and alerts.total("firewatch_consumer_messages_applied_total") > 0
            and services["ingest-p0"].total("firewatch_ingest_written_total")
            + services["ingest-p1"].total("firewatch_ingest_written_total")
            > 0
        ),
        "polls, published batches, applied and written readings",
        running,
    )
    assert gateway.total("firewatch_gateway_outbox_depth") < 100
    assert gateway.total("firewatch_gateway_broker_connected") == 3
    assert alerts.total("firewatch_dead_letters_total") == 0


def test_two_ingest_partitions_share_the_gateways(services):
    replicas = [services["ingest-p0"], services["ingest-p1"]]
    until(
        lambda: all(r.total("firewatch_ingest_written_total") >= 3 for r in replicas),
        "both ingest replicas to write readings",
        list(services.values()),
    )
    assert all(r.total("firewatch_ingest_store_available") == 1 for r in replicas)


def test_a_button_press_is_an_alarm_in_the_alerts_process_and_a_notice_reaches_the_robot(
    services,
    broker,
    robot,
):
    alerts = services["alerts"]
    press(broker, "rc-btn-1")
    until(
        lambda: (
            alerts.total("firewatch_alerts_alarms_raised_total") >= 1
            and alerts.total("firewatch_notices_sent_total") >= 1
        ),
        "the alarm to be raised and its notice sent",
        list(services.values()),
    )
    until(
        lambda: any(
            "蓉城镇敬老院" in r.body["markdown"]["content"]
            and "一键报警" in r.body["markdown"]["content"]
            for r in robot.robot.accepted
        ),
        "the button's notice at the robot",
        list(services.values()),
    )


def test_a_button_press_shows_live_on_the_admins_page_served_by_the_web_process(
    services,
    broker,
):
    web, alerts = services["web"], services["alerts"]
    running = list(services.values())
    with admin(web) as client:  # the services' details are for admins
        until(
            lambda: client.get("/api/health").json()["services"]["changes"]["subscribed"],
            "the web process to follow the change notices",
            running,
        )
    pushed: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    with (
        admin(web) as client,
        client.stream(
            "GET",
            "/api/events",
            timeout=httpx.Timeout(10, read=30),
        ) as reply,
    ):
        events = server_sent_events(reply)
        assert next(events)[0] == "ready"
        press(broker, "cw-btn-1")
        for kind, data in events:
            if data.get("device_id", data.get("id")) == "cw-btn-1":
                pushed[kind] = data
            if pushed.get("device", {}).get("state") == "alarm" and "alarm" in pushed:
                break
            assert time.monotonic() < deadline, f"no live alarm of cw-btn-1; got {pushed}"
    assert pushed["device"]["institution_name"] == "县儿童福利院（演示）"
    assert (pushed["alarm"]["rule"], pushed["alarm"]["status"]) == ("one_key_alarm", "active")
    assert alerts.total("firewatch_change_notices_total", direction="published") >= 2
    assert web.total("firewatch_change_notices_total", direction="received") >= 2


def test_the_alerts_process_schedules_the_escalation_of_an_unacknowledged_alarm(
    services,
    broker,
):
    alerts, running = services["alerts"], list(services.values())
    assert ("firewatch_escalation_jobs_scheduled", ()) in alerts.metrics()
    press(broker, "dq-btn-1")
    with admin(services["web"]) as client:

        def newest_alarm() -> int | None:
            alarms = client.get("/api/alarms", params={"device_id": "dq-btn-1"}).json()
            return alarms[0]["id"] if alarms else None

        until(lambda: newest_alarm() is not None, "the button's alarm", running)

    # the scheduler sweeps for new alarms every 15 s
    until(
        lambda: alerts.total("firewatch_escalation_jobs_scheduled") >= 1,
        "the alerts process to report the job",
        running,
    )


def test_every_log_line_of_every_service_is_a_json_object(services):
    for service in services.values():
        lines = service.log.read_text().splitlines()
        assert lines, f"{service.name} logged nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(
                    f"{service.name} logged a line that is not JSON: {line}"
                ) from None
            assert {"ts", "level", "logger", "message"} <= set(entry), line


def test_each_service_stops_cleanly_on_sigterm(services):
    for service in services.values():
        assert service.stop() == 0, service.log.read_text()[-2000:]


def test_firewatch_up_serves_every_services_counts_at_the_web_apps_metrics(tmp_path):
    stack = Stack(tmp_path / "stack")
    stack.start()
    try:

        def counts() -> dict[str, float]:
            text = stack.api.get("/metrics").text
            return {
                s.name: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        stack.wait_until(
            lambda: (
                counts().get("firewatch_ingest_written_total", 0) > 0
                and counts().get("firewatch_consumer_messages_applied_total", 0) > 0
            ),
            30,
            "ingest and alerts counts at /metrics",
        )
        names = set(counts())
        assert {
            "firewatch_gateway_polls_total",
            "firewatch_gateway_published_total",
            "firewatch_gateway_outbox_depth",
            "firewatch_ingest_spool_depth",
            "firewatch_alerts_alarms_raised_total",
            "firewatch_notices_sent_total",
            "firewatch_escalation_jobs_scheduled",
            "process_resident_memory_bytes",
        } <= names
    finally:
        stack.stop()
