"""A broker restarted ten times in a row under load loses and duplicates nothing, in every shipped
shape on Mosquitto: `firewatch up`, and the production services (`firewatch gateway`, two
`firewatch ingest` partitions, `firewatch alerts`).

The gateways poll the demo's simulated devices every 0.2 s.  Mosquitto is stopped (SIGTERM, as
`docker restart` does) for 1 to 3 s and started again after 2 to 4 s of service, ten times; the
gateways reconnect at once and publish the backlog of their outboxes, the consumers come back on
their own backoff.  Then every message an outbox handed to the broker (numbered, and no longer
kept) must have reached the consumers: a reading or device event in the alert service's record
of what it applied (a heartbeat is heard, not recorded) and a reading batch in ingest's store,
once: nothing lost, nothing stored twice.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client
import pytest
from sqlalchemy import create_engine, text

from firewatch.bench.servers import Mosquitto, PostgreSQL
from firewatch.contract import (
    EVENTS_FILTER,
    HEARTBEATS_FILTER,
    READINGS_FILTER,
    DeviceEvent,
    ReadingBatch,
    parse_message,
)
from firewatch.profiles import PROFILES_DIR
from tests.support.processes import Service, kill_running, until
from tests.support.stack import Stack
from tests.support.timeseries import stored_messages

pytestmark = pytest.mark.timeout(240)
RESTARTS = 10
GATEWAYS = ("gw-rongcheng", "gw-dingqiao", "gw-child-welfare")


def fast_profiles(tmp_path: Path) -> Path:
    """The shipped device profiles, the Modbus ones polled every 0.2 s instead of every 1 s,
    and each poll reported: the report heartbeat as short (report by exception would send
    an idle device's batch once a minute, no load for the broker's restarts to meet)."""
    target = tmp_path / "profiles"
    shutil.copytree(PROFILES_DIR, target)
    fast = 0
    for profile in target.glob("*.yaml"):
        text_ = profile.read_text()
        fast += "poll_interval_s: 1.0" in text_
        text_ = text_.replace("poll_interval_s: 1.0", "poll_interval_s: 0.2")
        profile.write_text(text_.replace("report_heartbeat_s: 60", "report_heartbeat_s: 0.2"))
    assert fast >= 3
    return target


#: a message: (gateway id, incarnation of its outbox, seq)
Key = tuple[str, str, int]


class Tap:
    """Which of the gateways' messages are reading batches: a subscriber of its own on the
    broker (persistent session, QoS 1), recording the kind of every message it sees."""

    def __init__(self, broker: Mosquitto) -> None:
        self.kinds: dict[Key, type] = {}
        self.subscribed = threading.Event()
        self.client = paho.mqtt.client.Client(
            paho.mqtt.client.CallbackAPIVersion.VERSION2, "restart-test-tap", clean_session=False
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(READINGS_FILTER, 1), (EVENTS_FILTER, 1), (HEARTBEATS_FILTER, 1)]
        )
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._record
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _record(self, client, userdata, message) -> None:
        parsed = parse_message(message.topic, message.payload)
        self.kinds[(parsed.gateway_id, parsed.incarnation, parsed.seq)] = type(parsed)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def handed_to_the_broker(gateway_id: str, outbox: Path) -> tuple[set[Key], int]:
    """The messages an outbox has handed to the broker (numbered and no longer kept: no outbox
    here reaches its bound, so none was shed), and how many it keeps."""
    with contextlib.closing(sqlite3.connect(outbox, timeout=10)) as db, db:
        [incarnation] = db.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        kept = {seq for (seq,) in db.execute("SELECT seq FROM outbox")}
    return (
        {
            (gateway_id, incarnation, seq)
            for seq in range(1, last[0] + 1 if last else 1)
            if seq not in kept
        },
        len(kept),
    )


def restart_repeatedly(
    broker: Mosquitto, outboxes: dict[str, Path], alive: Callable[[], None]
) -> list[int]:
    """Stop and start the broker RESTARTS times; the messages the gateways kept as it came
    back each time (their backlog, published as soon as they reconnect)."""
    rng = random.Random(13)
    backlogs = []
    for _ in range(RESTARTS):
        time.sleep(rng.uniform(2, 4))
        broker.stop()
        time.sleep(rng.uniform(1, 3))
        backlogs.append(sum(handed_to_the_broker(*outbox)[1] for outbox in outboxes.items()))
        broker.start()
        alive()
    return backlogs


class Record:
    """What the consumers recorded: the messages applied by the alert service and stored by
    ingest (each once by construction: a message's key, a reading's series and time)."""

    def __init__(self, database_url: str, timeseries: Path) -> None:
        self.engine = create_engine(database_url)
        self.timeseries = timeseries

    def applied_by_alerts(self) -> set[Key]:
        with self.engine.connect() as connection:
            return set(
                map(
                    tuple,
                    connection.execute(
                        text(
                            "SELECT gateway_id, incarnation, seq FROM processed_messages"
                            " WHERE consumer = 'alerts'"
                        )
                    ),
                )
            )

    def stored_by_ingest(self) -> set[Key]:
        return stored_messages(self.timeseries)

    def close(self) -> None:
        self.engine.dispose()


def within(seconds: float, done: Callable[[], bool], alive: Callable[[], None]) -> bool:
    """Whether ``done`` comes true within ``seconds``; ``alive`` raises if a process exited."""
    deadline = time.monotonic() + seconds
    while not done():
        alive()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def nothing_lost_nor_duplicated(
    data_dir: Path, tap: Tap, record: Record, alive: Callable[[], None]
) -> int:
    """Every message the outboxes handed to the broker, once in the consumers' records (after
    the gateways have published their last backlog); how many messages that was."""
    outboxes = outboxes_in(data_dir)
    assert within(
        60, lambda: all(handed_to_the_broker(*o)[1] < 20 for o in outboxes.items()), alive
    ), "the gateways did not publish their backlogs"
    handed = set().union(*(handed_to_the_broker(*o)[0] for o in outboxes.items()))

    def of(*kinds: type) -> set[Key]:
        return {key for key in handed if tap.kinds.get(key) in kinds}

    # a heartbeat is heard by the alert service's link watch, not recorded as applied
    def readings() -> set[Key]:
        return of(ReadingBatch)

    def device_messages() -> set[Key]:
        return of(ReadingBatch, DeviceEvent)

    within(
        60,
        lambda: (
            handed <= tap.kinds.keys()
            and device_messages() <= record.applied_by_alerts()
            and readings() <= record.stored_by_ingest()
        ),
        alive,
    )
    assert handed <= tap.kinds.keys(), f"the tap missed {missing(handed - tap.kinds.keys())}"
    assert device_messages() <= record.applied_by_alerts(), (
        "the alert service never applied " + missing(device_messages() - record.applied_by_alerts())
    )
    assert readings() <= record.stored_by_ingest(), (
        f"ingest never stored {missing(readings() - record.stored_by_ingest())}"
    )
    return len(handed)


def ten_restarts_lose_and_duplicate_nothing(
    broker: Mosquitto, data_dir: Path, tap: Tap, record: Record, alive: Callable[[], None]
) -> None:
    """The scenario, once the consumers and gateways run on ``broker`` with ``data_dir``."""
    assert within(30, lambda: len(record.applied_by_alerts()) > 50, alive), "no stream"
    backlogs = restart_repeatedly(broker, outboxes_in(data_dir), alive)
    handed = nothing_lost_nor_duplicated(data_dir, tap, record, alive)
    print(f"\n{handed} messages; backlogs as the broker came back: {backlogs}")
    assert sum(b > 0 for b in backlogs) >= RESTARTS // 2, "the gateways had backlogs to replay"


def outboxes_in(data_dir: Path) -> dict[str, Path]:
    return {gateway: data_dir / f"outbox-{gateway}.db" for gateway in GATEWAYS}


def missing(keys: set[Key]) -> str:
    """``keys`` as a count and seq ranges per gateway and incarnation."""
    ranges: dict[str, list[list[int]]] = {}
    for gateway, incarnation, seq in sorted(keys):
        runs = ranges.setdefault(f"{gateway}/{incarnation}", [])
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return f"{len(keys)} messages: " + "; ".join(
        f"{gateway} " + ", ".join(f"{a}-{b}" if a < b else str(a) for a, b in runs)
        for gateway, runs in ranges.items()
    )


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)  # persistence on, as deploy/mosquitto/mosquitto.conf has it
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def tap(mosquitto) -> Iterator[Tap]:
    tap = Tap(mosquitto)
    yield tap
    tap.close()


def test_firewatch_up_on_mosquitto_loses_and_duplicates_nothing_over_ten_broker_restarts(
    tmp_path,
    mosquitto,
    tap,
):
    data_dir = tmp_path / "stack"
    stack = Stack(
        data_dir,
        env={
            "FIREWATCH_MQTT_URL": mosquitto.url,
            "FIREWATCH_PROFILES_DIR": str(fast_profiles(tmp_path)),
        },
    )
    stack.start()
    record = Record(f"sqlite:///{data_dir / 'firewatch.db'}", data_dir / "timeseries.db")
    try:
        ten_restarts_lose_and_duplicate_nothing(
            mosquitto,
            data_dir,
            tap,
            record,
            alive=lambda: stack.wait_until(lambda: True, 1, "the stack to keep running"),
        )
    finally:
        record.close()
        if stack.process is not None:
            stack.stop()


def test_the_production_services_lose_and_duplicate_nothing_over_ten_broker_restarts(
    tmp_path,
    mosquitto,
    tap,
    postgres,
):
    database = postgres.new_database()
    data_dir = tmp_path / "data"
    env = {
        "FIREWATCH_MQTT_URL": mosquitto.url,
        "FIREWATCH_DATABASE_URL": database,
        "FIREWATCH_DATA_DIR": str(data_dir),
        "FIREWATCH_PROFILES_DIR": str(fast_profiles(tmp_path)),
    }
    services: list[Service] = []

    def start(name: str, *command: str, **extra: str) -> Service:
        services.append(Service(name, list(command), {**env, **extra}, tmp_path))
        return services[-1]

    record = Record(PostgreSQL.synchronous(database), data_dir / "timeseries.db")
    try:
        alerts = start("alerts", "alerts")  # first: it writes the site into the database
        until(
            lambda: alerts.total("firewatch_consumer_broker_connected") == 1,
            "the alert service to subscribe",
            services,
        )
        for index in ("0", "1"):
            start(
                f"ingest-p{index}",
                "ingest",
                FIREWATCH_CONSUMER_PARTITIONS="2",
                FIREWATCH_CONSUMER_PARTITION=index,
            )
        until(
            lambda: all(s.total("firewatch_consumer_broker_connected") == 1 for s in services[1:]),
            "both ingest partitions to subscribe",
            services,
        )
        start("gateway", "gateway")

        ten_restarts_lose_and_duplicate_nothing(
            mosquitto,
            data_dir,
            tap,
            record,
            alive=lambda: until(lambda: True, "the services to keep running", services),
        )
        for service in services:
            assert service.stop() == 0, service.log.read_text()[-2000:]
    finally:
        record.close()
        kill_running(services)
