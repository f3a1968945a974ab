"""The notifier against fake providers: outages, restarts, fallback and rate limits.

Notices are stored through the outbox as the alert service stores them, in a real SQLite
database, and sent by a running notifier; each fake counts what arrived by notice number.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from alerts.channels.aliyun_sms import AliyunSms
from alerts.channels.tencent_sms import TencentSms
from alerts.channels.wecom_robot import WeComRobot
from alerts.notices import NoticeMessage
from alerts.notifier import Fallback, Notifier
from alerts.outbox import Outbox, Routing
from firewatch import db
from firewatch.contract import utc_now
from firewatch.metrics import FirewatchCollector, registry_for
from tests.support.aliyun_sms import AliyunSmsProvider
from tests.support.providers import ProviderServer, Trouble
from tests.support.tencent_sms import TencentSmsProvider
from tests.support.wecom import WeComServer

INSTITUTION = "rongcheng-eldercare"
PHONE = "13800000102"


@pytest.fixture
async def sessions(tmp_path):
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/fw.db")
    await db.create_schema(engine)
    yield db.sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def writer(sessions):
    async with db.Writer(sessions, "test-writer") as writer:
        yield writer


@pytest.fixture
def robot():
    with WeComServer() as server:
        yield server


@pytest.fixture
def sms():
    with ProviderServer(AliyunSmsProvider()) as server:
        yield server


def routing(robot: WeComServer, sms: ProviderServer | None = None) -> Routing:
    recipients = {INSTITUTION: {"wecom_robot": robot.url, "aliyun_sms": PHONE}}
    channels = {"wecom_robot", "aliyun_sms"} if sms else {"wecom_robot"}
    return Routing("wecom_robot", "aliyun_sms" if sms else None, frozenset(channels), recipients)


def notifier(
    sessions,
    writer: db.Writer,
    robot: WeComServer,
    sms: ProviderServer | None = None,
    fallback_after: int = 99,
) -> Notifier:
    channels = {"wecom_robot": WeComRobot()}
    if sms:
        channels["aliyun_sms"] = AliyunSms(
            "LTAI-test-id", "test-secret", "青阳民政", "SMS_000001", sms.base_url
        )
    return Notifier(
        sessions,
        writer,
        asyncio.Event(),
        channels,
        routing(robot, sms),
        Fallback(fallback_after, 3600),
        timeout_s=1,
        backoff_s=0.1,
    )


async def store(sessions, robot: WeComServer, count: int) -> list[int]:
    outbox = Outbox(routing(robot), storm_window_s=0)
    async with sessions.begin() as session:
        for n in range(count):
            await session.run_sync(
                outbox.add,
                INSTITUTION,
                None,
                NoticeMessage(
                    kind="raise",
                    institution="蓉城镇敬老院（演示）",
                    title=f"测试报警 {n}",
                    location="蓉城镇 · 厨房",
                    device="rc-gas-1",
                    time="2026-11-22 20:00:00",
                ),
            )
    return [n.id for n in await notices(sessions)][-count:]


async def notices(sessions) -> list[db.Notice]:
    async with sessions() as session:
        return list(await session.scalars(select(db.Notice).order_by(db.Notice.id)))


async def eventually(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def all_sent(sessions) -> bool:
    return all(n.status == "sent" for n in await notices(sessions))


async def all_failed_at_least(sessions, attempts: int) -> bool:
    return all(n.attempts >= attempts for n in await notices(sessions))


async def test_after_a_provider_outage_every_notice_arrives_exactly_once(sessions, writer, robot):
    ids = await store(sessions, robot, 3)
    robot.robot.trouble = Trouble.DOWN
    running = notifier(sessions, writer, robot)
    task = asyncio.create_task(running.run())
    try:
        await eventually(lambda: all_failed_at_least(sessions, 2), 15, "failed attempts")
        robot.robot.trouble = Trouble.TIMEOUT  # then it hangs instead of refusing
        robot.robot.hang_s = 1.2
        await eventually(lambda: all_failed_at_least(sessions, 3), 30, "timed-out attempts")
        robot.robot.trouble = Trouble.NONE
        await eventually(lambda: all_sent(sessions), 30, "every notice sent")
    finally:
        task.cancel()
    assert robot.robot.delivered() == {str(i): 1 for i in ids}
    assert running.failures >= 9


async def test_a_notice_sent_while_another_process_locks_the_database_is_recorded_once(
    sessions, writer, robot, tmp_path
):
    [notice_id] = await store(sessions, robot, 1)
    # another process's write transaction, held past SQLite's 5 s busy timeout: the status
    # write after the send fails, and is retried until the lock is gone
    locker = sqlite3.connect(tmp_path / "fw.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    task = asyncio.create_task(notifier(sessions, writer, robot).run())
    try:
        await eventually(lambda: _robot_got(robot, 1), 10, "the notice at the robot")
        await asyncio.sleep(6)
        assert not task.done()  # a status not stored yet is no reason to stop
        locker.rollback()
        await eventually(lambda: all_sent(sessions), 15, "the notice recorded as sent")
        await asyncio.sleep(1.5)  # rounds of the notifier that could have sent it again
    finally:
        locker.close()
        task.cancel()
    assert robot.robot.delivered() == {str(notice_id): 1}


async def _robot_got(robot: WeComServer, count: int) -> bool:
    return len(robot.robot.accepted) >= count


async def test_a_restarted_notifier_sends_what_is_pending_once_and_nothing_again(
    sessions, writer, robot
):
    before = await store(sessions, robot, 2)
    first = asyncio.create_task(notifier(sessions, writer, robot).run())
    await eventually(lambda: all_sent(sessions), 10, "the first notices sent")
    robot.robot.trouble = Trouble.DOWN
    during = await store(sessions, robot, 3)
    await eventually(lambda: all_failed_at_least_where(sessions, during, 1), 10, "failures")
    first.cancel()  # the notifier stops mid-outage

    robot.robot.trouble = Trouble.NONE
    second = asyncio.create_task(notifier(sessions, writer, robot).run())
    try:
        await eventually(lambda: all_sent(sessions), 15, "the pending notices sent")
        await asyncio.sleep(1.5)  # a round or two more: nothing is sent twice
    finally:
        second.cancel()
    assert robot.robot.delivered() == {str(i): 1 for i in before + during}


async def all_failed_at_least_where(sessions, ids: list[int], attempts: int) -> bool:
    return all(n.attempts >= attempts for n in await notices(sessions) if n.id in ids)


async def test_a_channel_that_keeps_failing_hands_its_notices_to_the_fallback_once(
    sessions, writer, robot, sms
):
    robot.robot.trouble = Trouble.DOWN
    ids = await store(sessions, robot, 1)  # one: a mobile number takes one SMS a minute
    task = asyncio.create_task(notifier(sessions, writer, robot, sms, fallback_after=3).run())
    try:
        await eventually(lambda: all_sent(sessions), 15, "notices sent on the fallback")
        await asyncio.sleep(1.0)
    finally:
        task.cancel()
    assert robot.robot.accepted == []
    assert sms.provider.delivered() == {str(i): 1 for i in ids}
    for notice in await notices(sessions):
        assert (notice.channel, notice.target, notice.status) == ("aliyun_sms", PHONE, "sent")
        assert "wecom_robot failed 3 times" in notice.last_error


async def test_a_robot_is_sent_at_most_20_notices_a_minute(sessions, writer, robot):
    ids = await store(sessions, robot, 25)
    running = notifier(sessions, writer, robot)
    task = asyncio.create_task(running.run())
    try:
        await eventually(lambda: _count_sent(sessions, 20), 10, "20 notices sent")
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
    assert robot.robot.delivered() == {str(i): 1 for i in ids[:20]}
    assert robot.robot.rejected == []  # the fake robot refuses a 21st within the minute
    held = [n for n in await notices(sessions) if n.status == "pending"]
    assert [n.id for n in held] == ids[20:]
    assert all(n.next_attempt_at > utc_now() + timedelta(seconds=50) for n in held)


async def _count_sent(sessions, count: int) -> bool:
    return sum(n.status == "sent" for n in await notices(sessions)) >= count


async def test_a_throttled_provider_is_left_alone_for_a_minute(sessions, writer, robot):
    robot.robot.trouble = Trouble.THROTTLE
    [notice_id] = await store(sessions, robot, 1)
    task = asyncio.create_task(notifier(sessions, writer, robot).run())
    try:
        await eventually(lambda: all_failed_at_least(sessions, 1), 10, "the throttled attempt")
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
    [notice] = await notices(sessions)
    assert (notice.id, notice.status, notice.attempts) == (notice_id, "pending", 1)
    assert "45009" in notice.last_error
    assert notice.next_attempt_at > utc_now() + timedelta(seconds=55)


async def test_a_new_notice_goes_out_while_another_institutions_robot_is_slow_to_answer(
    sessions, writer
):
    with WeComServer() as slow, WeComServer() as quick:
        slow.robot.trouble, slow.robot.hang_s = Trouble.TIMEOUT, 3.0
        routes = Routing(
            "wecom_robot",
            None,
            frozenset({"wecom_robot"}),
            {"slow-home": {"wecom_robot": slow.url}, "quick-home": {"wecom_robot": quick.url}},
        )
        waiting = asyncio.Event()
        running = Notifier(
            sessions,
            writer,
            waiting,
            {"wecom_robot": WeComRobot()},
            routes,
            Fallback(99, 3600),
            timeout_s=5,
        )
        outbox = Outbox(routes, storm_window_s=0)

        async def raise_at(institution: str) -> None:
            await _raise_at(sessions, outbox, institution, immediate=False)
            waiting.set()

        async def quick_got_it() -> bool:
            return sum(quick.robot.delivered().values()) == 1

        await raise_at("slow-home")
        task = asyncio.create_task(running.run())
        try:
            await asyncio.sleep(0.5)  # the slow robot has the first notice and keeps it 3 s
            await raise_at("quick-home")
            await eventually(quick_got_it, 1.5, "the quick robot's notice, not 3 s later")
        finally:
            task.cancel()


# --- a notice that cannot be sent is set aside; the others go out ----------------------------


def metric(running: Notifier, name: str, **labels: str) -> float | None:
    registry = registry_for(FirewatchCollector(notifier=running))
    return registry.get_sample_value(name, labels)


async def test_a_notice_to_a_webhook_httpx_cannot_parse_is_marked_failed_and_the_others_are_sent(
    sessions, writer, robot
):
    broken = "http://[::1/cgi-bin/webhook/send?key=k"  # "Invalid port": no retry mends it
    routes = Routing(
        "wecom_robot",
        None,
        frozenset({"wecom_robot"}),
        {"broken-home": {"wecom_robot": broken}, INSTITUTION: {"wecom_robot": robot.url}},
    )
    waiting = asyncio.Event()
    running = Notifier(
        sessions,
        writer,
        waiting,
        {"wecom_robot": WeComRobot()},
        routes,
        Fallback(99, 3600),
        timeout_s=1,
        backoff_s=0.1,
    )
    outbox = Outbox(routes, storm_window_s=0)
    [bad] = await _raise_at(sessions, outbox, "broken-home")
    [first] = await _raise_at(sessions, outbox, INSTITUTION)
    task = asyncio.create_task(running.run())
    try:
        await eventually(lambda: _robot_got(robot, 1), 10, "the other institution's notice")
        [second] = await _raise_at(sessions, outbox, INSTITUTION)  # the next alarm's notice
        waiting.set()
        await eventually(lambda: _robot_got(robot, 2), 10, "the next alarm's notice")
        assert not task.done()
    finally:
        task.cancel()
    assert robot.robot.delivered() == {str(first): 1, str(second): 1}
    [failed] = [n for n in await notices(sessions) if n.id == bad]
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error.startswith("InvalidURL: Invalid port")
    assert (
        metric(
            running,
            "firewatch_notices_unsendable_total",
            channel="wecom_robot",
            reason="InvalidURL",
        )
        == 1
    )


async def test_a_stored_notice_no_channel_can_read_is_marked_failed_and_the_next_is_sent(
    sessions, writer, robot, sms
):
    async with sessions.begin() as session:  # e.g. written by an older or newer version
        session.add(
            db.Notice(
                institution_id=INSTITUTION,
                channel="wecom_robot",
                target=robot.url,
                body={"kind": "raise", "title": 7},
            )
        )
    [good] = await store(sessions, robot, 1)  # after it, to the same robot
    running = notifier(sessions, writer, robot, sms, fallback_after=1)
    task = asyncio.create_task(running.run())
    try:
        await eventually(lambda: _robot_got(robot, 1), 10, "the notice after the unreadable one")
        await asyncio.sleep(1.0)  # rounds that could have handed the bad one on
        assert not task.done()
    finally:
        task.cancel()
    assert robot.robot.delivered() == {str(good): 1}
    assert sms.provider.accepted == []  # the same body would be unreadable there too
    [unreadable, _] = await notices(sessions)
    assert (unreadable.channel, unreadable.status) == ("wecom_robot", "failed")
    assert unreadable.last_error.startswith("ValidationError")


async def test_a_notice_whose_sms_template_names_a_missing_variable_goes_out_on_the_fallback(
    sessions, writer, robot
):
    with ProviderServer(TencentSmsProvider(template_params=2)) as tencent:
        routes = Routing(
            "tencent_sms",
            "wecom_robot",
            frozenset({"tencent_sms", "wecom_robot"}),
            {INSTITUTION: {"tencent_sms": PHONE, "wecom_robot": robot.url}},
        )
        sms = TencentSms(
            "AKID-test",
            "test-key",
            "1400000001",
            "青阳民政",
            "100001",
            ["institution", "floor"],  # no message has a "floor"
            "ap-guangzhou",
            tencent.base_url,
        )
        running = Notifier(
            sessions,
            writer,
            asyncio.Event(),
            {"tencent_sms": sms, "wecom_robot": WeComRobot()},
            routes,
            Fallback(99, 3600),
            timeout_s=1,
            backoff_s=0.1,
        )
        [notice_id] = await _raise_at(sessions, Outbox(routes, storm_window_s=0), INSTITUTION)
        task = asyncio.create_task(running.run())
        try:
            await eventually(lambda: all_sent(sessions), 10, "the notice on the robot")
            assert not task.done()
        finally:
            task.cancel()
        assert tencent.provider.accepted == []
    assert robot.robot.delivered() == {str(notice_id): 1}
    [notice] = await notices(sessions)
    assert notice.channel == "wecom_robot"
    assert notice.last_error == "tencent_sms: KeyError: 'floor'; sent on wecom_robot"
    assert (
        metric(
            running, "firewatch_notices_unsendable_total", channel="tencent_sms", reason="KeyError"
        )
        == 1
    )


async def _raise_at(
    sessions, outbox: Outbox, institution: str, immediate: bool = True
) -> list[int]:
    async with sessions.begin() as session:
        await session.run_sync(
            outbox.add,
            institution,
            None,
            NoticeMessage(
                kind="raise",
                institution=institution,
                title="一键报警（人工火警）",
                location="1号楼",
                device="btn-1",
                time="2026-11-22 20:00:00",
                immediate=immediate,
            ),
        )
    return [n.id for n in await notices(sessions)][-1:]
