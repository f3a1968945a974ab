"""Alibaba Cloud voice notification (阿里云语音服务, Dyvms 2017-05-25): SingleCallByTts, and
the call's result by QueryCallDetailByCallId.

The same RPC-style API and signature V3 as SMS (``alerts.channels.aliyun_sms.signed_request``).
``SingleCallByTts`` with ``CalledNumber`` (a mainland mobile number, no +86), ``TtsCode`` (the
approved TTS template), ``TtsParam`` (its variables, a JSON object: ``alerts.notices.
voice_variables``, no link), ``PlayTimes``, optional ``CalledShowNumber`` (a number bought for
the account; empty for the public mode) and ``OutId`` (the notice number).  Success is
``Code == "OK"`` with a ``CallId``.  The provider allows one call a minute, five an hour and 20
a day to one number; ``isv.BUSINESS_LIMIT_CONTROL`` means back off.

The result: ``QueryCallDetailByCallId`` with ``CallId``, ``QueryDate`` (milliseconds; the
provider looks up that day's records) and ``ProdId`` 11000000300006 (voice notification).
``Data`` is a JSON string, empty until the call has ended; its ``state`` is the call's status
code, of which 200000 (用户听到语音) is the one that means a person answered.  Chosen over the
voice receipt (VoiceReport, pushed through a message queue or HTTP to us) because a query
needs nothing reachable from the internet and is tested against the local fake like the send.
"""

from __future__ import annotations

import json
from datetime import datetime

import httpx

from alerts.channels.aliyun_sms import is_throttled, signed_request
from alerts.channels.base import THROTTLE_PAUSE_S, Outcome, SendFailed, VoiceChannel, exchange
from alerts.notices import NoticeMessage, voice_variables

#: the product id of voice notifications in call-record queries
VOICE_NOTIFICATION = "11000000300006"
ANSWERED_STATE = "200000"


class AliyunVms(VoiceChannel):
    name = "aliyun_vms"

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        tts_code: str,
        show_number: str,
        play_times: int,
        endpoint: str,
    ) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.tts_code = tts_code
        self.show_number = show_number
        self.play_times = play_times
        self.endpoint = endpoint.rstrip("/")

    def _request(
        self, http: httpx.AsyncClient, action: str, params: dict[str, str]
    ) -> httpx.Request:
        return signed_request(
            http, self.endpoint, self.access_key_id, self.access_key_secret, action, params
        )

    async def send(
        self, http: httpx.AsyncClient, target: str, message: NoticeMessage, notice_id: int
    ) -> str | None:
        params = {
            "CalledNumber": target.removeprefix("+86"),
            "TtsCode": self.tts_code,
            "TtsParam": json.dumps(voice_variables(message), ensure_ascii=False),
            "PlayTimes": str(self.play_times),
            "OutId": str(notice_id),
        }
        if self.show_number:
            params["CalledShowNumber"] = self.show_number
        status, answer = await exchange(http, self._request(http, "SingleCallByTts", params))
        code = str(answer.get("Code", ""))
        if status == 200 and code == "OK" and answer.get("CallId"):
            return str(answer["CallId"])
        raise SendFailed(
            f"HTTP {status}, Code {code}: {answer.get('Message')}",
            THROTTLE_PAUSE_S if is_throttled(code) else None,
        )

    async def outcome(
        self, http: httpx.AsyncClient, call_id: str, sent_at: datetime
    ) -> Outcome | None:
        params = {
            "CallId": call_id,
            "QueryDate": str(int(sent_at.timestamp() * 1000)),
            "ProdId": VOICE_NOTIFICATION,
        }
        status, answer = await exchange(
            http, self._request(http, "QueryCallDetailByCallId", params)
        )
        code = str(answer.get("Code", ""))
        if status != 200 or code != "OK":
            raise SendFailed(f"HTTP {status}, Code {code}: {answer.get('Message')}")
        try:
            detail = json.loads(answer.get("Data") or "{}")
        except ValueError:
            raise SendFailed(f"call detail is not JSON: {str(answer.get('Data'))[:200]}") from None
        state = str(detail.get("state") or "") if isinstance(detail, dict) else ""
        if not state:
            return None  # still ringing, or not yet recorded
        return Outcome.ANSWERED if state == ANSWERED_STATE else Outcome.UNANSWERED
