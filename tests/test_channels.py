"""Each notice channel against a local server that checks requests as its provider documents.

The servers recompute every signature with the shared secret; a channel with the wrong
secret is refused, which shows they can fail.  Each also answers with its provider's error
code, its "too many requests" answer, or not at all in time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from alerts.channels import Channel, SendFailed
from alerts.channels.aliyun_sms import AliyunSms
from alerts.channels.aliyun_vms import AliyunVms
from alerts.channels.base import THROTTLE_PAUSE_S
from alerts.channels.tencent_sms import TencentSms
from alerts.channels.tencent_vms import TencentVms
from alerts.channels.wechat_oa import WeChatOfficialAccount
from alerts.channels.wecom_robot import WeComRobot
from alerts.notices import NoticeMessage
from firewatch.settings import Settings
from tests.support.aliyun_sms import AliyunSmsProvider
from tests.support.aliyun_vms import AliyunVmsProvider
from tests.support.providers import FakeProvider, ProviderServer, Trouble
from tests.support.tencent_sms import TencentSmsProvider
from tests.support.tencent_vms import TencentVmsProvider
from tests.support.wechat_oa import WeChatOfficialAccountProvider
from tests.support.wecom import WeComRobot as WeComRobotProvider

OPENID = "oFireWatch-safety-officer"
MESSAGE = NoticeMessage(
    kind="raise",
    institution="蓉城镇敬老院（演示）",
    title="可燃气体浓度高限报警",
    location="蓉城镇 · 厨房灶台上方",
    device="可燃气体探测器（0-100%LEL）（rc-gas-1）",
    time="2026-11-22 20:00:05",
    reading="60 %LEL",
    set_point="50 %LEL",
    advice="立即疏散人员，关闭燃气总阀，严禁开关电器和使用明火，拨打119并通知燃气公司。",
    contact="李明 13800000102",
)


@dataclass
class Setup:
    """A provider's fake, how to make our channel for it and whom to send to, given the
    fake's base URL and a secret (None: the right one; the robot's key is in its URL)."""

    provider: Callable[[], FakeProvider]
    channel: Callable[[str, str | None], Channel]
    target: Callable[[str, str | None], str]


SETUPS = {
    "wecom_robot": Setup(
        WeComRobotProvider,
        lambda base, secret: WeComRobot(),
        lambda base, secret: f"{base}/cgi-bin/webhook/send?key={secret or 'test-robot-key'}",
    ),
    "aliyun_sms": Setup(
        AliyunSmsProvider,
        lambda base, secret: AliyunSms(
            "LTAI-test-id", secret or "test-secret", "青阳民政", "SMS_000001", base
        ),
        lambda base, secret: "13800000102",
    ),
    "tencent_sms": Setup(
        TencentSmsProvider,
        lambda base, secret: TencentSms(
            "AKID-test",
            secret or "test-key",
            "1400000001",
            "青阳民政",
            "100001",
            Settings().tencent_sms_template_params,
            "ap-guangzhou",
            base,
        ),
        lambda base, secret: "13800000102",
    ),
    "aliyun_vms": Setup(
        AliyunVmsProvider,
        lambda base, secret: AliyunVms(
            "LTAI-test-id", secret or "test-secret", "TTS_000001", "", 2, base
        ),
        lambda base, secret: "13800000102",
    ),
    "tencent_vms": Setup(
        TencentVmsProvider,
        lambda base, secret: TencentVms(
            "AKID-test", secret or "test-key", "1400000002", "200001", 2, "ap-guangzhou", base
        ),
        lambda base, secret: "13800000102",
    ),
    "wechat_oa": Setup(
        lambda: WeChatOfficialAccountProvider(followers=(OPENID,)),
        lambda base, secret: WeChatOfficialAccount(
            "wx-test-app",
            secret or "test-app-secret",
            "tpl-fire-alarm",
            Settings().wechat_oa_template_keys,
            base,
        ),
        lambda base, secret: OPENID,
    ),
}


@pytest.fixture(params=sorted(SETUPS))
def provider(request):
    setup = SETUPS[request.param]
    with ProviderServer(setup.provider()) as server:
        yield setup, server


async def send(
    setup: Setup,
    server: ProviderServer,
    *,
    secret: str | None = None,
    notice_id: int = 7,
    timeout: float = 5,
) -> None:
    async with httpx.AsyncClient(timeout=timeout) as http:
        channel = setup.channel(server.base_url, secret)
        await channel.send(http, setup.target(server.base_url, secret), MESSAGE, notice_id)


async def test_a_notice_reaches_the_provider_as_documented_naming_what_happened(provider):
    setup, server = provider
    await send(setup, server, notice_id=7)
    assert server.provider.rejected == []
    [received] = server.provider.accepted
    assert received.key.endswith("7")
    text = str(received.body)
    assert "蓉城镇敬老院" in text and "可燃气体浓度高限报警" in text and "60 %LEL" in text


async def test_a_request_signed_with_the_wrong_secret_is_refused(provider):
    setup, server = provider
    with pytest.raises(SendFailed) as failed:
        await send(setup, server, secret="not-the-secret")
    assert server.provider.accepted == []
    [(reason, _)] = server.provider.rejected
    assert any(word in reason for word in ("Signature", "appsecret", "invalid webhook url"))
    assert any(word in str(failed.value) for word in ("Signature", "40125", "93000"))


async def test_a_provider_error_code_in_a_200_answer_is_a_failure(provider):
    setup, server = provider
    server.provider.trouble = Trouble.ERROR_CODE
    with pytest.raises(SendFailed) as failed:
        await send(setup, server)
    assert failed.value.retry_after is None
    assert server.provider.accepted == []


async def test_a_throttled_answer_asks_to_back_off(provider):
    setup, server = provider
    server.provider.trouble = Trouble.THROTTLE
    with pytest.raises(SendFailed) as failed:
        await send(setup, server)
    assert failed.value.retry_after == THROTTLE_PAUSE_S


async def test_a_provider_that_is_down_or_silent_is_a_failure(provider):
    setup, server = provider
    server.provider.trouble = Trouble.DOWN
    with pytest.raises(SendFailed, match="503"):
        await send(setup, server)
    server.provider.trouble = Trouble.TIMEOUT
    server.provider.hang_s = 1.0
    with pytest.raises(SendFailed, match="Timeout"):
        await send(setup, server, timeout=0.3)
    assert server.provider.accepted == []


async def test_the_official_account_token_is_cached_and_fetched_anew_once_expired():
    fake = WeChatOfficialAccountProvider(followers=(OPENID,))
    with ProviderServer(fake) as server:
        channel = SETUPS["wechat_oa"].channel(server.base_url, None)
        async with httpx.AsyncClient(timeout=5) as http:
            await channel.send(http, OPENID, MESSAGE, 1)
            await channel.send(http, OPENID, MESSAGE, 2)
            assert fake.token_requests == 1
            fake.expire_tokens()
            with pytest.raises(SendFailed, match="42001"):
                await channel.send(http, OPENID, MESSAGE, 3)
            await channel.send(http, OPENID, MESSAGE, 3)
    assert fake.token_requests == 2
    assert sorted(fake.delivered()) == [f"{OPENID}/firewatch-notice-{n}" for n in (1, 2, 3)]


@pytest.mark.parametrize(
    "webhook",
    [
        "wecom.example/cgi-bin/webhook/send?key=k",  # no scheme
        "http://[::1/cgi-bin/webhook/send?key=k",
    ],
)  # no port
async def test_a_robot_address_that_is_no_url_is_no_failure_to_retry(webhook):
    """A retry cannot mend it: the notifier gives up on the channel for that notice at once."""
    async with httpx.AsyncClient(timeout=1) as http:
        with pytest.raises((httpx.UnsupportedProtocol, httpx.InvalidURL)):  # no SendFailed
            await WeComRobot().send(http, webhook, MESSAGE, 1)
