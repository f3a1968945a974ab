"""Storm control: many alarms at one institution make one summary, the first goes out at once.

Alarms come from simulated devices through the alert service into a real SQLite database;
the last scenario also sends through a running notifier to a fake WeChat Work robot.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from alerts.channels.wecom_robot import WeComRobot
from alerts.notices import NoticeMessage, summary_title
from alerts.notifier import Fallback, Notifier
from firewatch import db
from firewatch.contract import utc_now
from tests.support.alerts import Feed, alert_service, database, robot_outbox, writer
from tests.support.wecom import WeComServer


@pytest.fixture
async def sessions(tmp_path):
    async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as sessions:
        yield sessions


async def notices(sessions) -> list[tuple[db.Notice, NoticeMessage]]:
    async with sessions() as session:
        rows = await session.scalars(select(db.Notice).order_by(db.Notice.id))
        return [(n, NoticeMessage.model_validate(n.body)) for n in rows]


async def storm(service) -> None:
    """Electrical and gas trouble at 蓉城镇敬老院 within a few seconds."""
    efm, gas = Feed(service, "rc-efm-1"), Feed(service, "rc-gas-1")
    await efm.run("residual-current-spike", 5)
    await gas.run("gas-leak", 10)  # the low limit at 6 s, risen to the high one at 9 s
    await efm.run("sensor-fault", 7)


async def test_a_storm_sends_the_first_notice_at_once_and_folds_the_rest_into_one_summary(sessions):
    await storm(alert_service(sessions, robot_outbox(storm_window_s=60)))
    [(first, said), (summary, summed)] = await notices(sessions)
    assert (said.kind, said.title) == ("raise", "剩余电流超限")
    assert first.next_attempt_at <= utc_now()
    assert summed.kind == "summary" and len(summed.items) == 3
    assert all("蓉城镇" in line for line in summed.items)
    assert any("【升级】" in line and "低限报警→高限报警" in line for line in summed.items)
    assert (summed.places, summed.location) == (
        ["蓉城镇 · 厨房灶台上方", "蓉城镇 · 一楼配电房总箱"],
        "2 处",
    )
    assert summary_title(summed) == "短时间内2 条报警、1 条升级（2 台设备，2 处）"
    assert any("rc-efm-1" in line and "故障" in line for line in summed.items)
    assert summary.next_attempt_at == summed.window_end
    assert (summed.window_end - first.created_at).total_seconds() == pytest.approx(60, abs=1)


async def test_a_one_key_press_in_a_storm_goes_out_at_once_on_its_own(sessions):
    service = alert_service(sessions, robot_outbox(storm_window_s=60))
    await storm(service)
    await Feed(service, "rc-btn-1").run("button-press", 1)
    *_, (button, said) = await notices(sessions)
    assert (said.kind, said.title, said.immediate) == ("raise", "一键报警（人工火警）", True)
    assert button.next_attempt_at <= utc_now()
    [summary] = [m for _, m in await notices(sessions) if m.kind == "summary"]
    assert not any("一键报警" in line for line in summary.items)


async def test_alarms_at_another_institution_are_not_folded_into_this_storm(sessions):
    service = alert_service(sessions, robot_outbox(storm_window_s=60))
    await storm(service)
    await Feed(service, "dq-gas-1").run("gas-leak", 6)  # the low limit reached
    (first, said), *_ = [
        (n, m) for n, m in await notices(sessions) if n.institution_id == "dingqiao-eldercare"
    ]
    assert (said.kind, said.institution) == ("raise", "丁桥镇敬老院（演示）")
    assert first.next_attempt_at <= utc_now()
    [summary] = [
        m
        for _, m in await notices(sessions)
        if m.kind == "summary" and m.institution == "蓉城镇敬老院（演示）"
    ]
    assert len(summary.items) == 3 and not any("丁桥" in line for line in summary.items)


async def test_the_summary_reaches_the_robot_when_the_window_ends_and_the_first_before(sessions):
    with WeComServer() as robot:
        outbox = robot_outbox(robot.url, storm_window_s=3)
        notifier = Notifier(
            sessions,
            writer(sessions),
            asyncio.Event(),
            {"wecom_robot": WeComRobot()},
            outbox.routing,
            Fallback(3, 3600),
            timeout_s=2,
        )
        sending = asyncio.create_task(notifier.run())
        try:
            await storm(alert_service(sessions, outbox))
            deadline = time.monotonic() + 20
            while len(robot.robot.accepted) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            sending.cancel()
    first, summary = robot.robot.accepted
    assert "【报警】蓉城镇敬老院（演示）：剩余电流超限" in first.body["markdown"]["content"]
    text = summary.body["markdown"]["content"]
    # what the window held depends on how fast the machine fed it: the first test counts
    assert "【汇总】蓉城镇敬老院（演示）：短时间内" in text
    [window_end] = [m.window_end for _, m in await notices(sessions) if m.kind == "summary"]
    # the first was not held for the window; the summary waited for the window's end
    assert first.at < window_end.timestamp() <= summary.at + 0.05
    assert len(robot.robot.accepted) == 2 and robot.robot.rejected == []


async def test_a_stored_notice_nobody_can_read_does_not_stop_the_next_alarm_of_its_institution(
    sessions,
):
    async with sessions.begin() as session:  # written by another version, or by hand
        session.add(
            db.Notice(
                institution_id="rongcheng-eldercare",
                channel="wecom_robot",
                target="",
                body={"kind": "raise", "title": 7},
                status="failed",
            )
        )
    service = alert_service(sessions, robot_outbox(storm_window_s=60))
    await Feed(service, "rc-gas-1").run("gas-leak", 10)
    async with sessions() as session:
        _, *raised = await session.scalars(select(db.Notice).order_by(db.Notice.id))
    # the low limit's notice at once, the rise to the high one folded into a summary, as
    # without it
    assert [(n.body["kind"], n.body["title"]) for n in raised] == [
        ("raise", "可燃气体浓度低限报警"),
        ("summary", ""),
    ]
    assert service.raised == 1
