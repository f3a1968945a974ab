"""Faults, as the issue asks for them (tests, not promises): the alert service killed with SIGKILL
during an alarm, and a gateway restarted with a full outbox.  Afterwards every alarm is raised
once, its ledger entry filed once, its notice sent once, and every batch kept in the outbox
stored once.

Each part is a real `firewatch <service>` process on a real Mosquitto (as in test_services);
the WeChat Work robot is the strict local fake.  Broker outages and kills happen to processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from firewatch.bench.servers import Mosquitto, PostgreSQL
from firewatch.contract import parse_message
from firewatch.mqtt import free_port
from tests.support.processes import Service, kill_running, press, until
from tests.support.providers import Trouble
from tests.support.timeseries import stored_messages
from tests.support.wecom import WeComServer

pytestmark = pytest.mark.timeout(120)


def sigkill(service: Service) -> None:
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait(10)


# --- the alert service killed during an alarm ----------------------------------------------


class AlertsRig:
    """A gateway process (with the demo's simulated devices) and an alerts process that can be
    killed and started again, on one PostgreSQL database."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.runs = 0
        self.gateway = Service("gateway", ["gateway"], env, workdir)
        self.alerts = self.start_alerts()

    def start_alerts(self) -> Service:
        self.runs += 1
        self.alerts = Service(f"alerts-{self.runs}", ["alerts"], self.env, self.workdir)
        until(
            lambda: self.alerts.total("firewatch_consumer_broker_connected") == 1,
            "the alert service to subscribe",
            self.running,
        )
        return self.alerts

    @property
    def running(self) -> list[Service]:
        return [self.gateway, self.alerts]

    def stop(self) -> None:
        for service in self.running:
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait(10)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker, database, robot) -> Iterator[AlertsRig]:
    env = {
        "FIREWATCH_MQTT_URL": broker.url,
        "FIREWATCH_DATABASE_URL": database,
        "FIREWATCH_DATA_DIR": str(tmp_path_factory.mktemp("alerts-rig")),
        "FIREWATCH_WECOM_WEBHOOK_URL": robot.url,
    }
    rig = AlertsRig(tmp_path_factory.mktemp("alerts-logs"), env)
    try:
        until(
            lambda: (
                rig.gateway.total("firewatch_gateway_broker_connected") == 3
                and rig.alerts.total("firewatch_consumer_messages_applied_total") > 0
            ),
            "gateway messages applied by the alert service",
            rig.running,
        )
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def sql(database) -> Iterator[Engine]:
    engine = create_engine(PostgreSQL.synchronous(database))
    yield engine
    engine.dispose()


def count(sql: Engine, query: str, **params: object) -> int:
    with sql.connect() as connection:
        return connection.scalar(text(query), params)


def raise_notices(sql: Engine, button: str) -> list[tuple[str, str]]:
    """(channel, target) of each stored notice of ``button``'s alarm being raised."""
    with sql.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT n.channel, n.target, n.body FROM notices n"
                " JOIN alarms a ON a.id = n.alarm_id WHERE a.device_id = :d"
            ),
            {"d": button},
        ).all()
    bodies = [(c, t, json.loads(b) if isinstance(b, str) else b) for c, t, b in rows]
    return [(c, t) for c, t, body in bodies if body["kind"] == "raise"]


def raise_notices_at_robot(robot: WeComServer, button: str) -> int:
    """How many alarm (not recovery or escalation) notices about ``button`` the robot took."""
    return sum(
        1
        for r in robot.robot.accepted
        if f"（{button}）" in (content := r.body["markdown"]["content"]) and "【报警】" in content
    )


def hold_alarm_inserts(sql: Engine) -> Connection:
    """A transaction that lets the alert service read alarms but not add one until it ends."""
    connection = sql.connect()
    connection.execute(text("LOCK TABLE alarms IN SHARE MODE"))
    return connection


def waiting_alarm_inserts(sql: Engine) -> int:
    return count(
        sql,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query ILIKE 'INSERT INTO alarms%'",
    )


