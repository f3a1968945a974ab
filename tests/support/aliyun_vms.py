"""A local stand-in for Alibaba Cloud voice notification (Dyvms 2017-05-25): SingleCallByTts and
QueryCallDetailByCallId, signature V3.

The signature, date and nonce are checked as for SMS (:class:`AliyunSmsProvider`, the same API
style).  SingleCallByTts: a mainland number in ``CalledNumber``, the approved ``TtsCode``,
``TtsParam`` a JSON object of strings (each within what the voice template allows), no link,
``PlayTimes`` 1 to 3.  Each call gets a CallId; ``answering`` says which numbers pick up.
QueryCallDetailByCallId (``ProdId`` of voice notifications, ``QueryDate`` in milliseconds)
answers ``Data``, a JSON string whose ``state`` is 200000 (用户听到语音) for an answered call and
another status code for one that rang out.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

from tests.support.aliyun_sms import AliyunSmsProvider
from tests.support.providers import Received

VOICE_VARIABLE_LIMIT = 20
VOICE_NOTIFICATION = "11000000300006"
NOT_ANSWERED = "200005"


class AliyunVmsProvider(AliyunSmsProvider):
    def __init__(
        self,
        access_key_id: str = "LTAI-test-id",
        secret: str = "test-secret",
        tts_code: str = "TTS_000001",
        answering: Iterable[str] = (),
    ) -> None:
        super().__init__(access_key_id, secret)
        self.tts_code = tts_code
        self.answering = set(answering)
        self.calls: dict[str, str] = {}  # CallId -> the number called

    def called(self) -> list[str]:
        """The numbers called, in order."""
        with self.lock:
            return [r.body["CalledNumber"] for r in self.accepted]

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        actions = ("SingleCallByTts", "QueryCallDetailByCallId")
        params = self.authentic(method, path, headers, raw, actions)
        if headers.get("x-acs-action") == "QueryCallDetailByCallId":
            return None, self._detail(params)
        if not re.fullmatch(r"1\d{10}", params.get("CalledNumber", "")):
            raise self._refuse(200, "isv.MOBILE_NUMBER_ILLEGAL", "CalledNumber")
        if params.get("TtsCode") != self.tts_code:
            raise self._refuse(200, "isv.TTS_TEMPLATE_ILLEGAL", "TtsCode")
        if params.get("PlayTimes", "1") not in ("1", "2", "3"):
            raise self._refuse(200, "isv.INVALID_PARAMETERS", "PlayTimes")
        try:
            variables = json.loads(params.get("TtsParam", ""))
        except ValueError:
            raise self._refuse(200, "isv.INVALID_JSON_PARAM", "TtsParam") from None
        if not isinstance(variables, dict) or not all(
            isinstance(v, str) and 0 < len(v) <= VOICE_VARIABLE_LIMIT and "http" not in v
            for v in variables.values()
        ):
            raise self._refuse(200, "isv.PARAM_LENGTH_LIMIT", "TtsParam variables")
        return Received(params.get("OutId", ""), {**params, "TtsParam": variables}, time.time()), {}

    def _detail(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("ProdId") != VOICE_NOTIFICATION or not params.get("QueryDate", "").isdigit():
            raise self._refuse(200, "isv.INVALID_PARAMETERS", "ProdId / QueryDate")
        number = self.calls.get(params.get("CallId", ""))
        if number is None:
            return {"Code": "OK", "Message": "OK", "Data": "", "RequestId": "fake"}
        answered = number in self.answering
        detail = {
            "callee": number,
            "state": "200000" if answered else NOT_ANSWERED,
            "stateDesc": "用户听到语音" if answered else "用户未接听",
            "duration": 15 if answered else 0,
        }
        return {"Code": "OK", "Message": "OK", "Data": json.dumps(detail), "RequestId": "fake"}

    def ok_answer(self, received: Received) -> dict[str, Any]:
        call_id = f"{len(self.calls) + 1}^{received.key}"
        self.calls[call_id] = received.body["CalledNumber"]
        return {"Code": "OK", "Message": "OK", "CallId": call_id, "RequestId": "fake"}
