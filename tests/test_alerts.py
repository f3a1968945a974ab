"""The alert service's decisions, applied to a real (SQLite) database.

Messages are handed to the service as the broker would deliver them; the end-to-end tests
drive the same path through real brokers and simulators.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import func, select

from alerts.service import AlertService
from firewatch import db
from firewatch.consumer import DeadLetters
from firewatch.contract import DeviceEvent, EventType, ReadingBatch
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import load_site
from firewatch.stack import sync_site

WEBHOOK = "http://127.0.0.1:9/cgi-bin/webhook/send?key=k"


@pytest.fixture
async def service(tmp_path):
    profiles = load_profiles()
    site = load_site(SITES_DIR / "demo-county.yaml", profiles)
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/fw.db")
    await db.create_schema(engine)
    sessions = db.sessionmaker(engine)
    await sync_site(sessions, site, profiles)
    svc = AlertService(
        site, profiles, sessions, BrokerAddress("127.0.0.1", 1), DeadLetters(sessions, "alerts"),
        shared_subscription=False, default_webhook=WEBHOOK,
        hazard_deadline=timedelta(hours=24), notices_waiting=asyncio.Event(),
    )
    svc.seq = count(1)
    svc.clock = datetime(2026, 11, 22, 12, tzinfo=UTC)
    yield svc
    await engine.dispose()


def gas(svc, value: float, seq: int | None = None) -> ReadingBatch:
    svc.clock += timedelta(seconds=1)
    return ReadingBatch(
        gateway_id="gw-rongcheng", seq=seq or next(svc.seq), device_id="rc-gas-1",
        institution_id="rongcheng-eldercare", kind="gas_detector", ts=svc.clock,
        profile="generic-gas-lel", readings={"gas_concentration": value},
        flags={"sensor_fault": False, "device_low_alarm": False, "device_high_alarm": False})


async def rows(svc, model, **where):
    async with svc.sessions() as session:
        query = select(model).filter_by(**where).order_by(model.id)
        return list(await session.scalars(query))


async def test_gas_above_the_low_set_point_raises_one_alarm_one_ledger_entry_and_one_notice(service):
    await service.apply(gas(service, 0.5))
    await service.apply(gas(service, 23.0))

    [alarm] = await rows(service, db.Alarm)
    assert (alarm.rule, alarm.status, alarm.value, alarm.set_point) == ("gas_low", "active", 23.0, 20)
    [entry] = await rows(service, db.Hazard)
    assert entry.source == "iot" and entry.category == "gas" and entry.status == "reported"
    assert entry.responsible_unit == "蓉城镇敬老院（演示）"
    assert (entry.responsible_person, entry.responsible_phone) == ("李明", "13800000102")
    assert entry.deadline == alarm.raised_at + timedelta(hours=24)
    [notice] = await rows(service, db.Notice)
    assert notice.status == "pending" and notice.target == WEBHOOK
    content = notice.body["markdown"]["content"]
    assert "蓉城镇敬老院（演示）" in content and "厨房灶台上方" in content
    assert "23 %LEL" in content and "设定值 20 %LEL" in content and "关闭燃气总阀" in content
    async with service.sessions() as session:
        device = await session.get(db.Device, "rc-gas-1")
    assert device.state == "alarm" and device.last_readings == {"gas_concentration": 23.0}


async def test_a_redelivered_message_changes_nothing(service):
    message = gas(service, 60.0)
    await service.apply(message)
    await service.apply(message)
    assert len(await rows(service, db.Alarm)) == 2  # gas_low and gas_high, once each
    assert len(await rows(service, db.Notice)) == 2


async def test_a_reading_hovering_at_the_set_point_does_not_flap(service):
    for value in (21, 19.5, 20.5, 18.5, 21):  # hysteresis 2 %LEL: clears only below 18
        await service.apply(gas(service, value))
    [alarm] = await rows(service, db.Alarm)
    assert alarm.status == "active"


async def test_the_alarm_clears_below_the_hysteresis_band_and_a_recovery_notice_follows(service):
    for value in (25, 17.9):
        await service.apply(gas(service, value))
    [alarm] = await rows(service, db.Alarm)
    assert alarm.status == "cleared" and alarm.cleared_at is not None
    notices = await rows(service, db.Notice)
    assert "【恢复】" in notices[-1].body["markdown"]["content"]
    async with service.sessions() as session:
        assert (await session.get(db.Device, "rc-gas-1")).state == "normal"


async def test_the_same_ongoing_condition_keeps_one_ledger_entry(service):
    for value in (25, 10, 26):  # raised, cleared, raised again while the entry is still open
        await service.apply(gas(service, value))
    assert len(await rows(service, db.Alarm)) == 2
    assert len(await rows(service, db.Hazard)) == 1


async def test_a_device_gone_silent_is_offline_with_the_reason_and_a_fault_notice(service):
    service.clock += timedelta(seconds=1)
    await service.apply(DeviceEvent(
        gateway_id="gw-rongcheng", seq=next(service.seq), device_id="rc-gas-1",
        institution_id="rongcheng-eldercare", kind="gas_detector", ts=service.clock,
        event=EventType.OFFLINE, reason="no answer to 3 polls in a row"))
    async with service.sessions() as session:
        device = await session.get(db.Device, "rc-gas-1")
        assert device.state == "offline"
    [alarm] = await rows(service, db.Alarm)
    assert (alarm.rule, alarm.severity) == ("offline", "fault")
    assert await rows(service, db.Hazard) == []  # a silent device is a fault, not a hazard
    [notice] = await rows(service, db.Notice)
    assert "【故障】" in notice.body["markdown"]["content"]
    assert "no answer to 3 polls" in notice.body["markdown"]["content"]


async def test_a_site_set_point_overrides_the_profiles_default(service):
    # dq-efm-1 has residual_current_high at 400 mA in the demo site instead of 300 mA
    service.clock += timedelta(seconds=1)
    await service.apply(ReadingBatch(
        gateway_id="gw-dingqiao", seq=next(service.seq), device_id="dq-efm-1",
        institution_id="dingqiao-eldercare", kind="electrical_fire_monitor", ts=service.clock,
        profile="generic-efm-4t", readings={"residual_current": 350.0}, flags={}))
    assert await rows(service, db.Alarm) == []


async def test_an_older_message_that_arrives_late_does_not_roll_the_state_back(service):
    old = gas(service, 30.0)
    await service.apply(gas(service, 0.5))
    await service.apply(old)
    assert await rows(service, db.Alarm) == []
