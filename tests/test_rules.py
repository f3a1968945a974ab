"""Each alarm rule firing and clearing on the simulators' scenarios, on device time.

The simulator device models (profile values, noise, ramps) feed the alert service once a
virtual second, as a gateway polling them would; the database is a real SQLite file.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from alerts.rules import rules_for
from firewatch import db
from tests.support.alerts import PROFILES, SITE, Feed, alert_service, database, robot_outbox


@pytest.fixture
async def sessions(tmp_path):
    async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as sessions:
        yield sessions


@pytest.fixture
def service(sessions):
    return alert_service(sessions, robot_outbox())


async def alarms(sessions, device_id: str) -> dict[str, db.Alarm]:
    """The latest alarm of each rule of a device."""
    async with sessions() as session:
        rows = await session.scalars(
            select(db.Alarm).where(db.Alarm.device_id == device_id).order_by(db.Alarm.id)
        )
        return {a.rule: a for a in rows}


async def statuses(sessions, device_id: str) -> dict[str, str]:
    return {rule: a.status for rule, a in (await alarms(sessions, device_id)).items()}


async def test_a_residual_current_spike_is_an_alarm_after_3_s_and_clears_10_s_after_it_ends(
    sessions, service
):
    feed = Feed(service, "rc-efm-1")
    await feed.run("normal", 5)
    spike_at = feed.now
    await feed.run("residual-current-spike", 2)
    assert await alarms(sessions, "rc-efm-1") == {}  # the 3 s on-delay is still running
    await feed.run("residual-current-spike", 2)
    alarm = (await alarms(sessions, "rc-efm-1"))["residual_current_high"]
    assert alarm.raised_at - spike_at in (timedelta(seconds=4), timedelta(seconds=5))
    assert alarm.value >= 600 and alarm.set_point == 300
    await feed.run("normal", 9)
    assert await statuses(sessions, "rc-efm-1") == {"residual_current_high": "active"}
    await feed.run("normal", 3)
    assert await statuses(sessions, "rc-efm-1") == {"residual_current_high": "cleared"}


async def test_a_two_second_leakage_spike_raises_nothing(sessions, service):
    feed = Feed(service, "rc-efm-1")
    await feed.run("residual-current-spike", 2)
    await feed.run("normal", 10)
    assert await alarms(sessions, "rc-efm-1") == {}


async def test_an_overheating_cable_warns_of_the_rise_before_the_temperature_alarm(
    sessions, service
):
    feed = Feed(service, "cw-efm-1")
    await feed.run("normal", 70)  # a minute of history for the rate of rise
    await feed.run("overheat", 8)
    found = await alarms(sessions, "cw-efm-1")
    assert found["cable_temp_1_rise"].raised_at < found["cable_temp_1_high"].raised_at
    assert found["cable_temp_1_rise"].value >= 10 and found["cable_temp_1_rise"].unit == "°C/min"
    await feed.run("overheat", 80)  # hot but steady: the rise is over, the heat is not
    assert await statuses(sessions, "cw-efm-1") == {
        "cable_temp_1_rise": "cleared",
        "cable_temp_1_high": "active",
    }
    await feed.run("normal", 12)
    assert await statuses(sessions, "cw-efm-1") == {
        "cable_temp_1_rise": "cleared",
        "cable_temp_1_high": "cleared",
    }


async def test_a_rise_is_still_seen_after_the_gateways_clock_steps_back(sessions, service):
    feed = Feed(service, "cw-efm-1")
    await feed.run("normal", 70)
    feed.t -= 180  # NTP sets the gateway's clock three minutes back
    await feed.run("normal", 70)  # a minute of history on the clock set right
    await feed.run("overheat", 8)
    assert "cable_temp_1_rise" in await alarms(sessions, "cw-efm-1")


async def test_a_slow_temperature_rise_reaches_the_set_point_without_a_rise_warning(
    sessions, service
):
    feed = Feed(service, "cw-efm-1")
    await feed.run("normal", 70)
    await feed.run("slow-temperature-rise", 600)  # 32 -> 85 °C in 10 minutes: 5.3 °C/min
    assert await statuses(sessions, "cw-efm-1") == {"cable_temp_1_high": "active"}


async def test_gas_at_half_the_lel_at_once_raises_the_high_alarm_at_once_and_it_clears_after(
    sessions, service
):
    feed = Feed(service, "dq-gas-1")
    await feed.run("normal", 3)
    await feed.hold({"gas_concentration": 60}, 1)
    found = await alarms(sessions, "dq-gas-1")
    assert found["gas_high"].raised_at == feed.now  # no on-delay at half the LEL
    await feed.hold({"gas_concentration": 60}, 2)  # the low limit's on-delay run: no new alarm
    assert await statuses(sessions, "dq-gas-1") == {"gas_high": "active"}
    await feed.run("normal", 12)
    assert await statuses(sessions, "dq-gas-1") == {"gas_high": "cleared"}


@pytest.mark.parametrize("device_id", ["rc-efm-1", "rc-gas-1"])
async def test_a_broken_sensor_is_a_fault_after_5_s_not_an_alarm(sessions, service, device_id):
    feed = Feed(service, device_id)
    await feed.run("sensor-fault", 4)
    assert await alarms(sessions, device_id) == {}
    await feed.run("sensor-fault", 2)
    [fault] = (await alarms(sessions, device_id)).values()
    assert (fault.rule, fault.severity) == ("sensor_fault", "fault")
    async with sessions() as session:
        assert (await session.get(db.Device, device_id)).state == "fault"
    await feed.run("normal", 11)
    assert await statuses(sessions, device_id) == {"sensor_fault": "cleared"}


async def test_a_one_key_press_is_an_alarm_in_the_same_poll(sessions, service):
    feed = Feed(service, "rc-btn-1")
    await feed.run("button-press", 1)
    alarm = (await alarms(sessions, "rc-btn-1"))["one_key_alarm"]
    assert (alarm.status, alarm.raised_at) == ("active", feed.now)
    await feed.run("normal", 1)
    assert await statuses(sessions, "rc-btn-1") == {"one_key_alarm": "cleared"}


async def test_a_restart_during_the_on_delay_neither_loses_nor_repeats_the_alarm(sessions):
    before = Feed(alert_service(sessions, robot_outbox()), "rc-efm-1")
    await before.run("residual-current-spike", 2)
    after = Feed(alert_service(sessions, robot_outbox()), "rc-efm-1")  # a new process
    after.sim, after.t = before.sim, before.t
    await after.run("residual-current-spike", 2)  # the delay carried over: 4 s in all
    await after.run("residual-current-spike", 5)
    [alarm] = (await alarms(sessions, "rc-efm-1")).values()
    assert alarm.raised_at == before.now + timedelta(seconds=2)
    async with sessions() as session:
        assert len(list(await session.scalars(select(db.Notice)))) == 1


def test_an_institutions_set_point_applies_to_its_devices_unless_a_device_sets_its_own():
    institution = SITE.institution("dingqiao-eldercare").model_copy(
        update={"set_points": {"residual_current_high": 350, "gas_low": 15}}
    )
    efm, gas = (next(d for d in SITE.devices if d.id == i) for i in ("dq-efm-1", "dq-gas-1"))
    set_points = {
        r.name: r.set_point
        for d in (efm, gas)
        for r in rules_for(d, PROFILES[d.profile], institution)
    }
    assert set_points["residual_current_high"] == 400  # dq-efm-1's own, in the site file
    assert set_points["gas_low"] == 15
    assert set_points["gas_high"] == 50  # the profile's default
