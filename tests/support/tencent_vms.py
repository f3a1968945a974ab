"""A local stand-in for Tencent Cloud voice message SendTtsVoice (VMS API 2020-09-02).

Signed TC3-HMAC-SHA256 for service ``vms``, checked as for SMS (:class:`TencentSmsProvider`).
The fields: ``CalledNumber`` +86…, the ``VoiceSdkAppid`` and ``TemplateId`` registered,
``TemplateParamSet`` strings, the whole message within 350 characters and without a link,
``PlayTimes`` 1 to 3.  Success is ``Response.SendStatus`` with a CallId; errors come back in
``Response.Error`` with HTTP 200.
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.support.providers import Received
from tests.support.tencent_sms import TencentSmsProvider

MESSAGE_LIMIT = 350


class TencentVmsProvider(TencentSmsProvider):
    service = "vms"

    def __init__(
        self,
        secret_id: str = "AKID-test",
        secret_key: str = "test-key",
        voice_sdk_app_id: str = "1400000002",
        template_id: str = "200001",
    ) -> None:
        super().__init__(secret_id, secret_key)
        self.voice_sdk_app_id, self.voice_template_id = voice_sdk_app_id, template_id

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        body = self.authentic(method, path, headers, raw, ("SendTtsVoice", "2020-09-02"))
        if not re.fullmatch(r"\+861\d{10}", str(body.get("CalledNumber", ""))):
            raise self._refuse("InvalidParameterValue.IncorrectPhoneNumber", "CalledNumber")
        if body.get("VoiceSdkAppid") != self.voice_sdk_app_id:
            raise self._refuse("InvalidParameterValue.SdkAppidNotExist", "VoiceSdkAppid")
        if body.get("TemplateId") != self.voice_template_id:
            raise self._refuse("InvalidParameterValue.TemplateIdNotExist", "TemplateId")
        if body.get("PlayTimes", 2) not in (1, 2, 3):
            raise self._refuse("InvalidParameterValue", "PlayTimes")
        params = body.get("TemplateParamSet")
        if (
            not isinstance(params, list)
            or not all(isinstance(p, str) and "http" not in p for p in params)
            or sum(map(len, params)) > MESSAGE_LIMIT
        ):
            raise self._refuse("InvalidParameterValue.ContentLengthLimit", "TemplateParamSet")
        return Received(str(body.get("SessionContext", "")), body, time.time()), {}

    def error_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, self._refuse("FailedOperation.InsufficientBalance", "余额不足").answer

    def throttle_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, self._refuse("RequestLimitExceeded", "请求的次数超过了频率限制").answer

    def ok_answer(self, received: Received) -> dict[str, Any]:
        return {
            "Response": {
                "SendStatus": {
                    "CallId": f"call-{received.key}",
                    "SessionContext": received.body.get("SessionContext", ""),
                },
                "RequestId": "fake",
            }
        }
