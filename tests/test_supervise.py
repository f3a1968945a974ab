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

    running = asyncio.create_task(
        supervisor.run({"flaky": flaky, "neighbour": neighbour, "service": nested})
    )
    await third_start.wait()
    await inner_started.wait()
    status = supervisor.status()
    assert status["tasks"]["flaky"] == {
        "state": "running",
        "restarts": 2,
        "last_error": "OverflowError: date value out of range (start 2)",
    }
    assert status["tasks"]["neighbour"]["restarts"] == 0
    assert status["tasks"]["service/inner"]["state"] == "running"
    # failed within a healthy spell: the process says so
    assert status["problems"] == [
        "task flaky restarting (2 restarts, last: OverflowError: date value out of range (start 2))"
    ]
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
        "tasks": {"once": {"state": "done", "restarts": 0, "last_error": None}},
        "problems": [],
    }


def test_a_gateway_whose_outbox_is_unreadable_is_restarted_and_firewatch_up_runs_on(tmp_path):
    """One gateway's outbox file is not a database (a corrupt SD card): that gateway's task
    fails at every start.  It is restarted with backoff, health and /metrics say so, and a gas
    leak at another institution is still an alarm."""
    (tmp_path / "outbox-gw-rongcheng.db").write_bytes(b"not a database, " * 512)
    stack = Stack(tmp_path)
    stack.start(status="degraded")
    try:
        failing = "task gateway/gateway:gw-rongcheng restarting"
        stack.wait_until(
            lambda: any(r.startswith(failing) for r in stack.get("/api/health")["reasons"]),
            90,  # the gateway process starts once alerts and ingest have subscribed
            "the gateway's task to fail and be restarted",
        )
        restarts = {
            (s.labels["task"], s.value)
            for family in text_string_to_metric_families(stack.api.get("/metrics").text)
            for s in family.samples
            if s.name == "firewatch_task_restarts_total"
        }
        assert any(task == "gateway:gw-rongcheng" and count >= 1 for task, count in restarts)
        assert stack.simulate("dq-gas-1", "gas-leak").returncode == 0
        stack.wait_until(
            lambda: any(a["device_id"] == "dq-gas-1" for a in stack.get("/api/alarms")),
            30,
            "the leak's alarm",
        )
    finally:
        assert stack.stop(signal.SIGTERM) == 0
