"""Hostile but valid input at every door of a running stack, and a real alarm still arrives.

`firewatch up` runs on a real Mosquitto with the demo county.  Each scenario sends one family of
hostile input at 蓉城 (Rongcheng): values that are valid JSON but mean harm or nonsense (huge and
tiny numbers, far past and far future times, another gateway's devices, deep nesting, 8 MiB,
formulas, far deadlines, unknown ids).  Then the control: somebody presses the one-key alarm at
another institution, 丁桥 (Dingqiao), and the alarm and its notice must arrive at Dingqiao's
own WeChat Work robot as they would on a quiet day.  The stack must never exit.

Site and profile files and settings are start-up input; their refusals are
tests/test_profiles.py's and tests/test_bounds.py's.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from itertools import count
from pathlib import Path
from typing import Any

import openpyxl
import paho.mqtt.client
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firewatch.bench.servers import Mosquitto
from firewatch.contract import DeviceEvent, GatewayHeartbeat, ReadingBatch, readings_topic
from sites import __file__ as sites_init
from tests.support.stack import Stack
from tests.support.wecom import WeComRobot, WeComServer

pytestmark = [pytest.mark.timeout(600), pytest.mark.mosquitto]

SITE_DIR = Path(sites_init).parent
HOSTILE_GW, CONTROL_INSTITUTION, CONTROL_BUTTON = "gw-rongcheng", "丁桥镇敬老院（演示）", "dq-btn-1"
#: a stream of our own: what we forge never collides with the real gateway's sequence numbers
FORGED_INCARNATION = "f0f0f0f0f0f0f0f0"
_seq = count(1)


@pytest.fixture(scope="module")
def control_robot():
    """Dingqiao's own robot: its notices are counted apart from what the hostile input causes."""
    with WeComServer(WeComRobot(key="dingqiao-control")) as server:
        yield server


