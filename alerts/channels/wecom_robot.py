"""WeChat Work (企业微信) group robot: markdown to a webhook (developer.work.weixin.qq.com, 91770).

The webhook URL holds the robot's key and is the whole credential.  Success is HTTP 200 with
``errcode`` 0; 45009 means the robot's 20 messages a minute are used up.
"""

from __future__ import annotations

import httpx

from alerts.channels.base import THROTTLE_PAUSE_S, Channel, SendFailed, exchange
from alerts.notices import NoticeMessage, wecom_markdown

THROTTLED = 45009


class WeComRobot(Channel):
    name = "wecom_robot"
    per_minute = 20
    carries_link = True

    async def send(
        self, http: httpx.AsyncClient, target: str, message: NoticeMessage, notice_id: int
    ) -> str | None:
        request = http.build_request("POST", target, json=wecom_markdown(message, notice_id))
        status, answer = await exchange(http, request)
        if status == 200 and answer.get("errcode") == 0:
            return None
        pause = THROTTLE_PAUSE_S if answer.get("errcode") == THROTTLED else None
        raise SendFailed(
            f"HTTP {status}, errcode {answer.get('errcode')}: {answer.get('errmsg')}", pause
        )
