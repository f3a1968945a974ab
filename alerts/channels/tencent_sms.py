"""Tencent Cloud SMS (腾讯云短信): SendSms (API 2021-01-11), signed with TC3-HMAC-SHA256.

Why not the official SDK: ``tencentcloud-sdk-python-sms`` is maintained (3.1.153, 2026-08) but
synchronous (``requests`` under the hood), so every send would need a worker thread beside the
async notifier.  TC3-HMAC-SHA256 is documented step by step (canonical request, string to
sign, a key derived date -> service -> "tc3_request"), and the tests check it against a server
that recomputes it.

``SessionContext`` carries the notice number (the provider echoes it back).  Success is
``SendStatusSet[0].Code == "Ok"``; ``RequestLimitExceeded`` and ``LimitExceeded.*`` (per-number
limits: one message in 30 s by default) mean back off.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from alerts.channels.base import THROTTLE_PAUSE_S, Channel, SendFailed, exchange
from alerts.notices import NoticeMessage, template_variables

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "sms"
API_VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature(
    secret_key: str, timestamp: int, host: str, payload: bytes, action: str, service: str = SERVICE
) -> str:
    """The hex signature of a POST / with a JSON body, signing content-type, host, x-tc-action."""
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-tc-action:{action.lower()}\n",
            "content-type;host;x-tc-action",
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def signed_request(
    http: httpx.AsyncClient,
    endpoint: str,
    credential: tuple[str, str],
    api: tuple[str, str, str, str],
    payload: bytes,
) -> httpx.Request:
    """``POST {endpoint}/`` of a Tencent Cloud API 3.0 call with a JSON body, signed
    TC3-HMAC-SHA256; ``credential`` is (SecretId, SecretKey), ``api`` (service, action,
    version, region)."""
    secret_id, secret_key = credential
    service, action, version, region = api
    host = urlsplit(endpoint).netloc
    timestamp = int(datetime.now(UTC).timestamp())
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    headers = {
        "Content-Type": CONTENT_TYPE,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Region": region,
        "Authorization": (
            f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
            "SignedHeaders=content-type;host;x-tc-action, "
            f"Signature={signature(secret_key, timestamp, host, payload, action, service)}"
        ),
    }
    return http.build_request("POST", f"{endpoint}/", content=payload, headers=headers)


def is_throttled(code: str) -> bool:
    return code == "RequestLimitExceeded" or code.startswith("LimitExceeded")


class TencentSms(Channel):
    name = "tencent_sms"
    #: one message per mobile number in 30 s is the default limit; keep well inside it
    per_minute = 1
    carries_link = True

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        sign_name: str,
        template_id: str,
        template_params: list[str],
        region: str,
        endpoint: str,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.sdk_app_id = sdk_app_id
        self.sign_name = sign_name
        self.template_id = template_id
        self.template_params = template_params
        self.region = region
        self.endpoint = endpoint.rstrip("/")

    def request(
        self, http: httpx.AsyncClient, phone: str, message: NoticeMessage, notice_id: int
    ) -> httpx.Request:
        variables = template_variables(message)
        payload = json.dumps(
            {
                "PhoneNumberSet": [phone if phone.startswith("+") else f"+86{phone}"],
                "SmsSdkAppId": self.sdk_app_id,
                "SignName": self.sign_name,
                "TemplateId": self.template_id,
                "TemplateParamSet": [variables[name] for name in self.template_params],
                "SessionContext": str(notice_id),
            },
            ensure_ascii=False,
        ).encode()
        return signed_request(
            http,
            self.endpoint,
            (self.secret_id, self.secret_key),
            (SERVICE, "SendSms", API_VERSION, self.region),
            payload,
        )

    async def send(
        self, http: httpx.AsyncClient, target: str, message: NoticeMessage, notice_id: int
    ) -> str | None:
        status, answer = await exchange(http, self.request(http, target, message, notice_id))
        response = answer.get("Response") or {}
        error = response.get("Error")
        statuses = response.get("SendStatusSet") or [{}]
        code = str(error["Code"] if error else statuses[0].get("Code", ""))
        if status == 200 and code == "Ok":
            return str(statuses[0].get("SerialNo") or "") or None
        detail = (error or statuses[0]).get("Message")
        raise SendFailed(
            f"HTTP {status}, Code {code}: {detail}",
            THROTTLE_PAUSE_S if is_throttled(code) else None,
        )
