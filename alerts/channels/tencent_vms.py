"""Tencent Cloud voice message (腾讯云语音消息, VMS API 2020-09-02): SendTtsVoice.

Signed TC3-HMAC-SHA256 as SMS is (``alerts.channels.tencent_sms.signed_request``, service
``vms``).  ``SendTtsVoice`` with ``TemplateId`` (the approved voice template), ``CalledNumber``
(E.164, +86…), ``VoiceSdkAppid``, ``TemplateParamSet`` (``alerts.notices.voice_variables`` in
the template's order, no link; the whole message at most 350 characters), ``PlayTimes`` (1 to
3) and ``SessionContext`` (the notice number).  Success is a ``Response.SendStatus.CallId``;
``Response.Error`` is a failure, ``RequestLimitExceeded``/``LimitExceeded.*`` mean back off.

The result: API 3.0 has no query for a call's status; the provider pushes it to an HTTP
callback configured in its console (呼叫状态回调).  Until that callback is wired to Firewatch,
``outcome`` knows nothing, and the call watcher (``alerts.calls``) takes a call with no result
after its wait as not answered and calls the next person: calling one person too many is the
safe side of not knowing.
"""

from __future__ import annotations

import json
from datetime import datetime

import httpx

from alerts.channels.base import THROTTLE_PAUSE_S, Outcome, SendFailed, VoiceChannel, exchange
from alerts.channels.tencent_sms import is_throttled, signed_request
from alerts.notices import NoticeMessage, voice_variables

SERVICE = "vms"
API_VERSION = "2020-09-02"


class TencentVms(VoiceChannel):
    name = "tencent_vms"

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        voice_sdk_app_id: str,
        template_id: str,
        play_times: int,
        region: str,
        endpoint: str,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.voice_sdk_app_id = voice_sdk_app_id
        self.template_id = template_id
        self.play_times = play_times
        self.region = region
        self.endpoint = endpoint.rstrip("/")

    async def send(
        self, http: httpx.AsyncClient, target: str, message: NoticeMessage, notice_id: int
    ) -> str | None:
        payload = json.dumps(
            {
                "TemplateId": self.template_id,
                "CalledNumber": target if target.startswith("+") else f"+86{target}",
                "VoiceSdkAppid": self.voice_sdk_app_id,
                "TemplateParamSet": list(voice_variables(message).values()),
                "PlayTimes": self.play_times,
                "SessionContext": str(notice_id),
            },
            ensure_ascii=False,
        ).encode()
        request = signed_request(
            http,
            self.endpoint,
            (self.secret_id, self.secret_key),
            (SERVICE, "SendTtsVoice", API_VERSION, self.region),
            payload,
        )
        status, answer = await exchange(http, request)
        response = answer.get("Response") or {}
        error = response.get("Error") or {}
        call_id = (response.get("SendStatus") or {}).get("CallId")
        if status == 200 and not error and call_id:
            return str(call_id)
        code = str(error.get("Code", ""))
        raise SendFailed(
            f"HTTP {status}, Code {code}: {error.get('Message')}",
            THROTTLE_PAUSE_S if is_throttled(code) else None,
        )

    async def outcome(
        self, http: httpx.AsyncClient, call_id: str, sent_at: datetime
    ) -> Outcome | None:
        return None  # pushed by the provider's status callback only; see the module's text
