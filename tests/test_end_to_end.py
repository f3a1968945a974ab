"""The whole chain, as a user meets it: `firewatch up`, a simulator scenario, and what follows.

Each scenario runs against a stack on the embedded broker (amqtt) and on a real Mosquitto.
Devices are real Modbus TCP servers (simulators) polled by the gateway, and an MQTT button;
notices go to a local WeChat Work robot endpoint that checks requests as the provider does.
"""

from __future__ import annotations

import signal
import time

import paho.mqtt.publish
import pytest

from firewatch.bench.servers import Mosquitto
from tests.support.stack import Stack
from tests.support.wecom import WeComServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=["embedded", "mosquitto"])
def broker_kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def robot(broker_kind):
    """One WeChat Work robot endpoint per stack, so each stack's notices are counted alone."""
    with WeComServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(broker_kind, robot, tmp_path_factory):
    # each scenario here waits for its own notice; folding them into storm summaries is
    # test_storm.py's subject, so storm control is off
    env = {"FIREWATCH_WECOM_WEBHOOK_URL": robot.url, "FIREWATCH_NOTICE_STORM_WINDOW_S": "0"}
    broker = None
    if broker_kind == "mosquitto":
        broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
        broker.start()
        env["FIREWATCH_MQTT_URL"] = broker.url
    running = Stack(tmp_path_factory.mktemp(f"stack-{broker_kind}"), env)
    running.start()
    running.wait_until(
        lambda: all(d["state"] == "normal" for d in running.get("/api/devices")),
        30,
        "every demo device to report normal",
    )
    yield running
    if running.process is not None:
        running.stop()
    if broker is not None:
        broker.stop()


def alarms_of(stack: Stack, device_id: str) -> list[dict]:
    return [a for a in stack.get("/api/alarms") if a["device_id"] == device_id]


def notices_naming(robot: WeComServer, *words: str) -> list[dict]:
    return [
        r.body
        for r in robot.robot.accepted
        if all(w in r.body["markdown"]["content"] for w in words)
    ]


def test_the_map_lists_every_demo_institution_and_device(stack):
    institutions = stack.get("/api/institutions")
    devices = stack.get("/api/devices")
    assert {i["type"] for i in institutions} == {"elderly_care", "child_welfare"}
    assert len(devices) == 9
    assert {d["kind"] for d in devices} == {
        "electrical_fire_monitor",
        "gas_detector",
        "one_key_alarm",
    }
    efm = stack.device("rc-efm-1")
    assert 0 < efm["last_readings"]["residual_current"] < 300
    assert 20 < efm["last_readings"]["cable_temp_1"] < 45
    page = stack.api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_a_button_press_becomes_an_alarm_a_ledger_entry_and_a_wecom_notice(stack, robot):
    pressed_at = time.time()
    result = stack.simulate("rc-btn-1", "button-press")
    assert result.returncode == 0, result.stderr

    stack.wait_until(
        lambda: notices_naming(robot, "蓉城镇敬老院（演示）", "一键报警", "一楼值班室"),
        15,
        "the one-key alarm notice at the WeChat Work robot",
    )
    [notice] = [r for r in robot.robot.accepted if "一键报警" in r.body["markdown"]["content"]]
    # informational (speed is measured by benchmarks): includes starting the CLI process
    print(f"\nbutton press command -> WeChat Work notice: {notice.at - pressed_at:.2f} s")
    [alarm] = alarms_of(stack, "rc-btn-1")
    assert (alarm["rule"], alarm["status"], alarm["severity"]) == (
        "one_key_alarm",
        "active",
        "alarm",
    )
    [entry] = [h for h in stack.get("/api/hazards") if h["device_id"] == "rc-btn-1"]
    assert entry["source"] == "iot"
    assert entry["responsible_unit"] == "蓉城镇敬老院（演示）"
    assert entry["responsible_person"] and entry["responsible_phone"] and entry["deadline"]
    assert stack.device("rc-btn-1")["state"] == "alarm"


def test_a_gas_leak_is_caught_by_modbus_polling_as_one_alarm_rising_from_low_to_high(stack, robot):
    assert stack.simulate("dq-gas-1", "gas-leak").returncode == 0
    stack.wait_until(
        lambda: notices_naming(robot, "【升级】丁桥镇敬老院（演示）", "低限报警→高限报警"),
        30,
        "the notice of the rise to the high limit",
    )
    [alarm] = alarms_of(stack, "dq-gas-1")
    assert (alarm["rule"], alarm["title"]) == ("gas_high", "可燃气体浓度高限报警")
    assert notices_naming(robot, "【预警】丁桥镇敬老院（演示）", "可燃气体浓度低限报警")
    [entry] = [h for h in stack.get("/api/hazards") if h["device_id"] == "dq-gas-1"]
    assert "可燃气体浓度高限报警" in entry["description"]
    assert stack.device("dq-gas-1")["last_readings"]["gas_concentration"] >= 50


