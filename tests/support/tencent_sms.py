"""A local stand-in for Tencent Cloud SMS SendSms (API 2021-01-11), TC3-HMAC-SHA256.

Checks, as the provider documents them: POST / with a JSON body, the X-TC-* headers (action
SendSms, version 2021-01-11, a region, a timestamp within 5 minutes), ``Authorization:
TC3-HMAC-SHA256 Credential=<SecretId>/<date>/sms/tc3_request, SignedHeaders=…, Signature=…``
recomputed here (canonical request, string to sign, key derived date -> service ->
tc3_request), then the SendSms fields: +86 numbers, the app id, sign name and template id
registered, as many template parameters as the template has.  Errors come back the way
the API answers them: HTTP 200 with ``Response.Error``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from tests.support.providers import FakeProvider, Received, Refused


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class TencentSmsProvider(FakeProvider):
    service = "sms"

    def __init__(
        self,
        secret_id: str = "AKID-test",
        secret_key: str = "test-key",
        sdk_app_id: str = "1400000001",
        sign_name: str = "青阳民政",
        template_id: str = "100001",
        template_params: int = 6,
    ) -> None:
        super().__init__()
        self.secret_id, self.secret_key = secret_id, secret_key
        self.sdk_app_id, self.sign_name = sdk_app_id, sign_name
        self.template_id, self.template_params = template_id, template_params

    @staticmethod
    def _refuse(code: str, message: str) -> Refused:
        return Refused(
            200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "fake"}}
        )

    def _check_signature(self, headers: Any, raw: bytes) -> None:
        auth = headers.get("Authorization", "")
        match = re.fullmatch(
            r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/"
            + self.service
            + r"/tc3_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            auth,
        )
        if not match:
            raise self._refuse("AuthFailure.SignatureFailure", f"bad Authorization {auth!r}")
        secret_id, date, signed, signature = match.groups()
        if secret_id != self.secret_id:
            raise self._refuse("AuthFailure.SecretIdNotFound", "unknown SecretId")
        timestamp = headers.get("X-TC-Timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            raise self._refuse("AuthFailure.SignatureExpire", "timestamp too far off")
        if datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d") != date:
            raise self._refuse("AuthFailure.SignatureFailure", "credential date")
        names = signed.split(";")
        if not {"content-type", "host"} <= set(names):
            raise self._refuse("AuthFailure.SignatureFailure", "content-type and host unsigned")
        header_block = "".join(f"{n}:{(headers.get(n) or '').strip().lower()}\n" for n in names)
        canonical = f"POST\n/\n\n{header_block}\n{signed}\n{hashlib.sha256(raw).hexdigest()}"
        to_sign = (
            f"TC3-HMAC-SHA256\n{timestamp}\n{date}/{self.service}/tc3_request\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        key = _hmac_sha256(
            _hmac_sha256(_hmac_sha256(f"TC3{self.secret_key}".encode(), date), self.service),
            "tc3_request",
        )
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise self._refuse("AuthFailure.SignatureFailure", "signature does not match")

    def authentic(
        self, method: str, path: str, headers: Any, raw: bytes, action: tuple[str, str]
    ) -> dict[str, Any]:
        """The JSON body of a request to ``action`` (name, version) signed as documented;
        Refused otherwise."""
        if method != "POST" or path != "/":
            raise self._refuse("InvalidAction", f"{method} {path}")
        if headers.get("Content-Type") != "application/json; charset=utf-8":
            raise self._refuse("InvalidParameter", "Content-Type")
        if (headers.get("X-TC-Action"), headers.get("X-TC-Version")) != action:
            raise self._refuse("InvalidAction", "X-TC-Action / X-TC-Version")
        if not headers.get("X-TC-Region"):
            raise self._refuse("MissingParameter", "X-TC-Region")
        self._check_signature(headers, raw)
        return json.loads(raw)

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        body = self.authentic(method, path, headers, raw, ("SendSms", "2021-01-11"))
        numbers = body.get("PhoneNumberSet")
        if not numbers or not all(re.fullmatch(r"\+861\d{10}", n) for n in numbers):
            raise self._refuse("InvalidParameterValue.IncorrectPhoneNumber", str(numbers))
        if body.get("SmsSdkAppId") != self.sdk_app_id:
            raise self._refuse("FailedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId")
        if body.get("SignName") != self.sign_name:
            raise self._refuse("FailedOperation.SignatureIncorrectOrUnapproved", "SignName")
        if body.get("TemplateId") != self.template_id:
            raise self._refuse("FailedOperation.TemplateIncorrectOrUnapproved", "TemplateId")
        params = body.get("TemplateParamSet")
        if not isinstance(params, list) or len(params) != self.template_params:
            raise self._refuse(
                "InvalidParameterValue.TemplateParameterFormatError",
                f"{self.template_params} parameters expected",
            )
        return Received(body.get("SessionContext", ""), body, time.time()), {}

    @staticmethod
    def _status(code: str, message: str) -> tuple[int, dict[str, Any]]:
        """A request taken but not sent: the reason is per number, in SendStatusSet."""
        return 200, {
            "Response": {"SendStatusSet": [{"Code": code, "Message": message}], "RequestId": "fake"}
        }

    def error_answer(self) -> tuple[int, dict[str, Any]]:
        return self._status("FailedOperation.InsufficientBalanceInSmsPackage", "套餐包余量不足")

    def throttle_answer(self) -> tuple[int, dict[str, Any]]:
        return self._status("LimitExceeded.PhoneNumberThirtySecondLimit", "30秒内同一号码限发1条")

    def ok_answer(self, received: Received) -> dict[str, Any]:
        body = received.body
        return {
            "Response": {
                "SendStatusSet": [
                    {
                        "SerialNo": f"serial-{received.key}",
                        "PhoneNumber": n,
                        "Fee": 1,
                        "SessionContext": body.get("SessionContext", ""),
                        "Code": "Ok",
                        "Message": "send success",
                        "IsoCode": "CN",
                    }
                    for n in body["PhoneNumberSet"]
                ],
                "RequestId": "fake",
            }
        }
