"""An alarm's life, recorded step by step: active → acknowledged → cleared → closed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from alerts import lifecycle
from firewatch import db
from tests.support.alerts import Feed, alert_service, database, robot_outbox


@pytest.fixture
async def raised(database_url):
    """A residual-current alarm on rc-efm-1, still active: (sessions, feed, alarm id)."""
    async with database(database_url) as sessions:
        feed = Feed(alert_service(sessions, robot_outbox()), "rc-efm-1")
        await feed.run("residual-current-spike", 5)
        async with sessions() as session:
            [alarm] = await session.scalars(select(db.Alarm))
        yield sessions, feed, alarm.id


async def test_every_step_of_an_alarm_is_recorded_with_who_when_and_a_note(raised):
    sessions, feed, alarm_id = raised
    async with sessions.begin() as session:
        await lifecycle.acknowledge(session, alarm_id, "李明", "已到配电房，正在排查", "real")
    await feed.run("normal", 12)
    async with sessions.begin() as session:
        alarm = await lifecycle.close(session, alarm_id, "李明", "潮湿插座已更换，绝缘复测合格")
    assert alarm.status == "closed"
    async with sessions() as session:
        steps = await lifecycle.history(session, alarm_id)
    assert [(s.action, s.actor, s.from_status, s.to_status) for s in steps] == [
        ("raise", "system", None, "active"),
        ("acknowledge", "李明", "active", "acknowledged"),
        ("clear", "system", "acknowledged", "cleared"),
        ("close", "李明", "cleared", "closed"),
    ]
    assert "mA" in steps[0].note and steps[-1].note == "潮湿插座已更换，绝缘复测合格"
    assert all(a.at <= b.at for a, b in zip(steps, steps[1:], strict=False))


async def test_an_alarm_still_active_cannot_be_closed(raised):
    sessions, _, alarm_id = raised
    with pytest.raises(lifecycle.AlarmTransitionError, match="only a cleared alarm"):
        async with sessions.begin() as session:
            await lifecycle.close(session, alarm_id, "李明", "")
    async with sessions() as session:
        assert (await session.get(db.Alarm, alarm_id)).status == "active"


async def test_an_alarm_that_cleared_unattended_is_acknowledged_by_closing_it(raised):
    sessions, feed, alarm_id = raised
    await feed.run("normal", 12)
    async with sessions.begin() as session:
        alarm = await lifecycle.close(session, alarm_id, "赵强", "夜间自行恢复，早班复查正常")
    assert (alarm.status, alarm.acknowledged_by) == ("closed", "赵强")
    with pytest.raises(lifecycle.AlarmTransitionError, match="acknowledged by 赵强"):
        async with sessions.begin() as session:
            await lifecycle.acknowledge(session, alarm_id, "李明", "", "false")
