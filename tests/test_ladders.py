"""One incident is one alarm: the levels of one condition (a gas detector's low and high
limits) rise on one alarm and one ledger entry, told once more when they rise.

The demo's simulated gas detector in 丁桥镇敬老院's kitchen is read once a (virtual) second
into the alert service on a real SQLite database, as the gateway would hand its polls over.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from alerts.notices import NoticeMessage, summary_title, wecom_markdown
from firewatch import db
from tests.support.alerts import START, Feed, alert_service, database, robot_outbox


@pytest.fixture
async def sessions(tmp_path):
    async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as sessions:
        yield sessions


async def rows(sessions, model) -> list:
    async with sessions() as session:
        return list(await session.scalars(select(model).order_by(model.id)))


async def told(sessions) -> list[NoticeMessage]:
    return [NoticeMessage.model_validate(n.body) for n in await rows(sessions, db.Notice)]


async def test_a_gas_leak_is_one_alarm_and_one_ledger_entry_rising_from_the_low_to_the_high_limit(
    sessions,
):
    feed = Feed(alert_service(sessions, robot_outbox()), "dq-gas-1")
    await feed.run("normal", 3)
    await feed.run("gas-leak", 6)  # past the low limit (20 %LEL) and its 2 s on-delay
    [alarm] = await rows(sessions, db.Alarm)
    assert (alarm.title, alarm.severity) == ("可燃气体浓度低限报警", "warning")

    await feed.run("gas-leak", 6)  # past the high limit (50 %LEL): the same alarm rises
    [alarm] = await rows(sessions, db.Alarm)
    assert (alarm.rule, alarm.level, alarm.title, alarm.severity, alarm.category) == (
        "gas_high",
        "gas_high",
        "可燃气体浓度高限报警",
        "alarm",
        "gas",
    )
    low, high = await rows(sessions, db.AlarmLevel)
    assert [(low.rule, low.severity), (high.rule, high.severity)] == [
        ("gas_low", "warning"),
        ("gas_high", "alarm"),
    ]
    assert low.at == alarm.raised_at < high.at
    [entry] = await rows(sessions, db.Hazard)
    assert entry.description == "厨房：可燃气体浓度高限报警（物联网监测自动上报）"
    assert [e.action for e in await rows(sessions, db.HazardEvent)] == ["file", "rise"]
    raised, rose = await told(sessions)
    assert (raised.kind, raised.title, raised.severity) == (
        "raise",
        "可燃气体浓度低限报警",
        "warning",
    )
    assert (rose.kind, rose.title, rose.severity, rose.category) == (
        "rise",
        "可燃气体浓度高限报警",
        "alarm",
        "gas",
    )
    text = wecom_markdown(rose, 2)["markdown"]["content"]
    assert "【升级】丁桥镇敬老院（演示）：可燃气体浓度低限报警→高限报警" in text

    await feed.hold({"gas_concentration": 30}, 15)  # under the high limit, over the low one
    [alarm] = await rows(sessions, db.Alarm)
    assert (alarm.status, alarm.level, alarm.title) == ("active", "gas_low", "可燃气体浓度高限报警")
    assert len(await told(sessions)) == 2  # falling is recorded, not told

    await feed.run("normal", 15)
    [alarm] = await rows(sessions, db.Alarm)
    assert alarm.status == "cleared"
    *_, cleared = await told(sessions)
    assert (cleared.kind, cleared.title) == ("clear", "可燃气体浓度高限报警已恢复")
    assert len(await told(sessions)) == 3 and len(await rows(sessions, db.Hazard)) == 1


async def test_a_storm_summary_of_one_detector_names_its_one_place(sessions):
    feed = Feed(alert_service(sessions, robot_outbox(storm_window_s=60)), "dq-gas-1")
    await feed.run("gas-leak", 12)  # raised at the low limit, risen to the high one
    raised, summary = await told(sessions)
    assert raised.kind == "raise" and summary.kind == "summary"
    assert summary.location == "丁桥镇 · 厨房" and "多处" not in summary.advice
    assert summary_title(summary) == "短时间内1 条升级（1 台设备，1 处）"


async def test_open_low_and_high_alarms_from_before_ladders_become_one_that_still_clears(sessions):
    async with sessions.begin() as session:  # as the code before ladders left a leak
        for rule, title in (
            ("gas_low", "可燃气体浓度低限报警"),
            ("gas_high", "可燃气体浓度高限报警"),
        ):
            session.add(
                db.Alarm(
                    device_id="dq-gas-1",
                    institution_id="dingqiao-eldercare",
                    rule=rule,
                    title=title,
                    severity="alarm",
                    raised_at=START,
                )
            )
    feed = Feed(alert_service(sessions, robot_outbox()), "dq-gas-1")
    await feed.run("normal", 1)
    async with sessions() as session:  # one alarm on the map, at the higher level
        assert (await session.get(db.Device, "dq-gas-1")).state_reason == "可燃气体浓度高限报警"
    await feed.run("normal", 11)
    low, high = await rows(sessions, db.Alarm)
    assert (low.status, high.status) == ("cleared", "cleared")
    [cleared] = await told(sessions)  # the low one was merged into the high one, untold
    assert (cleared.kind, cleared.title) == ("clear", "可燃气体浓度高限报警已恢复")