def test_an_overheating_cable_is_caught_by_modbus_polling(stack, robot):
    assert stack.simulate("cw-efm-1", "overheat").returncode == 0
    stack.wait_until(
        lambda: any(a["rule"] == "cable_temp_1_high" for a in alarms_of(stack, "cw-efm-1")),
        20,
        "overheat alarm",
    )
    stack.wait_until(
        lambda: notices_naming(robot, "县儿童福利院（演示）", "1路线缆温度过高"),
        15,
        "the overheat notice",
    )
    [entry] = [h for h in stack.get("/api/hazards") if h["device_id"] == "cw-efm-1"]
    assert entry["category"] == "electrical"


def test_back_to_normal_clears_the_alarm_and_sends_a_recovery_notice(stack, robot):
    assert stack.simulate("rc-efm-1", "residual-current-spike").returncode == 0
    stack.wait_until(lambda: alarms_of(stack, "rc-efm-1"), 20, "residual current alarm")
    assert stack.simulate("rc-efm-1", "normal").returncode == 0
    stack.wait_until(
        lambda: alarms_of(stack, "rc-efm-1")[0]["status"] == "cleared", 20, "the alarm to clear"
    )
    stack.wait_until(
        lambda: notices_naming(robot, "【恢复】", "剩余电流超限"), 15, "recovery notice"
    )
    assert stack.device("rc-efm-1")["state"] == "normal"


def test_a_device_that_stops_answering_turns_offline_with_the_reason(stack):
    assert stack.simulate("dq-efm-1", "offline").returncode == 0
    stack.wait_until(lambda: stack.device("dq-efm-1")["state"] == "offline", 20, "offline state")
    assert stack.device("dq-efm-1")["state_reason"] == "设备离线"
    assert stack.simulate("dq-efm-1", "normal").returncode == 0
    stack.wait_until(lambda: stack.device("dq-efm-1")["state"] == "normal", 20, "back online")


def test_an_unknown_scenario_is_refused_with_the_valid_ones(stack):
    result = stack.simulate("rc-gas-1", "earthquake")
    assert result.returncode == 1
    assert "earthquake" in result.stderr and "gas-leak" in result.stderr


def test_a_broken_payload_goes_to_the_dead_letter_store_with_the_reason(stack):
    port = (
        int(stack.env["FIREWATCH_MQTT_URL"].rsplit(":", 1)[1])
        if "FIREWATCH_MQTT_URL" in stack.env
        else int(stack.env["FIREWATCH_MQTT_EMBEDDED_PORT"])
    )
    paho.mqtt.publish.single(
        "firewatch/v1/readings/gw-rongcheng/rc-gas-1",
        b'{"seq": "x"}',
        qos=1,
        hostname="127.0.0.1",
        port=port,
    )
    stack.wait_until(lambda: stack.get("/api/dead-letters")["total"] >= 2, 15, "dead letters")
    letters = stack.get("/api/dead-letters")["items"]
    assert {d["consumer"] for d in letters} == {"alerts", "ingest"}
    assert all("does not match the v1 contract" in d["reason"] for d in letters)
    assert letters[0]["payload"] == '{"seq": "x"}'
    assert stack.get("/api/health")["status"] == "ok"


def test_a_restarted_stack_keeps_its_alarms_and_repeats_no_notice(stack, robot):
    alarms_before = {a["id"]: a["rule"] for a in stack.get("/api/alarms")}
    assert stack.stop(signal.SIGTERM) == 0
    notices_before = len(robot.robot.accepted)
    stack.start()
    stack.wait_until(lambda: stack.device("rc-efm-1")["last_seen"] is not None, 20, "polling")
    assert {a["id"]: a["rule"] for a in stack.get("/api/alarms")} == alarms_before
    # the simulators restart in their normal state, so the alarms clear; none is raised twice
    stack.wait_until(
        lambda: all(a["status"] == "cleared" for a in stack.get("/api/alarms")),
        30,
        "every alarm to clear",
    )
    assert not [
        b
        for b in robot.robot.accepted[notices_before:]
        if "【报警】" in b.body["markdown"]["content"]
    ]
    assert robot.robot.rejected == []
