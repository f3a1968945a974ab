"""A fire-class alarm reaches a person by two means at once, and a call nobody answers goes to
the next on the call list (issue 14 §4; GB/T 45839-2025 5.10.4).

The alert side runs as ``firewatch up`` runs it, on a real Mosquitto, with the demo site's
dispatch policy and call lists (值班表); the providers are the local fakes, which check each
request as the providers document it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from firewatch import db
from firewatch.alert_side import alert_side
from firewatch.contract import readings_topic
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import ProfileError
from firewatch.settings import SITES_DIR, Settings
from firewatch.site import load_site
from tests.support.alerts import PROFILES, SITE, database
from tests.support.aliyun_sms import AliyunSmsProvider
from tests.support.aliyun_vms import AliyunVmsProvider
from tests.support.providers import ProviderServer
from tests.support.wecom import WeComRobot, WeComServer
from tests.test_alert_side_faults import eventually, mosquitto, press, running

__all__ = ["mosquitto"]  # the fixture, shared with the alert side's other tests
pytestmark = pytest.mark.timeout(120)

DUTY, DEPUTY = "13800000102", "13800000103"  # 蓉城镇敬老院's 值班表 in the demo site


def settings(robot: WeComServer, sms: ProviderServer, voice: ProviderServer) -> Settings:
    return Settings(
        wecom_webhook_url=robot.url,
        aliyun_sms_access_key_id="LTAI-test-id",
        aliyun_sms_access_key_secret="test-secret",
        aliyun_sms_sign_name="青阳民政",
        aliyun_sms_template_code="SMS_000001",
        aliyun_sms_endpoint=sms.base_url,
        aliyun_vms_access_key_id="LTAI-test-id",
        aliyun_vms_access_key_secret="test-secret",
        aliyun_vms_tts_code="TTS_000001",
        aliyun_vms_endpoint=voice.base_url,
    )


async def press_on_demo(
    mosquitto: BrokerAddress,
    tmp_path: Path,
    sms: AliyunSmsProvider,
    voice: AliyunVmsProvider,
    until: Callable[[WeComRobot, list[db.Notice]], bool],
    what: str,
) -> tuple[WeComRobot, list[db.Notice]]:
    """Press 蓉城镇敬老院's one-key button (rc-btn-1) on the demo site's alert side and run it
    until ``until(robot, notices)`` holds; the robot's fake and the notices stored."""
    with (
        WeComServer() as robot,
        ProviderServer(sms) as sms_server,
        ProviderServer(voice) as voice_server,
    ):
        async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as sessions:

            async def notices() -> list[db.Notice]:
                async with sessions() as session:
                    return list(await session.scalars(select(db.Notice).order_by(db.Notice.id)))

            async def done() -> bool:
                return until(robot.robot, await notices())

            side = alert_side(
                settings(robot, sms_server, voice_server), SITE, PROFILES, sessions, mosquitto
            )
            side.calls.every_s = 0.2
            async with running(side), mosquitto.client("gateways") as gateways:
                await side.alerts.consumer.ready.wait()
                pressed = press("rc-btn-1", "gw-rongcheng", "rongcheng-eldercare")
                topic = readings_topic(pressed.gateway_id, pressed.device_id)
                await gateways.publish(topic, pressed.to_bytes(), qos=1)
                await eventually(done, 30, what)
            return robot.robot, await notices()


async def test_a_one_key_press_reaches_the_duty_groups_robot_and_the_duty_persons_phone_at_once(
    mosquitto, tmp_path
):
    sms, voice = AliyunSmsProvider(), AliyunVmsProvider(answering={DUTY})
    robot, notices = await press_on_demo(
        mosquitto,
        tmp_path,
        sms,
        voice,
        # and each notice's outcome stored, which comes after the provider's answer
        lambda robot, notices: (
            bool(robot.accepted and sms.accepted and voice.accepted)
            and all(n.status == "sent" for n in notices)
        ),
        "the press at the robot, by SMS and by a call, each recorded as sent",
    )
    # one notice per means, all due at the same instant: none waited for another to fail
    assert [n.channel for n in notices] == ["wecom_robot", "aliyun_sms", "aliyun_vms"]
    assert len({n.next_attempt_at for n in notices}) == 1
    assert all(n.status == "sent" and n.attempts == 1 for n in notices)
    assert "一键报警" in robot.accepted[0].body["markdown"]["content"]
    [text] = sms.accepted
    assert text.body["PhoneNumbers"] == DUTY and "一键报警" in text.body["TemplateParam"]["alarm"]
    assert voice.called() == [DUTY]


async def test_a_call_the_duty_person_does_not_answer_goes_to_the_deputy(mosquitto, tmp_path):
    voice = AliyunVmsProvider(answering={DEPUTY})

    def deputy_answered(_, notices: list[db.Notice]) -> bool:
        calls = [n.outcome for n in notices if n.channel == "aliyun_vms"]
        return calls == ["unanswered", "answered"]

    _, notices = await press_on_demo(
        mosquitto, tmp_path, AliyunSmsProvider(), voice, deputy_answered, "the deputy called"
    )
    assert voice.called() == [DUTY, DEPUTY]  # and nobody after the one who answered
    calls = [n for n in notices if n.channel == "aliyun_vms"]
    assert [(c.target, c.call_rank) for c in calls] == [(DUTY, 0), (DEPUTY, 1)]
    assert all(c.provider_ref for c in calls)  # the CallId each result was asked by


def test_a_fire_class_rule_with_one_means_is_refused_naming_the_file_and_field(tmp_path):
    demo = (SITES_DIR / "demo-county.yaml").read_text(encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text(demo.replace("means: [robot, sms, voice]", "means: [voice]"), "utf-8")
    with pytest.raises(ProfileError) as refused:
        load_site(site, PROFILES)
    assert str(site) in str(refused.value)
    assert "field dispatch.at_once.0.means" in str(refused.value)
