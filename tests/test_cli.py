"""The `firewatch` command as a user runs it: what was asked for on stdout, errors that say what
was wrong and what to do, progress of long runs on stderr."""

from __future__ import annotations

import json

import pytest

from firewatch.mqtt import free_port
from tests.support.cli import firewatch
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("cli-stack"))
    running.start()
    yield running
    running.stop()


def test_simulate_list_prints_the_devices_and_no_request_logs(stack):
    done = firewatch("simulate", "list", "--port", str(stack.port))

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert [line.split()[0] for line in done.stdout.splitlines()] == [
        d["device_id"] for d in stack.get("/api/simulator/devices")
    ]


def test_a_press_simulated_in_test_mode_is_recorded_as_a_test_and_notifies_nobody(stack):
    done = firewatch(
        "simulate", "trigger", "cw-btn-1", "button-press", "--test-mode", "--minutes", "5",
        "--port", str(stack.port),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "cw-btn-1: test mode for 5 min" in done.stdout
    stack.wait_until(
        lambda: stack.get("/api/alarms", device_id="cw-btn-1"), 20, "the press to be recorded"
    )
    [alarm] = stack.get("/api/alarms", device_id="cw-btn-1")
    assert (alarm["rule"], alarm["mode"]) == ("one_key_alarm", "test")
    assert [n for n in stack.get("/api/notices") if n["alarm_id"] == alarm["id"]] == []
    assert stack.device("cw-btn-1")["state"] == "test"
    [started] = stack.get("/api/devices/cw-btn-1/mode-events")
    assert (started["action"], started["mode"], started["actor"]) == ("start", "test", "tester")


def test_simulate_names_the_valid_devices_when_given_an_unknown_one(stack):
    done = firewatch("simulate", "trigger", "rc-btn-9", "button-press", "--port", str(stack.port))

    assert done.returncode == 1 and done.stdout == ""
    assert "no simulated device 'rc-btn-9'" in done.stderr
    assert "rc-btn-1" in done.stderr and "HTTP Request" not in done.stderr


def test_simulate_with_a_wrong_password_says_the_login_was_refused(stack):
    done = firewatch(
        "simulate",
        "list",
        "--port",
        str(stack.port),
        env={"FIREWATCH_PASSWORD": "not-the-password"},
    )

    assert done.returncode == 1
    assert "login as 'tester' refused" in done.stderr and "FIREWATCH_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr


def test_simulate_with_no_stack_on_the_port_says_to_start_one_or_give_the_port():
    port = free_port()

    done = firewatch("simulate", "trigger", "rc-btn-1", "button-press", "--port", str(port))

    assert done.returncode == 1
    assert done.stderr.startswith(f"firewatch: no Firewatch answers at http://127.0.0.1:{port}")
    assert "`firewatch up`" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_benchmark_shows_its_stages_on_stderr_and_keeps_json_alone_on_stdout():
    done = firewatch(
        "bench", "gateway", "--devices", "4", "--seconds", "0.5", "--repeat", "1", "--json"
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting 4 simulated Modbus devices…" in done.stderr
    assert "measuring a bare pymodbus loop" in done.stderr
    assert "…" not in done.stdout and " INFO " not in done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["benchmark"] == "gateway"