def kill_while_the_alarm_is_being_written(
    rig: AlertsRig, sql: Engine, robot: WeComServer, broker: Mosquitto, button: str
) -> None:
    held = hold_alarm_inserts(sql)
    try:
        press(broker, button)
        until(
            lambda: waiting_alarm_inserts(sql) == 1,
            "the alert service to be inside the alarm's transaction",
            rig.running,
        )
        sigkill(rig.alerts)
    finally:
        held.rollback()
        held.close()


def kill_after_the_alarm_was_committed_before_its_notice_went_out(
    rig: AlertsRig,
    sql: Engine,
    robot: WeComServer,
    broker: Mosquitto,
    button: str,
) -> None:
    robot.robot.trouble = Trouble.DOWN
    try:
        press(broker, button)
        until(
            lambda: (
                count(
                    sql,
                    "SELECT count(*) FROM notices n JOIN alarms a"
                    " ON a.id = n.alarm_id WHERE a.device_id = :d"
                    " AND n.status = 'pending' AND n.attempts >= 1",
                    d=button,
                )
                == 1
            ),
            "the notice to be stored and its first send to fail",
            rig.running,
        )
        sigkill(rig.alerts)
    finally:
        robot.robot.trouble = Trouble.NONE


@pytest.mark.parametrize(
    ("kill", "button"),
    [
        (kill_while_the_alarm_is_being_written, "rc-btn-1"),
        (kill_after_the_alarm_was_committed_before_its_notice_went_out, "dq-btn-1"),
    ],
    ids=["mid-transaction", "before-the-notice"],
)
def test_an_alert_service_killed_during_an_alarm_raises_files_and_notifies_it_once(
    rig,
    sql,
    robot,
    broker,
    kill,
    button,
):
    kill(rig, sql, robot, broker, button)
    assert rig.alerts.process.returncode == -signal.SIGKILL
    rig.start_alerts()

    until(
        lambda: (
            count(
                sql,
                "SELECT count(*) FROM notices n JOIN alarms a ON a.id = n.alarm_id"
                " WHERE a.device_id = :d AND n.status = 'sent'",
                d=button,
            )
            >= 1
        ),
        "the alarm's notice to be sent after the restart",
        rig.running,
    )
    # what the gateway sent before and during the kill has all been applied by now
    applied = rig.alerts.total("firewatch_consumer_messages_applied_total")
    until(
        lambda: rig.alerts.total("firewatch_consumer_messages_applied_total") > applied + 3,
        "newer gateway messages to be applied",
        rig.running,
    )

    assert count(sql, "SELECT count(*) FROM alarms WHERE device_id = :d", d=button) == 1
    assert (
        count(
            sql,
            "SELECT count(*) FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id"
            " WHERE a.device_id = :d AND e.action = 'raise'",
            d=button,
        )
        == 1
    )
    assert count(sql, "SELECT count(*) FROM hazards WHERE device_id = :d", d=button) == 1
    # the alarm told once on each means a press goes out on (robot, SMS, voice call), none
    # twice (an escalation step, due later on a slow machine, is another notice)
    raised = raise_notices(sql, button)
    assert len(raised) == len(set(raised)) >= 2
    assert raise_notices_at_robot(robot, button) == 1
    assert robot.robot.rejected == []


# --- a gateway restarted with a full outbox ------------------------------------------------

OUTBOX_BOUND = 10


class Tap:
    """What the broker hands a subscriber of every gateway message (persistent session, QoS 1):
    the (seq, kind) of each delivery, redeliveries included, in arrival order."""

    def __init__(self, broker: Mosquitto) -> None:
        self.deliveries: list[tuple[int, str]] = []
        self.subscribed = threading.Event()
        self.client = paho.mqtt.client.Client(
            paho.mqtt.client.CallbackAPIVersion.VERSION2, "fault-test-tap", clean_session=False
        )
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("firewatch/v1/+/gw-rongcheng/+", 1), ("firewatch/v1/heartbeats/gw-rongcheng", 1)]
        )
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._record
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _record(self, client, userdata, message) -> None:
        parsed = parse_message(message.topic, message.payload)
        self.deliveries.append((parsed.seq, type(parsed).__name__))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def dropped_in_log(service: Service) -> int:
    """The gateway's own count of messages dropped from its full outbox, from its last log line."""
    counts = [
        int(found.group(1))
        for line in service.log.read_text().splitlines()
        if (found := re.search(r"(\d+) dropped in all", json.loads(line)["message"]))
    ]
    return counts[-1] if counts else 0


