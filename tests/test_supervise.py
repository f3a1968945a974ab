"""A supervised task that raises is restarted, and the tasks beside it run on."""

from __future__ import annotations

import asyncio
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firewatch.supervise import Backoff, Supervisor, supervise
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(120)


async def test_a_task_that_raises_is_restarted_and_its_neighbour_runs_on():
    supervisor = Supervisor(Backoff(first_s=0.01, max_s=0.02, healthy_after_s=3600))
    starts = 0
    third_start = asyncio.Event()
    neighbour_ticks = 0

    async def flaky() -> None:
        nonlocal starts
        starts += 1
        if starts < 3:
            raise OverflowError(f"date value out of range (start {starts})")
        third_start.set()
        await asyncio.Event().wait()

    async def neighbour() -> None:
        nonlocal neighbour_ticks
        while True:
            neighbour_ticks += 1
            await asyncio.sleep(0)

    async def nested() -> None:  # a service's own tasks join the process's supervisor
        await supervise({"inner": flaky_inner})

    inner_started = asyncio.Event()

    async def flaky_inner() -> None:
        inner_started.set()
        await asyncio.Event().wait()

    running = asyncio.create_task(supervisor.run(
        {"flaky": flaky, "neighbour": neighbour, "service": nested}))
    await third_start.wait()
    await inner_started.wait()
    status = supervisor.status()
    assert status["tasks"]["flaky"] == {
        "state": "running", "restarts": 2,
        "last_error": "OverflowError: date value out of range (start 2)"}
    assert status["tasks"]["neighbour"]["restarts"] == 0
    assert status["tasks"]["service/inner"]["state"] == "running"
    # failed within a healthy spell: the process says so
    assert status["problems"] == [
        "task flaky restarting (2 restarts, last: OverflowError: date value out of range "
        "(start 2))"]
    assert neighbour_ticks > 0
    running.cancel()  # Ctrl-C: every task stops
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_task_that_returns_is_done_and_not_restarted():
    supervisor = Supervisor()
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    await supervisor.run({"once": once})
    assert calls == 1
    assert supervisor.status() == {
        "tasks": {"once": {"state": "done", "restarts": 0, "last_error": None}}, "problems": []}


def test_a_task_that_raises_in_firewatch_up_is_restarted_and_the_alarms_still_come(tmp_path):
    """A ledger entry whose deadline is in year 9999 makes the escalation sweep overflow.  The
    escalation task is restarted, health says so, and a button press is still an alarm."""
    stack = Stack(tmp_path)
    stack.start()
    try:
        reply = stack.api.post("/api/hazards", json={
            "institution_id": "rongcheng-eldercare", "category": "fire_facilities",
            "source": "self-check", "description": "消防通道堆放杂物",
            "responsible_person": "张三", "responsible_phone": "13800000000",
            "deadline": "9999-12-31T00:00:00+00:00"})
        assert reply.status_code == 201, reply.text
        stack.wait_until(lambda: any(p.startswith("task escalation restarting") for p in
                                     stack.get("/api/health")["problems"]),
                         60, "the escalation task to fail and be restarted")
        assert stack.get("/api/health")["status"] == "degraded"
        restarts = {(s.labels["task"], s.value) for family in text_string_to_metric_families(
            stack.api.get("/metrics").text) for s in family.samples
            if s.name == "firewatch_task_restarts_total"}
        assert any(task == "escalation" and count >= 1 for task, count in restarts)
        assert stack.simulate("dq-btn-1", "button-press").returncode == 0
        stack.wait_until(lambda: any(a["device_id"] == "dq-btn-1"
                                     for a in stack.get("/api/alarms")), 30, "the press's alarm")
    finally:
        assert stack.stop(signal.SIGTERM) == 0
