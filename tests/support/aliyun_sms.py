"""A local stand-in for Alibaba Cloud SMS SendSms (API 2017-05-25), signature V3.

Checks, as the provider documents them: POST /, the x-acs-* headers (action SendSms, version
2017-05-25, a UTC date within 15 minutes, a nonce never seen before, the body's SHA-256),
``Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`` recomputed here
from the canonical request with the shared secret, then the SendSms parameters: a mainland
mobile number, the registered sign name and template code, TemplateParam a JSON object of
strings each within 35 characters.  Written from the documentation, apart from the client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from tests.support.providers import FakeProvider, Received, Refused

VARIABLE_LIMIT = 35


def _encode(text: str) -> str:
    return quote(text, safe="~")


class AliyunSmsProvider(FakeProvider):
    def __init__(
        self,
        access_key_id: str = "LTAI-test-id",
        secret: str = "test-secret",
        sign_name: str = "青阳民政",
        template_code: str = "SMS_000001",
    ) -> None:
        super().__init__()
        self.access_key_id, self.secret = access_key_id, secret
        self.sign_name, self.template_code = sign_name, template_code
        self.nonces: set[str] = set()

    def _refuse(self, status: int, code: str, message: str) -> Refused:
        return Refused(status, {"Code": code, "Message": message, "RequestId": "fake"})

    def _check_signature(self, path: str, headers: Any, raw: bytes) -> None:
        auth = headers.get("Authorization", "")
        match = re.fullmatch(
            r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),"
            r"Signature=([0-9a-f]{64})",
            auth,
        )
        if not match:
            raise self._refuse(400, "IncompleteSignature", f"bad Authorization {auth!r}")
        credential, signed, signature = match.groups()
        if credential != self.access_key_id:
            raise self._refuse(404, "InvalidAccessKeyId.NotFound", "unknown AccessKeyId")
        names = signed.split(";")
        must = {
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        }
        if names != sorted(names) or not must <= set(names):
            raise self._refuse(400, "IncompleteSignature", f"SignedHeaders {signed}")
        if headers.get("x-acs-content-sha256") != hashlib.sha256(raw).hexdigest():
            raise self._refuse(400, "InvalidParameter", "x-acs-content-sha256 does not match")
        url = urlsplit(path)
        query = "&".join(
            f"{_encode(k)}={_encode(v)}"
            for k, v in sorted(parse_qsl(url.query, keep_blank_values=True))
        )
        header_block = "".join(f"{n}:{(headers.get(n) or '').strip()}\n" for n in names)
        canonical = (
            f"POST\n{url.path}\n{query}\n{header_block}\n{signed}\n"
            f"{hashlib.sha256(raw).hexdigest()}"
        )
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise self._refuse(
                400, "SignatureDoesNotMatch", "Specified signature does not match our calculation."
            )

    def authentic(
        self, method: str, path: str, headers: Any, raw: bytes, actions: tuple[str, ...]
    ) -> dict[str, str]:
        """The parameters of a request to one of ``actions`` whose signature, date and nonce
        are as documented (version 2017-05-25 for SMS and voice alike); Refused otherwise."""
        if method != "POST" or urlsplit(path).path != "/":
            raise self._refuse(404, "InvalidApi.NotFound", f"{method} {path}")
        if (
            headers.get("x-acs-action") not in actions
            or headers.get("x-acs-version") != "2017-05-25"
        ):
            raise self._refuse(400, "InvalidVersion", "action/version")
        try:
            sent_at = datetime.strptime(headers.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise self._refuse(400, "InvalidTimeStamp.Format", "x-acs-date") from None
        if abs(datetime.now(UTC) - sent_at.replace(tzinfo=UTC)) > timedelta(minutes=15):
            raise self._refuse(400, "InvalidTimeStamp.Expired", "x-acs-date too far off")
        self._check_signature(path, headers, raw)
        nonce = headers.get("x-acs-signature-nonce", "")
        if not nonce or nonce in self.nonces:
            raise self._refuse(400, "SignatureNonceUsed", "nonce used before")
        self.nonces.add(nonce)
        return dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        params = self.authentic(method, path, headers, raw, ("SendSms",))
        if not re.fullmatch(r"1\d{10}", params.get("PhoneNumbers", "")):
            raise self._refuse(200, "isv.MOBILE_NUMBER_ILLEGAL", "PhoneNumbers")
        if params.get("SignName") != self.sign_name:
            raise self._refuse(200, "isv.SMS_SIGNATURE_ILLEGAL", "SignName")
        if params.get("TemplateCode") != self.template_code:
            raise self._refuse(200, "isv.SMS_TEMPLATE_ILLEGAL", "TemplateCode")
        try:
            variables = json.loads(params.get("TemplateParam", ""))
        except ValueError:
            raise self._refuse(200, "isv.INVALID_JSON_PARAM", "TemplateParam") from None
        if not isinstance(variables, dict) or not all(
            isinstance(v, str) and 0 < len(v) <= VARIABLE_LIMIT for v in variables.values()
        ):
            raise self._refuse(200, "isv.PARAM_LENGTH_LIMIT", "TemplateParam variables")
        return Received(
            params.get("OutId", ""),
            {**params, "TemplateParam": variables},
            datetime.now().timestamp(),
        ), {}

    def error_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {"Code": "isv.OUT_OF_SERVICE", "Message": "业务停机", "RequestId": "fake"}

    def throttle_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {
            "Code": "isv.BUSINESS_LIMIT_CONTROL",
            "Message": "触发分钟级流控",
            "RequestId": "fake",
        }

    def ok_answer(self, received: Received) -> dict[str, Any]:
        return {"Code": "OK", "Message": "OK", "BizId": f"biz-{received.key}", "RequestId": "fake"}
