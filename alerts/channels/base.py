"""What every notice channel is: one ``send`` that returns only on the provider's success answer.

A channel raises :class:`SendFailed` for anything else that may pass (network error, time-out,
HTTP error, a provider error code in a 200 answer); ``retry_after`` says the provider asked us
to slow down, which the notifier honours instead of retrying hot.  What cannot pass on a retry
(a target that is no URL httpx can send to, a template naming a variable the message lacks) is
raised as it is, and the notifier gives up on the channel for that notice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import httpx

from alerts.notices import NoticeMessage

#: how long to hold off a target whose provider answered "too many requests"
THROTTLE_PAUSE_S = 60.0


class SendFailed(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Channel(ABC):
    #: the ``notices.channel`` value
    name: ClassVar[str]
    #: sends per target (robot, phone number, openid) in any 60 seconds
    per_minute: ClassVar[int]
    #: whether what it sends carries the alarm's one-tap confirmation link (a text does; a
    #: voice call cannot be tapped, and reading a link out is no use)
    carries_link: ClassVar[bool] = False

    @abstractmethod
    async def send(
        self, http: httpx.AsyncClient, target: str, message: NoticeMessage, notice_id: int
    ) -> str | None:
        """Deliver ``message`` to ``target``; return only on the provider's success answer,
        with what the provider calls the message (a call's CallId), if it says."""


class Outcome(StrEnum):
    ANSWERED = "answered"
    UNANSWERED = "unanswered"  # not picked up, busy, switched off, failed
    NO_RESULT = "no-result"  # the provider said nothing in time: taken as not answered


class VoiceChannel(Channel):
    """A text-to-speech phone call.  A call the provider accepted may still ring out unheard:
    ``outcome`` asks the provider what became of it."""

    #: both providers allow one call a minute to one number (Alibaba Cloud: also 5 an hour)
    per_minute = 1

    @abstractmethod
    async def outcome(
        self, http: httpx.AsyncClient, call_id: str, sent_at: datetime
    ) -> Outcome | None:
        """The call's result, or None while the provider has none yet."""


async def exchange(http: httpx.AsyncClient, request: httpx.Request) -> tuple[int, dict[str, Any]]:
    """Send ``request``; the HTTP status and the JSON answer, or SendFailed if there is none."""
    try:
        reply = await http.send(request)
    except httpx.UnsupportedProtocol:
        raise  # the target is no http(s) URL: the notice's own, no retry mends it
    except httpx.HTTPError as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}") from None
    try:
        answer = reply.json()
    except ValueError:
        raise SendFailed(
            f"HTTP {reply.status_code}, answer is not JSON: {reply.text[:200]}"
        ) from None
    if not isinstance(answer, dict):
        raise SendFailed(f"HTTP {reply.status_code}, answer is not a JSON object")
    return reply.status_code, answer
