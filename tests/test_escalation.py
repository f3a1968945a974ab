"""Escalation and ledger reminders on a controlled clock, on real SQLite and PostgreSQL.

The escalator is asked what is due at instants the test picks (3 minutes after an alarm,
a day after a deadline, 90 days after a sign-off), so minutes and months pass without
waiting.  tests/test_escalation_scheduler.py runs the same escalator under the real APScheduler.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from alerts.escalator import Escalator
from alerts.ledger import Source
from alerts.outbox import Routing, recipients_of
from firewatch import db
from firewatch.contract import utc_now
from firewatch.escalation_policy import EscalationPolicy
from firewatch.profiles import HazardCategory, Severity
from tests.support.ledger import County, demo_county

WEBHOOK = "http://127.0.0.1:9/cgi-bin/webhook/send?key=k"
T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)


@pytest.fixture
async def county(database_url: str):
    async with demo_county(database_url) as county:
        yield county


def escalator(county: County, *channels: str, policy: EscalationPolicy | None = None) -> Escalator:
    primary, *fallback = channels or ("wecom_robot",)
    routing = Routing(
        primary,
        fallback[0] if fallback else None,
        frozenset(channels or [primary]),
        recipients_of(county.site, WEBHOOK),
    )
    return Escalator(
        county.site,
        county.profiles,
        county.sessions,
        county.writer,
        routing,
        default_webhook=WEBHOOK,
        notices_waiting=asyncio.Event(),
        policy=policy,
    )


async def notices(county: County) -> list[db.Notice]:
    return await county.rows(db.Notice)


def said(notice: db.Notice) -> tuple[str, str]:
    return notice.body["label"], notice.body["reason"]


async def test_an_unacknowledged_gas_alarm_goes_to_the_head_after_3_minutes_then_to_the_bureau(
    county,
):
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", T0)
    esc = escalator(county)

    assert await esc.sweep(T0 + 3 * MIN - timedelta(seconds=1)) == {f"alarm:{alarm}": T0 + 3 * MIN}
    assert await notices(county) == []

    assert await esc.sweep(T0 + 3 * MIN) == {f"alarm:{alarm}": T0 + 8 * MIN}
    [to_head] = await notices(county)
    assert said(to_head) == ("报警升级", "已 3 分钟无人确认")
    assert "王建国" in to_head.body["advice"]  # 蓉城镇敬老院's head, from the site file
    assert (to_head.channel, to_head.target, to_head.alarm_id) == ("wecom_robot", WEBHOOK, alarm)

    await esc.sweep(T0 + 8 * MIN - timedelta(seconds=1))
    assert len(await notices(county)) == 1
    assert await esc.sweep(T0 + 8 * MIN) == {f"alarm:{alarm}": None}  # the last step
    to_bureau = (await notices(county))[-1]
    assert said(to_bureau) == ("提级督办", "已 8 分钟无人确认")
    assert "青阳县民政局（演示）" in to_bureau.body["advice"]

    assert await esc.sweep(T0 + DAY) == {}
    assert len(await notices(county)) == 2


async def test_acknowledging_the_alarm_cancels_the_steps_still_pending(county):
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", T0)
    esc = escalator(county)
    await esc.sweep(T0 + 3 * MIN)
    await county.acknowledge(alarm)

    assert await esc.sweep(T0 + 30 * MIN) == {}
    assert [said(n)[0] for n in await notices(county)] == ["报警升级"]


async def test_a_device_fault_reaches_the_head_only_after_an_hour(county):
    await county.raise_alarm("dq-gas-1", "sensor_fault", T0)
    esc = escalator(county)
    await esc.sweep(T0 + 59 * MIN)
    assert await notices(county) == []
    await esc.sweep(T0 + 60 * MIN)
    [to_head] = await notices(county)
    assert to_head.body["severity"] == "fault" and "陈秀兰" in to_head.body["advice"]


async def test_with_sms_configured_the_head_and_the_bureau_are_texted_on_their_own_phones(county):
    await county.raise_alarm("rc-gas-1", "gas_low", T0)
    esc = escalator(county, "aliyun_sms", "wecom_robot")
    await esc.sweep(T0 + 8 * MIN)
    assert [(n.channel, n.target, n.status) for n in await notices(county)] == [
        ("aliyun_sms", "13800000101", "pending"),  # 王建国, the head
        ("aliyun_sms", "13800000001", "pending"),  # 周科长, the bureau's duty officer
    ]


async def test_an_overdue_entry_reminds_its_responsible_person_daily_and_is_flagged_once(county):
    deadline = T0 + 2 * DAY
    entry = await county.file(deadline)
    await county.move(entry, "start")
    esc = escalator(county)

    assert await esc.sweep(T0) == {f"hazard:{entry}": deadline}
    assert await notices(county) == []

    await esc.sweep(deadline)
    assert [said(n)[0] for n in await notices(county)] == ["逾期通报", "隐患逾期"]
    await esc.sweep(deadline + DAY - MIN)
    assert len(await notices(county)) == 2
    assert await esc.sweep(deadline + DAY) == {f"hazard:{entry}": deadline + 2 * DAY}
    reminder = (await notices(county))[-1]
    assert said(reminder) == ("隐患逾期", "已逾期 1 天，状态：整改中")
    assert "赵强" in reminder.body["advice"]


async def test_after_downtime_an_overdue_entry_gets_one_reminder_not_a_backlog(county):
    deadline = T0
    await county.file(deadline)
    await escalator(county).sweep(deadline + 5 * DAY + MIN)
    assert [said(n) for n in await notices(county)] == [
        ("逾期通报", "已逾期 5 天，状态：已上报"),
        ("隐患逾期", "已逾期 5 天，状态：已上报"),
    ]


async def test_an_entry_awaiting_verification_is_not_chased_past_its_deadline(county):
    entry = await county.file(T0)
    await county.move(entry, "start", "submit")
    assert await escalator(county).sweep(T0 + 3 * DAY) == {}
    assert await notices(county) == []


async def test_a_public_report_goes_round_the_whole_loop_with_a_failed_recheck(county):
    """举报 → 查实 → 整改 → 验收不通过 → 销号 → 回头看不通过 → 重新整改 → 销号 → 回头看通过."""
    esc = escalator(county)
    rejected = await county.file(
        utc_now() + DAY,
        source=Source.PUBLIC_REPORT,
        description="厨房燃气管道漏气",
        category=HazardCategory.GAS,
    )
    await county.move(rejected, "reject", note="现场核查：管道完好，举报不属实")
    entry = await county.file(utc_now() + DAY, source=Source.PUBLIC_REPORT, by="群众举报电话")
    await county.move(entry, "verify", "start", "submit", "fail", "submit", "sign-off")

    [signed_off] = await county.rows(db.HazardEvent, hazard_id=entry, action="sign-off")
    due = signed_off.at + 90 * DAY  # evacuation: the quarterly re-check
    assert (await esc.sweep(due - MIN))[f"hazard:{entry}"] == due
    assert await esc.sweep(due) == {f"hazard:{entry}": None}  # reminded; waits for the re-check
    assert [said(n) for n in await notices(county)] == [("回头看", "已到回头看时间")]

    await county.move(entry, "recheck-fail", note="杂物再次堆放，隐患回潮")
    [entry_row] = await county.rows(db.Hazard, id=entry)
    assert entry_row.status == "rectifying"
    await county.move(entry, "submit", "sign-off")
    [_, second] = await county.rows(db.HazardEvent, hazard_id=entry, action="sign-off")
    await esc.sweep(second.at + 90 * DAY)  # a second sign-off: a second re-check
    assert [said(n)[0] for n in await notices(county)] == ["回头看", "回头看"]
    await county.move(entry, "recheck-pass")

    assert await esc.sweep(second.at + 400 * DAY) == {}
    trail = await county.rows(db.HazardEvent, hazard_id=entry)
    assert [(e.action, e.from_status, e.to_status) for e in trail] == [
        ("file", None, "pending-verification"),
        ("verify", "pending-verification", "reported"),
        ("start", "reported", "rectifying"),
        ("submit", "rectifying", "awaiting-verification"),
        ("fail", "awaiting-verification", "rectifying"),
        ("submit", "rectifying", "awaiting-verification"),
        ("sign-off", "awaiting-verification", "closed"),
        ("recheck-fail", "closed", "rectifying"),
        ("submit", "rectifying", "awaiting-verification"),
        ("sign-off", "awaiting-verification", "closed"),
        ("recheck-pass", "closed", "closed"),
    ]
    assert trail[7].note == "杂物再次堆放，隐患回潮" and trail[0].actor == "群众举报电话"
    [rejected_row] = await county.rows(db.Hazard, id=rejected)
    assert rejected_row.status == "rejected"  # kept in the ledger, never chased


#: the last hour of the calendar: no China time for it, and no reminder a day after it
YEAR_9999 = datetime(9999, 12, 31, 23, tzinfo=UTC)


async def test_an_entry_due_in_9999_does_not_stop_the_escalation_of_another_institutions_alarm(
    county,
):
    self_check = await county.file(
        T0 + DAY,
        institution_id="dingqiao-eldercare",
        source=Source.SELF_CHECK,
        description="自查：灭火器年检",
    )
    await county.set_deadline(self_check, YEAR_9999)
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", T0)
    esc = escalator(county)

    assert await esc.sweep(T0 + 3 * MIN) == {
        f"alarm:{alarm}": T0 + 8 * MIN,
        f"hazard:{self_check}": YEAR_9999,
    }
    [to_head] = await notices(county)
    assert (to_head.alarm_id, said(to_head)) == (alarm, ("报警升级", "已 3 分钟无人确认"))
    assert esc.set_aside == {}


async def test_an_alarm_the_escalator_cannot_read_is_set_aside_and_the_others_are_escalated(
    county,
):
    odd = await county.raise_alarm("dq-gas-1", "gas_low", T0)
    await county.set_severity(odd, "critical")  # written by another version, or by hand
    alarm = await county.raise_alarm("rc-gas-1", "gas_low", T0)
    esc = escalator(county)

    assert await esc.sweep(T0 + 3 * MIN) == {f"alarm:{alarm}": T0 + 8 * MIN}
    assert await esc.sweep(T0 + 8 * MIN) == {f"alarm:{alarm}": None}
    assert [(n.alarm_id, said(n)[0]) for n in await notices(county)] == [
        (alarm, "报警升级"),
        (alarm, "提级督办"),
    ]
    assert list(esc.set_aside) == [f"alarm:{odd}"]
    assert "'critical' is not a valid Severity" in esc.set_aside[f"alarm:{odd}"]
    assert esc.errors == {"ValueError": 1}  # counted once, not once per sweep


def test_a_site_file_sets_timings_per_category_and_keeps_defaults_for_what_it_leaves_out():
    policy = EscalationPolicy.model_validate(
        yaml.safe_load("""
        alarm_by_category: {electrical: {head_after_min: 2, bureau_after_min: 4}}
        ledger: {remind_every_hours: 12, recheck_after_days: 60}
    """)
    )
    assert policy.for_alarm(HazardCategory.ELECTRICAL, Severity.ALARM).to_bureau == 6 * MIN
    assert policy.for_alarm(HazardCategory.GAS, Severity.ALARM).to_head == 5 * MIN  # `alarm`
    assert policy.for_alarm(HazardCategory.GAS, Severity.FAULT).to_head == 60 * MIN
    assert policy.for_entry(HazardCategory.EVACUATION).recheck_after == 60 * DAY
    assert policy.for_entry(HazardCategory.GAS).recheck_after == 30 * DAY  # default map
