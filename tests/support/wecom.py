"""A local stand-in for the WeChat Work group-robot webhook, strict as its documentation.

The real endpoint (developer.work.weixin.qq.com, doc 91770) cannot be reached from tests.  This
server checks each request as the provider documents it: POST to /cgi-bin/webhook/send with
the robot key in the query, a JSON body whose msgtype is text or markdown, content within the
byte limits (text 2,048, markdown 4,096, UTF-8), and at most 20 messages a minute (more get
45009).  A request that breaks a rule gets the error code the provider uses and is recorded
as rejected, so a test sees what was wrong.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.providers import FakeProvider, ProviderServer, Received, Refused

LIMITS = {"text": 2048, "markdown": 4096}
PER_MINUTE = 20


class WeComRobot(FakeProvider):
    def __init__(self, key: str = "test-robot-key") -> None:
        super().__init__()
        self.key = key

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        url = urlsplit(path)
        if method != "POST":
            raise Refused(405, {"errcode": 43002, "errmsg": "require POST method"})
        if url.path != "/cgi-bin/webhook/send":
            raise Refused(404, {"errcode": 404, "errmsg": f"unknown path {url.path}"})
        if parse_qs(url.query).get("key") != [self.key]:
            raise Refused(200, {"errcode": 93000, "errmsg": "invalid webhook url"})
        if not headers.get("Content-Type", "").startswith("application/json"):
            raise Refused(200, {"errcode": 40035, "errmsg": "invalid content type"})
        try:
            body = json.loads(raw)
        except ValueError:
            raise Refused(200, {"errcode": 40035, "errmsg": "invalid json"}) from None
        msgtype = body.get("msgtype")
        if msgtype not in LIMITS or not isinstance(body.get(msgtype), dict):
            raise Refused(200, {"errcode": 40008, "errmsg": "invalid message type"})
        content = body[msgtype].get("content")
        if not isinstance(content, str) or not content:
            raise Refused(200, {"errcode": 44004, "errmsg": "empty content"})
        if len(content.encode()) > LIMITS[msgtype]:
            raise Refused(
                200, {"errcode": 40058, "errmsg": f"content exceed max length {LIMITS[msgtype]}"}
            )
        now = time.time()
        if sum(1 for r in self.accepted if now - r.at < 60) >= PER_MINUTE:
            raise Refused(200, {"errcode": 45009, "errmsg": "api freq out of limit"})
        number = re.search(r"通知编号：(\d+)", content)
        return Received(number.group(1) if number else "", body, now), {}

    def error_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {"errcode": 93000, "errmsg": "invalid webhook url (robot removed)"}

    def throttle_answer(self) -> tuple[int, dict[str, Any]]:
        return 200, {"errcode": 45009, "errmsg": "api freq out of limit"}

    def ok_answer(self, received: Received) -> dict[str, Any]:
        return {"errcode": 0, "errmsg": "ok"}


class WeComServer(ProviderServer):
    def __init__(self, robot: WeComRobot | None = None) -> None:
        super().__init__(robot or WeComRobot())
        self.robot: WeComRobot = self.provider  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"{self.base_url}/cgi-bin/webhook/send?key={self.robot.key}"
