"""Confirming says what it was (§2) and the one-tap link (§5), through the JSON API.

The app runs in-process on the demo site (httpx's ASGI transport) with a real SQLite
database; alarms, their ledger entries and notices are stored as the alert service stores
them.  The phone's page itself is driven in a browser by tests/test_console.py.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import httpx
import openpyxl
import pytest
from sqlalchemy import select

from alerts.confirm_links import ConfirmLinks
from alerts.notices import NoticeMessage, template_variables, wecom_markdown
from firewatch import db
from firewatch.contract import utc_now
from firewatch.settings import Settings
from tests.support.auth import login_async
from tests.support.webapp import DemoApp, demo_app

SETTINGS = Settings(public_url="https://fw.example.cn")
LINKS = ConfirmLinks.from_settings(SETTINGS)
RONGCHENG, DINGQIAO = "rongcheng-eldercare", "dingqiao-eldercare"
SAFETY_OFFICER = "13800000102"  # 李明, 蓉城镇敬老院's safety officer in the demo site


@pytest.fixture
async def demo(tmp_path):
    async with demo_app(tmp_path, SETTINGS) as running:
        yield running


@pytest.fixture
async def api(demo):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as c:
        yield c


async def alarm_with_entry(demo: DemoApp, device_id: str = "rc-btn-1") -> tuple[int, int]:
    """An alarm (of the one-key rule, on any device: one open at a time per device) and the
    ledger entry it raised, as the alert service stores them."""
    alarm_id = await demo.raise_alarm(device_id)
    async with demo.sessions.begin() as session:
        alarm = await session.get_one(db.Alarm, alarm_id)
        entry = db.Hazard(
            institution_id=alarm.institution_id,
            township="蓉城镇",
            category="fire_facilities",
            source="iot",
            description="一楼走廊：一键报警（物联网监测自动上报）",
            responsible_unit="蓉城镇敬老院",
            responsible_person="李明",
            responsible_phone=SAFETY_OFFICER,
            deadline=utc_now() + timedelta(hours=24),
            status="reported",
            device_id=device_id,
            rule="one_key_alarm",
            alarm_id=alarm_id,
        )
        session.add(entry)
        await session.flush()
        return alarm_id, entry.id


async def sms_notice(demo: DemoApp, alarm_id: int, stored_at: datetime | None = None) -> int:
    async with demo.sessions.begin() as session:
        notice = db.Notice(
            alarm_id=alarm_id,
            institution_id=RONGCHENG,
            channel="aliyun_sms",
            target=SAFETY_OFFICER,
            body={},
            status="sent",
            created_at=stored_at or utc_now(),
        )
        session.add(notice)
        await session.flush()
        return notice.id


async def link_token(demo: DemoApp, notice_id: int) -> str:
    async with demo.sessions() as session:
        notice = await session.get_one(db.Notice, notice_id)
    return LINKS.token(notice.id, notice.created_at)


async def test_a_false_alarm_closes_its_entry_with_the_reason_and_a_fault_files_maintenance(
    demo, api
):
    await login_async(api, "duty-rongcheng-eldercare")
    false_alarm, false_entry = await alarm_with_entry(demo)
    no_choice = await api.post(f"/api/alarms/{false_alarm}/acknowledge", json={"note": "误按"})
    assert no_choice.status_code == 422  # a classification is required
    reply = await api.post(
        f"/api/alarms/{false_alarm}/acknowledge",
        json={"classification": "false", "note": "老人误按，已复位"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["classification"] == "false"
    entry = (await api.get("/api/hazards?status=dismissed")).json()
    assert [h["id"] for h in entry] == [false_entry]
    [*_, closing] = (await api.get(f"/api/hazards/{false_entry}/events")).json()
    assert (closing["action"], closing["actor"], closing["note"]) == (
        "dismiss",
        "duty-rongcheng-eldercare",
        "误报：老人误按，已复位",
    )

    fault, fault_entry = await alarm_with_entry(demo, "rc-efm-1")
    await api.post(
        f"/api/alarms/{fault}/acknowledge",
        json={"classification": "device_fault", "note": "按钮卡滞"},
    )
    hazards = {h["id"]: h for h in (await api.get("/api/hazards")).json()}
    assert hazards[fault_entry]["status"] == "dismissed"
    [maintenance] = [h for h in hazards.values() if h["id"] > fault_entry]
    assert (maintenance["category"], maintenance["status"], maintenance["alarm_id"]) == (
        "fire_facilities",
        "reported",
        fault,
    )
    assert "设备故障" in maintenance["description"] and "按钮卡滞" in maintenance["description"]

    real, real_entry = await alarm_with_entry(demo, "rc-gas-1")
    await api.post(f"/api/alarms/{real}/acknowledge", json={"classification": "real"})
    hazards = {h["id"]: h for h in (await api.get("/api/hazards")).json()}
    assert hazards[real_entry]["status"] == "reported"  # a real hazard stays open


async def test_statistics_of_alarms_with_known_outcomes(demo, api):
    """Four alarms of one institution: confirmed after 1, 2 and 10 minutes as false, real and
    test, one nobody confirmed for an hour; one of another institution confirmed before
    classifications (未分类).  The one-key alarm escalates to the head after 3 minutes."""
    now = utc_now()
    outcomes = [
        (RONGCHENG, 60, "false"),
        (RONGCHENG, 120, "real"),
        (RONGCHENG, 600, "test"),
        (RONGCHENG, None, None),
        (DINGQIAO, 30, None),
    ]
    async with demo.sessions.begin() as session:
        for institution, wait_s, classification in outcomes:
            raised = now - timedelta(hours=1)
            session.add(
                db.Alarm(
                    device_id="rc-btn-1" if institution == RONGCHENG else "dq-btn-1",
                    institution_id=institution,
                    rule="one_key_alarm",
                    title="一键报警（人工火警）",
                    severity="alarm",
                    status="closed" if wait_s else "active",
                    raised_at=raised,
                    acknowledged_at=raised + timedelta(seconds=wait_s) if wait_s else None,
                    acknowledged_by="duty" if wait_s else None,
                    classification=classification,
                )
            )
    await login_async(api, "admin")
    report = (await api.get("/api/alarms/statistics", params={"by": "institution"})).json()
    rows = {r["key"]: r for r in report["rows"]}
    assert rows[RONGCHENG] | {"label": ""} == {
        "key": RONGCHENG,
        "label": "",
        "alarms": 4,
        "confirmed": 3,
        "real": 1,
        "false": 1,
        "test": 1,
        "device_fault": 0,
        "unclassified": 0,
        "false_alarm_rate": pytest.approx(1 / 3),
        "median_confirm_s": 120,
        "p90_confirm_s": 600,  # nearest rank: the 3rd of 3
        "within_escalation": 2,  # 1 and 2 minutes, of 3
        "within_escalation_share": 0.5,  # of 4 decided: 3 confirmed, 1 an hour unconfirmed
    }
    assert rows[DINGQIAO]["unclassified"] == 1 and rows[DINGQIAO]["false_alarm_rate"] is None
    assert report["totals"]["alarms"] == 5 and report["totals"]["median_confirm_s"] == 90
    export = await api.get("/api/hazards/export.xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(export.content))["报警核实统计"]
    first = next(r for r in sheet.iter_rows(values_only=True) if str(r[0]).startswith("蓉城镇"))
    assert first[1:5] == (4, 3, 1, 1) and first[8] == pytest.approx(1 / 3)  # by institution
    by_model = (await api.get("/api/alarms/statistics", params={"by": "model"})).json()
    assert [r["alarms"] for r in by_model["rows"]] == [5]
    await login_async(api, "duty-dingqiao-eldercare")  # duty staff: their own institution
    mine = (await api.get("/api/alarms/statistics", params={"by": "township"})).json()
    assert [(r["label"], r["alarms"]) for r in mine["rows"]] == [("丁桥镇", 1)]


async def test_the_link_confirms_its_alarm_in_the_name_of_the_person_it_was_sent_to(demo, api):
    alarm_id, entry_id = await alarm_with_entry(demo)
    token = await link_token(demo, await sms_notice(demo, alarm_id))
    shown = (await api.get(f"/api/confirm/{token}")).json()
    assert shown["alarm"]["id"] == alarm_id and shown["person"] == "李明（安全管理人员）"
    assert "119" in shown["advice"]
    reply = await api.post(
        f"/api/confirm/{token}",
        json={"alarm_id": alarm_id, "classification": "test", "note": "维保单位季度测试"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["acknowledged_by"].startswith("李明（安全管理人员）")
    async with demo.sessions() as session:
        entry = await session.get_one(db.Hazard, entry_id)
        [step] = await session.scalars(
            select(db.AlarmEvent).where(
                db.AlarmEvent.alarm_id == alarm_id, db.AlarmEvent.action == "acknowledge"
            )
        )
    assert entry.status == "dismissed" and step.actor.startswith("李明")
    again = await api.post(
        f"/api/confirm/{token}", json={"alarm_id": alarm_id, "classification": "real"}
    )
    assert again.status_code == 409 and "已由 李明" in again.json()["detail"]


async def test_a_tampered_expired_or_other_alarms_link_is_refused_in_chinese(demo, api):
    alarm_id, _ = await alarm_with_entry(demo)
    other_alarm = await demo.raise_alarm("dq-btn-1")
    token = await link_token(demo, await sms_notice(demo, alarm_id))
    stale = await link_token(
        demo, await sms_notice(demo, alarm_id, utc_now() - timedelta(hours=24, minutes=1))
    )
    number, stamp, signature = token.split(".")
    forged = f"{int(number) + 1}.{stamp}.{signature}"  # the next notice's number
    for bad, status, words in [
        (forged, 403, "链接无效"),
        (token[:-1], 403, "链接无效"),
        (stale, 410, "链接已过期"),
    ]:
        for reply in (
            await api.get(f"/api/confirm/{bad}"),
            await api.post(
                f"/api/confirm/{bad}", json={"alarm_id": alarm_id, "classification": "false"}
            ),
        ):
            assert reply.status_code == status and words in reply.json()["detail"], bad
    elsewhere = await api.post(
        f"/api/confirm/{token}", json={"alarm_id": other_alarm, "classification": "false"}
    )
    assert elsewhere.status_code == 403 and "不属于该报警" in elsewhere.json()["detail"]
    async with demo.sessions() as session:
        for alarm in (alarm_id, other_alarm):
            assert (await session.get_one(db.Alarm, alarm)).acknowledged_at is None


def test_the_sms_carries_the_links_token_within_a_variable_and_the_robot_the_link():
    url = LINKS.url(12_345_678, utc_now())
    message = NoticeMessage(
        kind="raise",
        institution="蓉城镇敬老院",
        title="一键报警",
        location="一楼",
        time="",
        link=url,
    )
    token = url.removeprefix("https://fw.example.cn/c/")
    assert template_variables(message)["confirm"] == token and len(token) <= 35
    assert f"]({url})" in wecom_markdown(message, 7)["markdown"]["content"]
