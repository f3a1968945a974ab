"""A local stand-in for the WeChat Official Account API: access token and template messages.

Checks, as the provider documents them: ``GET /cgi-bin/token`` with grant_type
client_credential and the right appid and secret (else 40013 / 40125) gives a token valid
``expires_in`` seconds; ``POST /cgi-bin/message/template/send?access_token=…`` needs a live
token (40001 invalid, 42001 expired), a follower's openid (43004), the template id and exactly
the template's keywords, each value in its type's form (thing: at most 20 characters; time:
"2026年11月22日 20:00").  A repeated ``client_msg_id`` for the same openid is answered OK and
not delivered again, as the API promises.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.providers import FakeProvider, Received, Refused

KEYWORD_FORMS = {"thing": r".{1,20}", "time": r"\d{4}年\d{2}月\d{2}日 \d{2}:\d{2}"}


class WeChatOfficialAccountProvider(FakeProvider):
    def __init__(
        self,
        app_id: str = "wx-test-app",
        secret: str = "test-app-secret",
        template_id: str = "tpl-fire-alarm",
        followers: tuple[str, ...] = (),
        keywords: tuple[str, ...] = ("thing1", "thing2", "thing3", "thing4", "time5"),
    ) -> None:
        super().__init__()
        self.app_id, self.secret, self.template_id = app_id, secret, template_id
        self.followers, self.keywords = set(followers), keywords
        self.tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self.token_requests = 0
        self._serial = itertools.count(1)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/cgi-bin/token" and method == "GET":
            return None, self._token(query)
        if url.path == "/cgi-bin/message/template/send" and method == "POST":
            return self._send(query, raw)
        raise Refused(404, {"errcode": 404, "errmsg": f"{method} {url.path}"})

    def _token(self, query: dict[str, str]) -> dict[str, Any]:
        self.token_requests += 1
        if query.get("grant_type") != "client_credential":
            raise Refused(200, {"errcode": 40002, "errmsg": "invalid grant_type"})
        if query.get("appid") != self.app_id:
            raise Refused(200, {"errcode": 40013, "errmsg": "invalid appid"})
        if query.get("secret") != self.secret:
            raise Refused(200, {"errcode": 40125, "errmsg": "invalid appsecret"})
        token = f"token-{next(self._serial)}"
        self.tokens[token] = time.time() + 7200
        return {"access_token": token, "expires_in": 7200}

    def _send(self, query: dict[str, str], raw: bytes) -> tuple[Received | None, dict[str, Any]]:
        expiry = self.tokens.get(query.get("access_token", ""))
        if expiry is None:
            raise Refused(200, {"errcode": 40001, "errmsg": "invalid credential"})
        if expiry < time.time():
            raise Refused(200, {"errcode": 42001, "errmsg": "access_token expired"})
        body = json.loads(raw)
        if body.get("touser") not in self.followers:
            raise Refused(200, {"errcode": 43004, "errmsg": "require subscribe"})
        if body.get("template_id") != self.template_id:
            raise Refused(200, {"errcode": 40037, "errmsg": "invalid template_id"})
        data = body.get("data")
        if not isinstance(data, dict) or tuple(sorted(data)) != tuple(sorted(self.keywords)):
            raise Refused(200, {"errcode": 47003, "errmsg": "argument invalid! data keywords"})
        for key, item in data.items():
            form = KEYWORD_FORMS[re.sub(r"\d+$", "", key)]
            if not isinstance(item, dict) or not re.fullmatch(form, str(item.get("value"))):
                raise Refused(200, {"errcode": 47003, "errmsg": f"argument invalid! {key}"})
        key = f"{body['touser']}/{body.get('client_msg_id', next(self._serial))}"
        if any(r.key == key for r in self.accepted):
            return None, {"errcode": 0, "errmsg": "ok", "msgid": 0}  # a repeat: not sent again
        return Received(key, body, time.time()), {}

    def error_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {"errcode": 43101, "errmsg": "user refuse to accept the msg"}

    def throttle_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {"errcode": 45009, "errmsg": "reach max api daily quota limit"}

    def ok_answer(self, received: Received) -> dict[str, Any]:
        return {"errcode": 0, "errmsg": "ok", "msgid": next(self._serial)}
