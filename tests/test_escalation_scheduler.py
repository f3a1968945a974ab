"""The real APScheduler (AsyncIOScheduler) driving escalation, its jobs rebuilt from the database.

Timings are scaled to fractions of a second (a policy like a site file's, in minutes and days
of 0.01 and 1e-5), so steps fall due while the test watches.  Notices go through the real
notifier to a local WeChat Work robot that checks requests as the provider documents them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.channels.wecom_robot import WeComRobot as WeComRobotChannel
from alerts.escalation_scheduler import EscalationScheduler
from alerts.escalator import Escalator
from alerts.ledger import Source
from alerts.notifier import Fallback, Notifier
from alerts.outbox import Routing, recipients_of
from firewatch import db
from firewatch.contract import utc_now
from firewatch.escalation_policy import AlarmTiming, EscalationPolicy, LedgerTiming
from tests.support.ledger import County, demo_county
from tests.support.wecom import WeComServer

#: 0.6 s to the head, 0.6 s more to the bureau; a re-check 1.5 s after sign-off
FAST = EscalationPolicy(
    alarm=AlarmTiming(head_after_min=0.01, bureau_after_min=0.01),
    alarm_by_category={},
    ledger=LedgerTiming(remind_every_hours=1, recheck_after_days=1.5 / 86400),
    ledger_by_category={},
)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until ``check`` holds, polled every 20 ms."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.asynccontextmanager
async def scheduler(county: County, webhook: str, sweep_every_s: float):
    routing = Routing(
        "wecom_robot", None, frozenset({"wecom_robot"}), recipients_of(county.site, webhook)
    )
    escalator = Escalator(
        county.site,
        county.profiles,
        county.sessions,
        county.writer,
        routing,
        default_webhook=webhook,
        notices_waiting=asyncio.Event(),
        policy=FAST,
    )
    running = EscalationScheduler(escalator, sweep_every_s=sweep_every_s)
    task = asyncio.create_task(running.run())
    try:
        await eventually(lambda: _started(running), 5, "the scheduler to start")
        yield running
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _started(running: EscalationScheduler) -> bool:
    return running.scheduler is not None and running.scheduler.running


async def labels(county: County) -> list[str]:
    return [n.body["label"] for n in await county.rows(db.Notice)]


@pytest.fixture
async def county(tmp_path: Path):
    async with demo_county(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as county:
        yield county


async def test_the_head_then_the_bureau_get_an_unacknowledged_alarm_on_time(county):
    with WeComServer() as robot:
        routing = Routing(
            "wecom_robot", None, frozenset({"wecom_robot"}), recipients_of(county.site, robot.url)
        )
        waiting = asyncio.Event()
        notifier = Notifier(
            county.sessions,
            county.writer,
            waiting,
            {"wecom_robot": WeComRobotChannel()},
            routing,
            Fallback(3, 60),
        )
        sending = asyncio.create_task(notifier.run())
        raised = utc_now()
        alarm = await county.raise_alarm("rc-btn-1", "one_key_alarm", raised)
        # sweeping once a minute: what fires the steps on time is each step's scheduled job
        async with scheduler(county, robot.url, 60):
            await eventually(lambda: _sent(county, 2), 20, "two escalations sent")
        sending.cancel()

    to_head, to_bureau = await county.rows(db.Notice)
    assert (to_head.alarm_id, to_head.status, to_bureau.status) == (alarm, "sent", "sent")
    # on time: not before the step is due, and long before the once-a-minute sweep would run
    assert timedelta(seconds=0.6) <= to_head.created_at - raised < timedelta(seconds=30)
    assert timedelta(seconds=1.2) <= to_bureau.created_at - raised < timedelta(seconds=30)
    first, second = (r.body["markdown"]["content"] for r in robot.robot.accepted)
    assert "【报警升级】蓉城镇敬老院（演示）：一键报警（人工火警）" in first and "王建国" in first
    assert "【提级督办】" in second and "青阳县民政局（演示）" in second
    assert robot.robot.rejected == []


async def _sent(county: County, count: int) -> bool:
    return [n.status for n in await county.rows(db.Notice)] == ["sent"] * count


async def test_acknowledging_between_the_steps_cancels_the_bureau_step(county):
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", utc_now())
    async with scheduler(county, "", 0.1) as running:
        await eventually(lambda: _labels_are(county, ["报警升级"]), 5, "the head's notice")
        assert running.scheduler.get_job(f"alarm:{alarm}") is not None  # the bureau step
        await county.acknowledge(alarm)
        await eventually(lambda: _no_job(running, f"alarm:{alarm}"), 5, "the job's removal")
        await asyncio.sleep(1.0)  # past the bureau step's time
    assert await labels(county) == ["报警升级"]


async def _labels_are(county: County, expected: list[str]) -> bool:
    return await labels(county) == expected


async def _no_job(running: EscalationScheduler, job_id: str) -> bool:
    return running.scheduler.get_job(job_id) is None


async def test_a_scheduled_recheck_survives_a_restart_of_the_scheduler(database_url):
    async with demo_county(database_url) as county:
        entry = await county.file(utc_now() + timedelta(days=1))
        await county.move(entry, "start", "submit", "sign-off")
        [signed_off] = await county.rows(db.HazardEvent, hazard_id=entry, action="sign-off")
        due = signed_off.at + timedelta(seconds=1.5)

        async with scheduler(county, "", 60) as first:
            await eventually(lambda: _has_job(first, f"hazard:{entry}"), 5, "the re-check job")
        assert utc_now() < due and await county.rows(db.Notice) == []

        async with scheduler(county, "", 60):  # the job is rebuilt from the ledger
            await eventually(lambda: _labels_are(county, ["回头看"]), 5, "the re-check notice")
            await asyncio.sleep(0.3)
        [notice] = await county.rows(db.Notice)
        assert notice.created_at >= due


async def _has_job(running: EscalationScheduler, job_id: str) -> bool:
    return running.scheduler.get_job(job_id) is not None


async def test_a_ledger_entry_due_in_9999_neither_ends_the_scheduler_nor_holds_up_an_alarm(county):
    self_check = await county.file(
        utc_now() + timedelta(days=1), source=Source.SELF_CHECK, description="自查：灭火器年检"
    )
    await county.set_deadline(self_check, datetime(9999, 12, 31, 23, tzinfo=UTC))
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", utc_now())
    async with scheduler(county, "", 0.1) as running:
        await eventually(
            lambda: _labels_are(county, ["报警升级", "提级督办"]), 10, "the alarm's two steps"
        )
        await asyncio.sleep(0.3)  # sweeps after them
        assert running.scheduler.running
        assert await _has_job(running, f"hazard:{self_check}")  # flagged in year 9999
        assert running.escalator.set_aside == {}
    assert {n.alarm_id for n in await county.rows(db.Notice)} == {alarm}


async def test_an_alarm_whose_step_raises_in_its_job_is_set_aside_and_escalated_once_mended(
    county,
):
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", utc_now())
    async with scheduler(county, "", 60) as running:  # no sweep comes before the job fires
        await eventually(lambda: _has_job(running, f"alarm:{alarm}"), 5, "the head step's job")
        await county.set_severity(alarm, "critical")  # by hand, or by another version
        await eventually(lambda: _set_aside(running, f"alarm:{alarm}"), 5, "the job's failure")
        assert running.scheduler.running and running.escalator.errors == {"ValueError": 1}
        assert await county.rows(db.Notice) == []

        await county.set_severity(alarm, "alarm")
        await running.sweep()
        assert await labels(county) == ["报警升级"]
        assert running.escalator.set_aside == {}


async def _set_aside(running: EscalationScheduler, key: str) -> bool:
    return key in running.escalator.set_aside
