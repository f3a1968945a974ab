"""Notice channels, one module per provider, behind :class:`~alerts.channels.base.Channel`.

Which channels exist is configuration: the WeChat Work robot always (its webhook is the
credential, given per institution), the others (SMS, template messages, voice calls) once
their credentials are set.
"""

from __future__ import annotations

from alerts.channels.aliyun_sms import AliyunSms
from alerts.channels.aliyun_vms import AliyunVms
from alerts.channels.base import Channel, Outcome, SendFailed, VoiceChannel
from alerts.channels.tencent_sms import TencentSms
from alerts.channels.tencent_vms import TencentVms
from alerts.channels.wechat_oa import WeChatOfficialAccount
from alerts.channels.wecom_robot import WeComRobot
from firewatch.settings import Settings

__all__ = ["Channel", "Outcome", "SendFailed", "VoiceChannel", "configured_channels"]


def configured_channels(settings: Settings) -> dict[str, Channel]:
    channels: list[Channel] = [WeComRobot()]
    if settings.aliyun_sms_access_key_id:
        channels.append(
            AliyunSms(
                settings.aliyun_sms_access_key_id,
                settings.aliyun_sms_access_key_secret,
                settings.aliyun_sms_sign_name,
                settings.aliyun_sms_template_code,
                settings.aliyun_sms_endpoint,
            )
        )
    if settings.tencent_sms_secret_id:
        channels.append(
            TencentSms(
                settings.tencent_sms_secret_id,
                settings.tencent_sms_secret_key,
                settings.tencent_sms_sdk_app_id,
                settings.tencent_sms_sign_name,
                settings.tencent_sms_template_id,
                settings.tencent_sms_template_params,
                settings.tencent_sms_region,
                settings.tencent_sms_endpoint,
            )
        )
    if settings.wechat_oa_app_id:
        channels.append(
            WeChatOfficialAccount(
                settings.wechat_oa_app_id,
                settings.wechat_oa_app_secret,
                settings.wechat_oa_template_id,
                settings.wechat_oa_template_keys,
                settings.wechat_oa_endpoint,
            )
        )
    if settings.aliyun_vms_access_key_id:
        channels.append(
            AliyunVms(
                settings.aliyun_vms_access_key_id,
                settings.aliyun_vms_access_key_secret,
                settings.aliyun_vms_tts_code,
                settings.aliyun_vms_show_number,
                settings.voice_play_times,
                settings.aliyun_vms_endpoint,
            )
        )
    if settings.tencent_vms_secret_id:
        channels.append(
            TencentVms(
                settings.tencent_vms_secret_id,
                settings.tencent_vms_secret_key,
                settings.tencent_vms_sdk_app_id,
                settings.tencent_vms_template_id,
                settings.voice_play_times,
                settings.tencent_vms_region,
                settings.tencent_vms_endpoint,
            )
        )
    return {c.name: c for c in channels}
