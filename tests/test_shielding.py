"""Shielding (屏蔽) and test mode (测试): alarms recorded, told to nobody, until the mode ends.

The alert service's side on real SQLite and PostgreSQL, messages handed to it as the broker
would deliver them (as in tests/test_alerts.py); the web API's side in-process on the demo app.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from firewatch import db, device_modes
from firewatch.contract import utc_now
from firewatch.device_modes import Mode, Reason
from tests.support.auth import login_async
from tests.support.webapp import demo_app
from tests.test_alerts import button, rows
from tests.test_alerts import service as service  # the fixture: an alert service on the demo

RONGCHENG_DUTY = "duty-rongcheng-eldercare"


async def shield(sessions, device_id: str, minutes: float, mode: Mode = Mode.SHIELDED) -> None:
    async with sessions.begin() as session:
        device = await session.get_one(db.Device, device_id)
        until = utc_now() + timedelta(minutes=minutes)
        device_modes.start(session, device, mode, until, Reason.MAINTENANCE, "", RONGCHENG_DUTY)


def press(svc, device_id: str):
    gateway, institution = {
        "rc-btn-1": ("gw-rongcheng", "rongcheng-eldercare"),
        "dq-btn-1": ("gw-dingqiao", "dingqiao-eldercare"),
    }[device_id]
    return button(svc, True, device_id, gateway, institution)


async def test_a_shielded_buttons_press_is_recorded_and_tells_nobody_while_a_neighbours_is_told(
    service,
):
    await shield(service.sessions, "rc-btn-1", minutes=60)
    await service.apply(press(service, "rc-btn-1"))
    await service.apply(press(service, "dq-btn-1"))

    alarms = {a.device_id: a for a in await rows(service, db.Alarm)}
    shielded, neighbour = alarms["rc-btn-1"], alarms["dq-btn-1"]
    assert (shielded.status, shielded.mode, neighbour.mode) == ("active", "shielded", None)
    assert [n.alarm_id for n in await rows(service, db.Notice)] == [neighbour.id]
    assert [h.device_id for h in await rows(service, db.Hazard)] == ["dq-btn-1"]
    [raised] = await rows(service, db.AlarmEvent, alarm_id=shielded.id)
    assert "屏蔽中，不通知" in raised.note


async def test_shielding_ends_by_itself_logged_and_a_press_still_active_is_told_then(service):
    await shield(service.sessions, "rc-btn-1", minutes=30)
    await service.apply(press(service, "rc-btn-1"))
    assert await rows(service, db.Notice) == []

    await service.modes.sweep(utc_now() + timedelta(minutes=31))
    await service.modes.sweep(utc_now() + timedelta(minutes=32))  # told once, not twice

    [device] = await rows(service, db.Device, id="rc-btn-1")
    assert (device.mode, device.mode_until) == ("normal", None)
    log = [(e.action, e.actor) for e in await rows(service, db.DeviceModeEvent)]
    assert log == [("start", RONGCHENG_DUTY), ("end", "system")]
    [end] = await rows(service, db.DeviceModeEvent, action="end")
    assert RONGCHENG_DUTY in end.note
    [alarm] = await rows(service, db.Alarm)
    [notice] = await rows(service, db.Notice)
    assert (alarm.status, notice.alarm_id, alarm.released_at is not None) == (
        "active",
        alarm.id,
        True,
    )
    assert "屏蔽已结束，报警仍未消除" in notice.body["reason"]
    assert [h.alarm_id for h in await rows(service, db.Hazard)] == [alarm.id]


async def test_duty_staff_shield_their_own_device_not_another_institutions_and_it_is_audited(
    tmp_path,
):
    async with (
        demo_app(tmp_path) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as own,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as other,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as tester,
    ):
        await login_async(own, RONGCHENG_DUTY)
        await login_async(other, "duty-dingqiao-eldercare")
        await login_async(tester, "tester")
        asked = {"mode": "shielded", "minutes": 120, "reason": "maintenance", "note": "更换电池"}
        url = "/api/devices/rc-btn-1/mode"

        assert (await other.post(url, json=asked)).status_code == 404  # not theirs to see
        assert (await tester.post(url, json=asked)).status_code == 403  # testers only test
        too_long = {**asked, "minutes": 73 * 60}
        assert (await own.post(url, json=too_long)).status_code == 422
        unstated = {**asked, "reason": "other", "note": ""}
        assert (await own.post(url, json=unstated)).status_code == 422

        started = await own.post(url, json=asked)
        assert started.status_code == 200, started.text
        listed = {d["id"]: d for d in (await own.get("/api/devices")).json()}
        assert (listed["rc-btn-1"]["state"], listed["rc-btn-1"]["mode_by"]) == (
            "shielded",
            RONGCHENG_DUTY,
        )
        assert listed["rc-gas-1"]["state"] != "shielded"
        assert (await other.delete(url)).status_code == 404
        assert (await own.delete(url)).json()["mode"] == "normal"

        events = (await own.get("/api/devices/rc-btn-1/mode-events")).json()
        assert [(e["action"], e["actor"], e["note"]) for e in events] == [
            ("cancel", RONGCHENG_DUTY, "更换电池"),
            ("start", RONGCHENG_DUTY, "更换电池"),
        ]
        async with demo.sessions() as session:
            assert (await session.scalars(select(db.DeviceModeEvent.device_id))).all() == [
                "rc-btn-1",
                "rc-btn-1",
            ]