@pytest.fixture(scope="module")
def robot():
    with WeComServer() as server:
        yield server


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="module")
def stack(broker, robot, control_robot, tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    site = yaml.safe_load((SITE_DIR / "demo-county.yaml").read_text(encoding="utf-8"))
    for institution in site["institutions"]:
        if institution["id"] == "dingqiao-eldercare":
            institution["wecom_webhook_url"] = control_robot.url
    (site_dir / "county.yaml").write_text(
        yaml.safe_dump(site, allow_unicode=True), encoding="utf-8"
    )
    shutil.copy(SITE_DIR / site["county"]["outline"], site_dir)
    env = {
        "FIREWATCH_WECOM_WEBHOOK_URL": robot.url,
        "FIREWATCH_NOTICE_STORM_WINDOW_S": "0",
        "FIREWATCH_MQTT_URL": broker.url,
    }
    running = Stack(
        tmp_path_factory.mktemp("stack"), env, args=("--site", str(site_dir / "county.yaml"))
    )
    running.start()
    running.wait_until(
        lambda: all(d["state"] == "normal" for d in running.get("/api/devices")),
        30,
        "every demo device to report normal",
    )
    yield running
    if running.process is not None:
        running.stop()


@pytest.fixture(scope="module")
def mqtt(broker):
    client = paho.mqtt.client.Client(
        paho.mqtt.client.CallbackAPIVersion.VERSION2, client_id="hostile"
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def send(mqtt: paho.mqtt.client.Client, topic: str, payload: bytes | str) -> None:
    info = mqtt.publish(topic, payload, qos=1)
    info.wait_for_publish(30)


def forged_batch(
    device_id: str = "rc-gas-1", institution_id: str = "rongcheng-eldercare", **changes: Any
) -> dict[str, Any]:
    fields = dict(
        gateway_id=HOSTILE_GW,
        incarnation=FORGED_INCARNATION,
        seq=next(_seq),
        device_id=device_id,
        institution_id=institution_id,
        kind="gas_detector",
        ts=datetime.now(UTC),
        profile="generic-gas-lel",
        readings={"gas_concentration": 0.5},
        flags={"sensor_fault": False},
    )
    return json.loads(ReadingBatch(**fields).to_bytes()) | changes


def readings_of(device_id: str) -> str:
    return readings_topic(HOSTILE_GW, device_id)


def control_notices(robot: WeComServer) -> list[str]:
    return [
        r.body["markdown"]["content"]
        for r in robot.robot.accepted
        if "一键报警" in r.body["markdown"]["content"]
        and CONTROL_INSTITUTION in r.body["markdown"]["content"]
        and "【恢复】" not in r.body["markdown"]["content"]
    ]


def assert_a_press_elsewhere_still_alarms(stack: Stack, control_robot: WeComServer) -> None:
    """The control: a press at Dingqiao becomes a new alarm and a notice at its robot, and the
    alarm is then taken through its life (acknowledged, released, closed) for the next one."""
    assert stack.process is not None and stack.process.poll() is None, "the stack exited"
    seen = {a["id"] for a in stack.get("/api/alarms", device_id=CONTROL_BUTTON)}
    notices = len(control_notices(control_robot))
    scenario = f"/api/simulator/devices/{CONTROL_BUTTON}/scenario"
    stack.api.post(scenario, json={"scenario": "button-press"}).raise_for_status()
    stack.wait_until(
        lambda: len(control_notices(control_robot)) > notices,
        15,
        "the control press's notice at Dingqiao's robot",
    )
    [alarm] = [a for a in stack.get("/api/alarms", device_id=CONTROL_BUTTON) if a["id"] not in seen]
    assert alarm["rule"] == "one_key_alarm"
    stack.api.post(
        f"/api/alarms/{alarm['id']}/acknowledge", json={"classification": "test", "note": "演练"}
    ).raise_for_status()
    stack.api.post(scenario, json={"scenario": "normal"}).raise_for_status()
    stack.wait_until(
        lambda: (
            next(
                a
                for a in stack.get("/api/alarms", device_id=CONTROL_BUTTON)
                if a["id"] == alarm["id"]
            )["status"]
            == "cleared"
        ),
        15,
        "the control alarm to clear",
    )
    stack.api.post(f"/api/alarms/{alarm['id']}/close", json={"note": "演练结束"}).raise_for_status()
    assert stack.get("/api/health")["status"] in ("ok", "degraded")


# --- device uplinks (what a button or sensor on MQTT says to its gateway) -------------------

HOSTILE_UPLINKS: list[bytes] = [
    b'{"alarm": 0, "bat": 1' + b"0" * 400 + b', "tamper": 0}',  # OverflowError in isfinite
    b'{"alarm": 0, "bat": 1.7976931348623157e308, "tamper": 0}',
    b'{"alarm": 0, "bat": 1e400, "tamper": 0}',  # Python's json: inf
    b'{"alarm": 0, "bat": NaN, "tamper": 0}',
    b'{"alarm": 0, "bat": -0.0, "tamper": 0}',
    b'{"alarm": 0, "bat": 5e-324, "tamper": 0}',
    b'{"alarm": 1, "alarm": 0, "bat": 3.6}',  # duplicate keys: the last wins
    b'{"alarm": 0, "bat": 3.6, "\\ud800": 1}',  # a lone surrogate
    "\ufeff".encode() + b'{"alarm": 0, "bat": 3.6}',  # a UTF-8 BOM
    b'{"alarm": 1.0, "bat": 3.6}',
    b'{"alarm": true, "bat": 3.6}',
    b'{"alarm": 7, "bat": 3.6}',
    b'{"alarm": "1", "bat": [3.6]}',
    json.dumps({"alarm": 0, "bat": 3.6, **{f"k{i}": i for i in range(10_000)}}).encode(),
    b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser's recursion
    b'{"alarm": 0, "bat": 3.6, "pad": "' + b"x" * (8 * 1024 * 1024) + b'"}',  # 8 MiB
    b"\xff\xfe not utf-8",
    b"",
]


def test_hostile_device_uplinks_leave_the_gateway_polling_and_alarming(stack, mqtt, control_robot):
    for payload in HOSTILE_UPLINKS:
        send(mqtt, "devices/rc-btn-1/up", payload)
    # the gateway that took them still polls its Modbus devices
    seen = stack.device("rc-gas-1")["last_seen"]
    stack.wait_until(
        lambda: stack.device("rc-gas-1")["last_seen"] != seen,
        10,
        "Rongcheng's gas detector to be polled again",
    )
    assert_a_press_elsewhere_still_alarms(stack, control_robot)


def test_a_flood_of_presses_from_one_button_is_one_alarm(stack, mqtt, control_robot):
    for i in range(1000):
        send(mqtt, "devices/cw-btn-1/up", b'{"alarm": %d, "bat": 3.6}' % (i % 2))
    send(mqtt, "devices/cw-btn-1/up", b'{"alarm": 0, "bat": 3.6}')
    assert_a_press_elsewhere_still_alarms(stack, control_robot)


# --- gateway messages (what a gateway, or whoever has its credentials, says) ----------------


def test_far_past_and_far_future_times_are_refused_and_alarms_go_on(stack, mqtt, control_robot):
    for ts in [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        (datetime.now(UTC) - timedelta(days=3650)).isoformat(),
    ]:
        send(mqtt, readings_of("rc-gas-1"), json.dumps(forged_batch(ts=ts)))
        event = json.loads(
            DeviceEvent(
                gateway_id=HOSTILE_GW,
                incarnation=FORGED_INCARNATION,
                seq=next(_seq),
                device_id="rc-efm-1",
                institution_id="rongcheng-eldercare",
                kind="electrical_fire_monitor",
                ts=datetime.now(UTC),
                event="offline",
                reason="forged",
            ).to_bytes()
        ) | {"ts": ts}
        send(mqtt, f"firewatch/v1/events/{HOSTILE_GW}/rc-efm-1", json.dumps(event))
    assert_a_press_elsewhere_still_alarms(stack, control_robot)
    # a reading stamped an hour ahead does not blind the device: its real readings still count
    # (an idle detector reports once a minute: a leak has it report at once)
    seen = stack.device("rc-gas-1")["last_seen"]
    assert stack.simulate("rc-gas-1", "gas-leak").returncode == 0
    try:
        stack.wait_until(
            lambda: stack.device("rc-gas-1")["last_seen"] != seen,
            10,
            "Rongcheng's gas detector's real readings to be taken again",
        )
    finally:
        assert stack.simulate("rc-gas-1", "normal").returncode == 0
    assert datetime.fromisoformat(stack.device("rc-gas-1")["last_seen"]) < datetime.now(
        UTC
    ) + timedelta(minutes=5)


def test_a_gateway_cannot_raise_an_alarm_at_another_institution(stack, mqtt, control_robot):
    dead_before = stack.get("/api/dead-letters")["total"]
    send(
        mqtt,
        readings_of("dq-gas-1"),
        json.dumps(
            forged_batch("dq-gas-1", "dingqiao-eldercare", readings={"gas_concentration": 90.0})
        ),
    )
    stack.wait_until(
        lambda: stack.get("/api/dead-letters")["total"] > dead_before,
        15,
        "the forged reading to be dead-lettered",
    )
    letters = stack.get("/api/dead-letters")["items"]
    assert any("dq-gas-1" in d["reason"] for d in letters), letters[:3]
    assert not [
        a for a in stack.get("/api/alarms", device_id="dq-gas-1") if a["rule"].startswith("gas")
    ]
    assert_a_press_elsewhere_still_alarms(stack, control_robot)


def test_hostile_gateway_payloads_are_dead_lettered_and_alarms_go_on(stack, mqtt, control_robot):
    payloads = [
        forged_batch(readings={"gas_concentration": 1.7976931348623157e308}),
        forged_batch(readings={"gas_concentration": -1.7976931348623157e308}),
        forged_batch(readings={"gas_concentration": 5e-324}),
        forged_batch(seq=2**63 - 1),
        forged_batch(seq=2**63),
        forged_batch(seq=10**400),
        forged_batch("no-such-device", "rongcheng-eldercare"),
        forged_batch(readings={f"f{'x' * 62}{i}": float(i) for i in range(10)}),
        forged_batch(flags={"sensor_fault": 1}),
        forged_batch(profile="=cmd|' /C calc'!A0"),
    ]
    for body in payloads:
        send(mqtt, readings_of(body["device_id"]), json.dumps(body))
    send(
        mqtt,
        readings_of("rc-gas-1"),
        b'{"schema": "firewatch.readings/1", "readings": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    )
    send(mqtt, readings_of("rc-gas-1"), b'{"pad": "' + b"x" * (8 * 1024 * 1024) + b'"}')
    beat = json.loads(
        GatewayHeartbeat(
            gateway_id=HOSTILE_GW,
            incarnation=FORGED_INCARNATION,
            seq=next(_seq),
            ts=datetime.now(UTC),
        ).to_bytes()
    )
    send(
        mqtt,
        f"firewatch/v1/heartbeats/{HOSTILE_GW}",
        json.dumps(beat | {"ts": "9999-12-31T23:59:59Z", "outbox": 10**30}),
    )
    send(
        mqtt, "firewatch/v1/heartbeats/gw-nowhere", json.dumps(beat | {"gateway_id": "gw-nowhere"})
    )
    assert_a_press_elsewhere_still_alarms(stack, control_robot)
    letters = stack.get("/api/dead-letters", limit=1000)["items"]
    assert all(len(d["payload"]) <= 1024 * 1024 for d in letters), "a dead letter kept 8 MiB"


timestamps = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e3, max_value=1e3),
    st.integers(min_value=-(10**30), max_value=10**30),
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ts=timestamps,
    gas=numbers,
    seq=st.integers(min_value=1, max_value=2**64),
    bat=st.one_of(numbers, st.booleans(), st.none()),
    alarm=st.one_of(st.integers(min_value=-2, max_value=2), st.floats(), st.booleans()),
)
def test_generated_values_never_stop_the_stack(stack, mqtt, ts, gas, seq, bat, alarm):
    send(
        mqtt,
        readings_of("rc-gas-1"),
        json.dumps(forged_batch(ts=ts.isoformat(), seq=seq, readings={"gas_concentration": gas})),
    )
    send(mqtt, "devices/rc-btn-1/up", json.dumps({"alarm": alarm, "bat": bat}))
    assert stack.process is not None and stack.process.poll() is None, "the stack exited"


def test_after_generated_values_a_press_elsewhere_still_alarms(stack, control_robot):
    assert_a_press_elsewhere_still_alarms(stack, control_robot)


# --- the API's forms (what a person, or a script with a person's token, sends) --------------


def test_hostile_ledger_entries_answer_without_a_server_error(stack, control_robot):
    base = {
        "institution_id": "rongcheng-eldercare",
        "category": "gas",
        "source": "self-check",
        "description": "厨房燃气软管老化",
        "responsible_person": "李明",
        "responsible_phone": "13800000102",
        "deadline": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    }
    hostile = [
        {"deadline": "9999-12-31T23:59:59Z"},
        {"deadline": "0001-01-01T00:00:00Z"},
        {"deadline": "2026-12-01T00:00:00"},  # no zone, and before filing
        {"description": "厨房\u0000燃气"},
        {"description": "\U0001f525" * 2000},
        {"description": "\u202egas leak\u200b"},
        {"responsible_phone": "-----"},
        {"institution_id": "x" * 10_000},
    ]
    answers = [stack.api.post("/api/hazards", json=base | change) for change in hostile]
    assert [a.status_code for a in answers if a.status_code >= 500] == [], [
        (a.status_code, a.text[:200]) for a in answers
    ]
    formula = stack.api.post(
        "/api/hazards",
        json=base
        | {
            "description": '=HYPERLINK("http://evil.example","点击")',
            "responsible_person": "@SUM(1+1)",
        },
    )
    assert formula.status_code == 201, formula.text
    export = stack.api.get("/api/hazards/export.xlsx")
    assert export.status_code == 200, export.text[:300]
    sheet = openpyxl.load_workbook(BytesIO(export.content)).active
    cells = [c for row in sheet.iter_rows() for c in row if isinstance(c.value, str)]
    assert any(c.value.startswith("=HYPERLINK") for c in cells)
    assert all(c.data_type != "f" for c in cells), "a ledger cell became a formula"
    for query in [
        {"since": "0001-01-01", "until": "9999-12-31"},
        {"since": "9999-12-31T23:59:59+14:00"},
        {"by": "nothing"},
    ]:
        answer = stack.api.get("/api/hazards/statistics", params=query)
        assert answer.status_code < 500, (query, answer.text[:200])
    for path, body in [
        (f"/api/alarms/{2**63}/acknowledge", {"note": "x"}),
        ("/api/alarms/1/acknowledge", {"note": "\U0001f525" * 500}),
        (f"/api/hazards/{10**30}/transitions", {"action": "verify"}),
    ]:
        answer = stack.api.post(path, json=body)
        assert answer.status_code < 500, (path, answer.text[:200])
    # the escalation sweep (every 15 s) has met whatever of them was filed by now
    time.sleep(16)
    assert_a_press_elsewhere_still_alarms(stack, control_robot)
