"""WeChat Official Account (微信公众号) template message to a person's openid.

Why no SDK: ``wechatpy`` (the usual one) was last released in 2021; the two calls needed are
small.  ``GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`` gives an access
token valid ``expires_in`` seconds (7,200), cached here and fetched again shortly before it
expires or as soon as the API calls it invalid (40001, 40014, 42001).  ``POST
/cgi-bin/message/template/send?access_token=…`` with ``touser``, ``template_id`` and ``data``
(``{key: {"value": …}}``) sends; ``client_msg_id`` makes a repeat of the same notice a no-op
at the provider.  Success is ``errcode`` 0.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import httpx

from alerts.channels.base import THROTTLE_PAUSE_S, Channel, SendFailed, exchange
from alerts.notices import NoticeMessage, template_variables

#: template keyword types and how many characters each takes (thing: 20, character_string: 32)
KEY_LIMITS = {"thing": 20, "character_string": 32, "phrase": 5}
TOKEN_INVALID = {40001, 40014, 42001}
THROTTLED = 45009
#: fetch a new token this long before the old one expires
TOKEN_MARGIN_S = 300


def keyword_value(key: str, value: str) -> str:
    """A value in the form its template keyword type accepts."""
    kind = re.sub(r"\d+$", "", key)
    if kind == "time":
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").strftime("%Y年%m月%d日 %H:%M")
    limit = KEY_LIMITS.get(kind)
    return value if limit is None or len(value) <= limit else value[: limit - 1] + "…"


class WeChatOfficialAccount(Channel):
    name = "wechat_oa"
    per_minute = 20
    carries_link = True

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        template_id: str,
        template_keys: dict[str, str],
        endpoint: str,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.template_id = template_id
        self.template_keys = template_keys
        self.endpoint = endpoint.rstrip("/")
        self._token: str | None = None
        self._token_expires = 0.0

    async def access_token(self, http: httpx.AsyncClient) -> str:
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        request = http.build_request(
            "GET",
            f"{self.endpoint}/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": self.app_id,
                "secret": self.app_secret,
            },
        )
        status, answer = await exchange(http, request)
        if status != 200 or "access_token" not in answer:
            raise SendFailed(
                f"access token: HTTP {status}, errcode {answer.get('errcode')}: "
                f"{answer.get('errmsg')}"
            )
        self._token = str(answer["access_token"])
        self._token_expires = time.monotonic() + float(answer["expires_in"]) - TOKEN_MARGIN_S
        return self._token

    def body(self, openid: str, message: NoticeMessage, notice_id: int) -> dict:
        variables = template_variables(message)
        return {
            "touser": openid,
            "template_id": self.template_id,
            "data": {
                key: {"value": keyword_value(key, variables[name])}
                for name, key in self.template_keys.items()
            },
            "client_msg_id": f"firewatch-notice-{notice_id}",
            # the template message opens the one-tap confirmation page when tapped
            **({"url": message.link} if message.link else {}),
        }

    async def send(
        self, http: httpx.AsyncClient, target: str, message: NoticeMessage, notice_id: int
    ) -> str | None:
        token = await self.access_token(http)
        request = http.build_request(
            "POST",
            f"{self.endpoint}/cgi-bin/message/template/send",
            params={"access_token": token},
            json=self.body(target, message, notice_id),
        )
        status, answer = await exchange(http, request)
        errcode = answer.get("errcode")
        if status == 200 and errcode == 0:
            return str(answer.get("msgid") or "") or None
        if errcode in TOKEN_INVALID:
            self._token = None  # the next attempt fetches a fresh one
        raise SendFailed(
            f"HTTP {status}, errcode {errcode}: {answer.get('errmsg')}",
            THROTTLE_PAUSE_S if errcode == THROTTLED else None,
        )