def test_a_gateway_restarted_with_a_full_outbox_delivers_what_it_kept_once_in_order(tmp_path):
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    env = {
        "FIREWATCH_MQTT_URL": mosquitto.url,
        "FIREWATCH_DATA_DIR": str(tmp_path / "data"),
        "FIREWATCH_GATEWAY_OUTBOX_MAX_MESSAGES": str(OUTBOX_BOUND),
    }
    tap = Tap(mosquitto)
    # the broker as a gateway sees it when the line to it is down: nothing answers
    unreachable = {"FIREWATCH_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"}
    started: list[Service] = []

    def start(name: str, *command: str, **extra: str) -> Service:
        started.append(Service(name, list(command), {**env, **extra}, tmp_path))
        return started[-1]

    try:
        assert tap.subscribed.wait(10)
        ingest = start("ingest", "ingest")
        until(lambda: "subscribed to" in ingest.log.read_text(), "ingest to subscribe", [ingest])

        first = start("gateway-1", "gateway", "--gateway", "gw-rongcheng", **unreachable)
        until(
            lambda: first.total("firewatch_gateway_outbox_dropped_total") >= 3,
            "the outbox to fill up and drop its oldest",
            [first],
        )
        assert first.total("firewatch_gateway_outbox_depth") == OUTBOX_BOUND
        sigkill(first)
        dropped_before_restart = dropped_in_log(first)

        second = start("gateway-2", "gateway", "--gateway", "gw-rongcheng")
        until(
            lambda: f"{OUTBOX_BOUND} messages waiting from before" in second.log.read_text(),
            "the restarted gateway to find its outbox full",
            [second],
        )
        until(
            lambda: second.total("firewatch_gateway_published_total") > OUTBOX_BOUND,
            "the kept messages and new ones to be published",
            [second, ingest],
        )
        dropped = dropped_before_restart + int(
            second.total("firewatch_gateway_outbox_dropped_total")
        )
        assert second.stop() == 0
        with sqlite3.connect(tmp_path / "data" / "outbox-gw-rongcheng.db") as outbox:
            last_seq = outbox.execute("SELECT seq FROM sqlite_sequence").fetchone()[0]
            unsent = {seq for (seq,) in outbox.execute("SELECT seq FROM outbox")}
        # every message is delivered, still in the outbox, or counted as dropped
        until(
            lambda: len({seq for seq, _ in tap.deliveries} | unsent) >= last_seq - dropped,
            "the tap to see every message the broker acknowledged",
            [ingest],
        )
        batches = {seq for seq, kind in tap.deliveries if kind == "ReadingBatch"}
        until(
            lambda: stored_batches(tmp_path) == batches,
            "ingest to store every reading batch",
            [ingest],
        )
    finally:
        tap.close()
        kill_running(started)
        mosquitto.stop()

    first_arrivals = list(dict.fromkeys(seq for seq, _ in tap.deliveries))
    assert first_arrivals == sorted(first_arrivals), "messages arrive in sequence order"
    missing = set(range(1, max(first_arrivals) + 1)) - set(first_arrivals) - unsent
    assert dropped_before_restart >= 3
    shed_first = sorted(missing)[:dropped_before_restart]
    kept_among_them = {kind for seq, kind in tap.deliveries if seq < shed_first[-1]}
    assert kept_among_them <= {"DeviceEvent"}, "the oldest routine ones were shed, events kept"
    assert len(missing) == dropped, "every message not counted as dropped arrives"
    assert stored_batches(tmp_path) == batches, "each batch stored"


def stored_batches(workdir: Path) -> set[int]:
    """The sequence numbers of gw-rongcheng's messages in the time-series store."""
    stored = stored_messages(workdir / "data" / "timeseries.db")
    return {seq for gateway, _, seq in stored if gateway == "gw-rongcheng"}
