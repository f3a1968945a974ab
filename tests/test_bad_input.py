"""Bad MQTT payloads, made by hypothesis: refused with a reason, kept, and nothing stops.

First the entry point every consumer uses (``parse_message``), then the real alert and ingest
consumers on a real Mosquitto: every bad payload lands in the dead-letter store with its
reason, and a good message sent after them is still applied.  (Garbled Modbus frames from the
simulators are tests/test_gateway.py's and tests/test_simulators.py's.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from firewatch import db
from firewatch.alert_side import alert_side
from firewatch.bench.servers import Mosquitto
from firewatch.contract import (
    ID_PATTERN,
    DeviceKind,
    InvalidPayload,
    ReadingBatch,
    parse_message,
    readings_topic,
)
from firewatch.dead_letters import DeadLetters
from firewatch.mqtt import BrokerAddress
from firewatch.settings import Settings
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.sqlite_store import SqliteTimeSeries
from tests.support.ledger import demo_county

pytestmark = pytest.mark.timeout(300)

GATEWAY, DEVICE, INSTITUTION = "gw-rongcheng", "rc-gas-1", "rongcheng-eldercare"
TOPIC = readings_topic(GATEWAY, DEVICE)
REQUIRED = ["schema", "gateway_id", "seq", "device_id", "institution_id", "kind", "ts", "profile"]


def good_batch(seq: int, ts: datetime | None = None) -> ReadingBatch:
    return ReadingBatch(
        gateway_id=GATEWAY,
        seq=seq,
        device_id=DEVICE,
        institution_id=INSTITUTION,
        kind="gas_detector",
        ts=ts or datetime.now(UTC),
        profile="generic-gas-lel",
        readings={"gas_concentration": 0.5},
        flags={"sensor_fault": False},
    )


GOOD = json.loads(good_batch(7, datetime(2026, 11, 22, tzinfo=UTC)).to_bytes())


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


not_an_id = st.one_of(
    st.text(max_size=80).filter(lambda s: not re.fullmatch(ID_PATTERN, s)),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)
#: a value for each field that the contract must refuse there
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "schema": st.text(max_size=30).filter(
        lambda s: s not in ("firewatch.readings/1", "firewatch.event/1")
    ),
    "gateway_id": not_an_id,
    "device_id": not_an_id,
    "institution_id": not_an_id,
    "seq": st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=2**63),
        st.text(alphabet="abc", min_size=1),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    ),
    "kind": st.text(max_size=30).filter(lambda s: s not in set(DeviceKind)),
    # a timestamp with no zone: nobody can tell when that was
    "ts": st.one_of(
        st.datetimes(min_value=datetime(2000, 1, 1)).map(datetime.isoformat),
        st.text(alphabet="xyz:-", min_size=1, max_size=20),
    ),
    "profile": st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
    "readings": st.one_of(
        st.dictionaries(
            st.text(max_size=10),
            st.text(max_size=5).filter(lambda s: not _is_number(s)),
            min_size=1,
            max_size=3,
        ),
        st.sampled_from([{"gas_concentration": "NaN"}, {"gas_concentration": "Infinity"}]),
        st.lists(st.floats(), max_size=2),
    ),
    "flags": st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.integers(min_value=2), st.text(alphabet="xyz", min_size=1)),
        min_size=1,
        max_size=3,
    ),
}


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _encode(message: dict[str, Any]) -> bytes:
    # NaN and Infinity as JSON tokens, as a careless device firmware writes them
    return json.dumps(message).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity").encode()


@st.composite
def one_field_broken(draw: st.DrawFn) -> tuple[str, bytes]:
    field = draw(st.sampled_from(sorted(BAD_VALUES)))
    return TOPIC, _encode({**GOOD, field: draw(BAD_VALUES[field])})


@st.composite
def one_field_missing(draw: st.DrawFn) -> tuple[str, bytes]:
    field = draw(st.sampled_from(REQUIRED))
    return TOPIC, _encode({k: v for k, v in GOOD.items() if k != field})


@st.composite
def one_field_too_many(draw: st.DrawFn) -> tuple[str, bytes]:
    key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in {*GOOD, "schema_"}))
    return TOPIC, _encode({**GOOD, key: draw(st.integers() | st.text(max_size=5))})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)

bad_messages = st.one_of(
    st.binary(max_size=120).filter(lambda b: not _is_json(b)).map(lambda b: (TOPIC, b)),
    json_values.map(lambda v: (TOPIC, json.dumps(v).encode())),  # JSON, but no object
    one_field_broken(),
    one_field_missing(),
    one_field_too_many(),
    # a good payload on another gateway's topic: a gateway speaking for another
    st.just((readings_topic("gw-dingqiao", DEVICE), _encode(GOOD))),
)


@settings(max_examples=400, deadline=None)
@given(bad_messages)
def test_every_bad_payload_is_refused_with_a_reason(message: tuple[str, bytes]):
    topic, payload = message
    with pytest.raises(InvalidPayload) as refused:
        parse_message(topic, payload)
    assert refused.value.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_either_a_message_or_refused_never_a_crash(payload: bytes):
    with contextlib.suppress(InvalidPayload):
        parse_message(TOPIC, payload)


# --- through a real broker into the real consumers -----------------------------------------


class Consumers:
    """The alert and ingest consumers as `firewatch up` builds them, on one SQLite database."""

    def __init__(self, broker: BrokerAddress, sessions, alerts, ingest) -> None:
        self.broker = broker
        self.sessions = sessions
        self.alerts = alerts
        self.ingest = ingest
        self.seq = count(1)
        self.clock = datetime.now(UTC)

    async def dead_letters(self) -> list[db.DeadLetter]:
        async with self.sessions() as session:
            return list(await session.scalars(select(db.DeadLetter).order_by(db.DeadLetter.id)))

    def next_good(self) -> ReadingBatch:
        self.clock += timedelta(milliseconds=1)
        return good_batch(next(self.seq), self.clock)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield BrokerAddress.from_url(broker.url)
    broker.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def consumers(mosquitto, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("consumers")
    async with demo_county(f"sqlite+aiosqlite:///{workdir}/fw.db") as county:
        sessions = county.sessions
        side = alert_side(
            Settings(wecom_webhook_url=None), county.site, county.profiles, sessions, mosquitto
        )
        alerts = side.alerts
        store = SqliteTimeSeries(workdir / "ts.db")
        await store.open()
        ingest = IngestService(
            store, Spool(workdir / "spool.db"), mosquitto, DeadLetters(sessions, "ingest")
        )
        tasks = [asyncio.create_task(alerts.run()), asyncio.create_task(ingest.run())]
        await alerts.consumer.ready.wait()
        await ingest.consumer.ready.wait()
        yield Consumers(mosquitto, sessions, alerts, ingest)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await side.close()
        await store.close()


@pytest.mark.asyncio(loop_scope="module")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bad_messages, min_size=1, max_size=6))
async def test_bad_payloads_through_the_broker_are_dead_lettered_and_the_consumers_go_on(
    consumers: Consumers, messages: list[tuple[str, bytes]]
):
    before = len(await consumers.dead_letters())
    letters = {
        "alerts": consumers.alerts.consumer.dead_letters,
        "ingest": consumers.ingest.consumer.dead_letters,
    }
    # over a gateway's budget a minute, a letter is counted instead of stored (a flood)
    unstored = {name: d.unstored.total() for name, d in letters.items()}
    applied = consumers.alerts.consumer.handled
    written = consumers.ingest.written
    good = consumers.next_good()
    async with consumers.broker.client("fuzzer") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)
        await client.publish(TOPIC, good.to_bytes(), qos=1)

    for _ in range(400):  # the good message after them is applied by both consumers
        if consumers.alerts.consumer.handled > applied and consumers.ingest.written > written:
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError(f"a consumer stopped after {messages!r}")

    new = (await consumers.dead_letters())[before:]
    for consumer in ("alerts", "ingest"):
        kept = Counter((d.topic, d.payload) for d in new if d.consumer == consumer)
        counted = letters[consumer].unstored.total() - unstored[consumer]
        assert not kept - Counter(messages) and kept.total() + counted == len(messages)
        assert all(d.reason for d in new)
