"""The alert service's decisions, applied to real SQLite and PostgreSQL databases.

Messages are handed to the service as the broker would deliver them; the end-to-end tests
drive the same path through real brokers and simulators.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import func, select

from alerts.notices import NoticeMessage, wecom_markdown
from firewatch import db
from firewatch.consumer import forget_applied
from firewatch.contract import DeviceEvent, EventType, ReadingBatch, utc_now
from tests.support.alerts import alert_service, robot_outbox
from tests.support.ledger import demo_county

WEBHOOK = "http://127.0.0.1:9/cgi-bin/webhook/send?key=k"


@pytest.fixture
async def service(database_url):
    async with demo_county(database_url) as county:
        svc = alert_service(county.sessions, robot_outbox(WEBHOOK))
        svc.seq = count(1)
        svc.clock = datetime(2026, 11, 22, 12, tzinfo=UTC)
        yield svc


def gas(svc, value: float, seq: int | None = None) -> ReadingBatch:
    svc.clock += timedelta(seconds=1)
    return ReadingBatch(
        gateway_id="gw-rongcheng",
        seq=seq or next(svc.seq),
        device_id="rc-gas-1",
        institution_id="rongcheng-eldercare",
        kind="gas_detector",
        ts=svc.clock,
        profile="generic-gas-lel",
        readings={"gas_concentration": value},
        flags={"sensor_fault": False, "device_low_alarm": False, "device_high_alarm": False},
    )


async def gas_for(svc, value: float, seconds: int) -> None:
    """The same concentration, read once a second for ``seconds`` seconds."""
    for _ in range(seconds + 1):
        await svc.apply(gas(svc, value))


def content(notice: db.Notice) -> str:
    """The notice as the WeChat Work robot would show it."""
    return wecom_markdown(NoticeMessage.model_validate(notice.body), notice.id)["markdown"][
        "content"
    ]


async def rows(svc, model, **where):
    async with svc.sessions() as session:
        query = select(model).filter_by(**where).order_by(model.id)
        return list(await session.scalars(query))


async def test_gas_above_the_low_set_point_raises_one_alarm_one_ledger_entry_and_one_notice(
    service,
):
    await service.apply(gas(service, 0.5))
    await gas_for(service, 23.0, 2)  # gas_low waits 2 s (on-delay) before it is an alarm

    [alarm] = await rows(service, db.Alarm)
    assert (alarm.rule, alarm.status, alarm.value, alarm.set_point) == (
        "gas_low",
        "active",
        23.0,
        20,
    )
    [entry] = await rows(service, db.Hazard)
    assert entry.source == "iot" and entry.category == "gas" and entry.status == "reported"
    assert entry.responsible_unit == "蓉城镇敬老院（演示）"
    assert (entry.responsible_person, entry.responsible_phone) == ("李明", "13800000102")
    assert entry.deadline == alarm.raised_at + timedelta(hours=24)
    [notice] = await rows(service, db.Notice)
    assert notice.status == "pending" and notice.target == WEBHOOK
    text = content(notice)
    assert "蓉城镇敬老院（演示）" in text and "厨房灶台上方" in text
    assert "23 %LEL" in text and "设定值 20 %LEL" in text and "关闭燃气总阀" in text
    async with service.sessions() as session:
        device = await session.get(db.Device, "rc-gas-1")
    assert device.state == "alarm" and device.last_readings == {"gas_concentration": 23.0}


async def test_a_redelivered_message_changes_nothing(service):
    message = gas(service, 60.0)
    await service.apply(message)
    await service.apply(message)
    assert len(await rows(service, db.Alarm)) == 1  # gas_high (no on-delay), once
    assert len(await rows(service, db.Notice)) == 1


def button(svc, pressed: bool, device_id: str, gateway_id: str, institution_id: str):
    svc.clock += timedelta(seconds=1)
    return ReadingBatch(
        gateway_id=gateway_id,
        seq=next(svc.seq),
        device_id=device_id,
        institution_id=institution_id,
        kind="one_key_alarm",
        ts=svc.clock,
        profile="generic-onekey-mqtt",
        readings={"battery_voltage": 3.0},
        flags={"button_pressed": pressed, "tamper": False},
    )


async def test_a_press_among_a_queue_of_readings_is_one_alarm_and_each_device_keeps_its_state(
    service,
):
    """What the broker had queued is applied in one go, one message after another."""
    quiet = [gas(service, 5.0) for _ in range(50)]
    press = button(service, True, "dq-btn-1", "gw-dingqiao", "dingqiao-eldercare")
    again = quiet[10]  # a redelivery inside the same batch
    await service.apply_batch([*quiet[:25], press, again, *quiet[25:], press])

    [alarm] = await rows(service, db.Alarm)
    assert (alarm.device_id, alarm.rule, alarm.status) == ("dq-btn-1", "one_key_alarm", "active")
    assert len(await rows(service, db.Notice)) == 1
    states = {d.id: d.state for d in await rows(service, db.Device)}
    assert (states["dq-btn-1"], states["rc-gas-1"]) == ("alarm", "normal")
    async with service.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(db.ProcessedMessage)) == 51


async def test_a_press_from_a_gateway_whose_outbox_was_replaced_is_no_replay(service):
    """A new outbox (new SD card) numbers its messages from 1 again, under a new incarnation."""
    quiet = gas(service, 5.0, seq=1)
    await service.apply(quiet)
    pressed = button(service, True, "rc-btn-1", "gw-rongcheng", "rongcheng-eldercare")
    press = pressed.model_copy(update={"seq": 1, "incarnation": "0123456789abcdef"})
    await service.apply(press)
    [alarm] = await rows(service, db.Alarm)
    assert (alarm.device_id, alarm.rule) == ("rc-btn-1", "one_key_alarm")
    await service.apply(press)  # its redelivery is still recognised
    assert len(await rows(service, db.Notice)) == 1


async def test_a_press_queued_behind_routine_readings_is_notified_before_they_are_applied(
    service,
):
    """The notifier is woken once the press is committed, with the readings not yet in."""
    quiet = [gas(service, 5.0) for _ in range(200)]
    press = button(service, True, "dq-btn-1", "gw-dingqiao", "dingqiao-eldercare")

    async def applied_when_woken() -> tuple[int, int]:
        await service.notices_waiting.wait()
        async with service.sessions() as session:
            return (
                await session.scalar(select(func.count()).select_from(db.ProcessedMessage)),
                await session.scalar(select(func.count()).select_from(db.Notice)),
            )

    woken = asyncio.create_task(applied_when_woken())
    await service.apply_batch([*quiet, press])
    assert await woken == (1, 1)  # the press and its notice; none of the 200 readings yet
    async with service.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(db.ProcessedMessage)) == 201


async def test_the_record_of_applied_messages_is_kept_for_its_window_then_forgotten(service):
    old = [gas(service, 5.0) for _ in range(25)]
    await service.apply_batch(old)
    cutoff = utc_now()
    recent = gas(service, 60.0)
    await service.apply(recent)

    assert await forget_applied(service.writer, "alerts", cutoff, chunk=7) == 25
    async with service.sessions() as session:
        left = list(await session.scalars(select(db.ProcessedMessage.seq)))
    assert left == [recent.seq]
    await service.apply(recent)  # redelivered within the window: still recognised
    assert len(await rows(service, db.Notice)) == 1


async def test_a_reading_hovering_at_the_set_point_does_not_flap(service):
    await gas_for(service, 21, 2)
    for value in (19.5, 20.5, 18.5, 21) * 5:  # hysteresis 2 %LEL: clears only below 18
        await service.apply(gas(service, value))
    [alarm] = await rows(service, db.Alarm)
    assert alarm.status == "active"


async def test_the_alarm_clears_below_the_hysteresis_band_and_a_recovery_notice_follows(service):
    await gas_for(service, 25, 2)
    await gas_for(service, 17.9, 10)  # below the band for the 10 s off-delay
    [alarm] = await rows(service, db.Alarm)
    assert alarm.status == "cleared" and alarm.cleared_at is not None
    notices = await rows(service, db.Notice)
    assert "【恢复】" in content(notices[-1])
    async with service.sessions() as session:
        assert (await session.get(db.Device, "rc-gas-1")).state == "normal"


async def test_the_same_ongoing_condition_keeps_one_ledger_entry(service):
    for value, seconds in ((25, 2), (10, 10), (26, 2)):  # raised, cleared, raised again
        await gas_for(service, value, seconds)  # while the ledger entry is still open
    assert len(await rows(service, db.Alarm)) == 2
    assert len(await rows(service, db.Hazard)) == 1


async def test_a_device_gone_silent_is_offline_with_the_reason_and_a_fault_notice(service):
    service.clock += timedelta(seconds=1)
    await service.apply(
        DeviceEvent(
            gateway_id="gw-rongcheng",
            seq=next(service.seq),
            device_id="rc-gas-1",
            institution_id="rongcheng-eldercare",
            kind="gas_detector",
            ts=service.clock,
            event=EventType.OFFLINE,
            reason="no answer to 3 polls in a row",
        )
    )
    async with service.sessions() as session:
        device = await session.get(db.Device, "rc-gas-1")
        assert device.state == "offline"
    [alarm] = await rows(service, db.Alarm)
    assert (alarm.rule, alarm.severity) == ("offline", "fault")
    assert await rows(service, db.Hazard) == []  # a silent device is a fault, not a hazard
    [notice] = await rows(service, db.Notice)
    assert "【故障】" in content(notice)
    assert "no answer to 3 polls" in content(notice)


def link_event(svc, event: EventType, reason: str = "") -> DeviceEvent:
    svc.clock += timedelta(seconds=1)
    return DeviceEvent(
        gateway_id="gw-rongcheng",
        seq=next(svc.seq),
        device_id="rc-gas-1",
        institution_id="rongcheng-eldercare",
        kind="gas_detector",
        ts=svc.clock,
        event=event,
        reason=reason,
    )


async def test_a_device_answering_only_exception_replies_is_a_fault_on_the_map_until_it_answers(
    service,
):
    reason = "异常应答 exception replies to 3 polls in a row: exception code 2 (非法数据地址)"
    await service.apply(link_event(service, EventType.FAULT, reason))
    async with service.sessions() as session:
        device = await session.get(db.Device, "rc-gas-1")
        assert (device.state, device.state_reason) == ("fault", "设备故障（应答异常）")
    [alarm] = await rows(service, db.Alarm)
    assert (alarm.rule, alarm.severity, alarm.status) == ("device_fault", "fault", "active")
    [notice] = await rows(service, db.Notice)
    assert "【故障】" in content(notice) and "exception code 2" in content(notice)

    await service.apply(link_event(service, EventType.OFFLINE, "no answer"))  # then silent
    async with service.sessions() as session:
        assert (await session.get(db.Device, "rc-gas-1")).state == "offline"
    await service.apply(link_event(service, EventType.ONLINE, "device answers polls"))
    async with service.sessions() as session:
        assert (await session.get(db.Device, "rc-gas-1")).state == "normal"
    assert {(a.rule, a.status) for a in await rows(service, db.Alarm)} == {
        ("device_fault", "cleared"),
        ("offline", "cleared"),
    }


async def test_a_site_set_point_overrides_the_profiles_default(service):
    # dq-efm-1 has residual_current_high at 400 mA in the demo site instead of 300 mA
    for _ in range(10):  # well past the 3 s on-delay
        service.clock += timedelta(seconds=1)
        await service.apply(
            ReadingBatch(
                gateway_id="gw-dingqiao",
                seq=next(service.seq),
                device_id="dq-efm-1",
                institution_id="dingqiao-eldercare",
                kind="electrical_fire_monitor",
                ts=service.clock,
                profile="generic-efm-4t",
                readings={"residual_current": 350.0},
                flags={},
            )
        )
    # over the 200 mA warning level, under the site's alarm level: a warning that never rose
    [alarm] = await rows(service, db.Alarm)
    assert (alarm.rule, alarm.severity, alarm.set_point) == (
        "residual_current_warning",
        "warning",
        200,
    )


async def test_an_older_message_that_arrives_late_does_not_roll_the_state_back(service):
    old = gas(service, 60.0)  # gas_high has no on-delay: applied, it would raise at once
    await service.apply(gas(service, 0.5))
    await service.apply(old)
    assert await rows(service, db.Alarm) == []
